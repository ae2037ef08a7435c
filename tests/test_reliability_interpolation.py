"""No value a user supplies is ever resolved as an interpolation, however it is spelled: on the command
line, in a study file (its own values and the overrides it hands its runs) and through the viewer's page
and its HTTP API. Every spelling either is refused, naming the key and the decoded text, or is taken as the
literal text it decodes to; the environment variable's value appears nowhere."""

import json
import socket
import urllib.request

import pytest
import yaml

from guidedmae.cli import main
from guidedmae.config import ConfigError, PretrainConfig, config_to_dict, load_config
from guidedmae.study.plan import load_study
from tests.test_pretrain import tiny_config

SECRET = "s3cr3t-value"
VARIABLE = "GUIDEDMAE_TEST_TOKEN"
# What a user may type after `key=` (YAML, of which JSON is a subset): plain, spaced, every escape YAML's
# double quotes decode (\x, \u, \U), those it does not (Python's \N{...}, octal: errors or other text),
# OmegaConf's own escapes, Unicode look-alikes of '$' and '{', nesting in lists and mappings, YAML tags,
# OmegaConf's other resolvers and a plain key reference.
SPELLINGS = [
    f"${{oc.env:{VARIABLE}}}",
    f"${{ oc.env : {VARIABLE} }}",
    f'"${{oc.env:{VARIABLE}}}"',
    f'"\\x24{{oc.env:{VARIABLE}}}"',
    f'"\\u0024{{oc.env:{VARIABLE}}}"',
    f'"\\U00000024{{oc.env:{VARIABLE}}}"',
    f'"$\\x7Boc.\\x65nv:{VARIABLE}}}"',
    f'"\\u0024\\u007b\\u006fc.env:{VARIABLE}\\u007d"',
    f'"\\N{{DOLLAR SIGN}}{{oc.env:{VARIABLE}}}"',
    f'"\\044{{oc.env:{VARIABLE}}}"',
    f"\\${{oc.env:{VARIABLE}}}",
    f"\\\\${{oc.env:{VARIABLE}}}",
    f"\uff04{{oc.env:{VARIABLE}}}",
    f"\ufe69{{oc.env:{VARIABLE}}}",
    f"$\uff5boc.env:{VARIABLE}\uff5d",
    f"${{oc.decode:'\\x24{{oc.env:{VARIABLE}}}'}}",
    f'[a, "\\x24{{oc.env:{VARIABLE}}}"]',
    f'{{k: "\\u0024{{oc.env:{VARIABLE}}}"}}',
    f"!!str ${{oc.env:{VARIABLE}}}",
    "${data.root}",
]


def decodes_to_interpolation(text: str) -> bool:
    """Whether YAML reads `text` into something holding '${' (what OmegaConf would resolve)."""
    try:
        return "${" in json.dumps(yaml.safe_load(text), ensure_ascii=False)
    except yaml.YAMLError:
        return False


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv(VARIABLE, SECRET)


def assert_refused_or_literal(load, spelling: str):
    """`load()` either raises a ConfigError (naming an interpolation where YAML decodes one) or gives a
    config; in neither does the variable's value appear."""
    try:
        config = load()
    except ConfigError as error:
        assert SECRET not in str(error)
        if decodes_to_interpolation(spelling):
            assert "holds an interpolation" in str(error)
        return
    assert not decodes_to_interpolation(spelling), f"{spelling!r} was taken"
    assert SECRET not in json.dumps(config_to_dict(config))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_override_is_never_resolved(tmp_path, spelling):
    config = tiny_config(tmp_path)
    assert_refused_or_literal(
        lambda: load_config(PretrainConfig, config, [f"log.wandb.project={spelling}"]), spelling
    )
    assert_refused_or_literal(lambda: load_config(PretrainConfig, config, [f"out_dir={spelling}"]), spelling)


def test_an_escaped_environment_variable_is_refused_on_the_command_line(tmp_path, capsys):
    override = f'out_dir="\\x24{{oc.env:{VARIABLE}}}"'
    assert main(["pretrain", str(tiny_config(tmp_path)), override]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"guidedmae pretrain: error: command line {override!r}: out_dir='${{oc.env:{VARIABLE}}}' holds an"
    )
    assert SECRET not in error and "\n" not in error
    assert not any(path.name == SECRET for path in tmp_path.rglob("*"))


def test_a_saved_config_holding_an_interpolation_is_refused(tmp_path):
    saved = config_to_dict(load_config(PretrainConfig, tiny_config(tmp_path)))
    saved["log"]["wandb"]["project"] = f"${{oc.env:{VARIABLE}}}"
    with pytest.raises(ConfigError, match=r"saved config: log\.wandb\.project='\$\{oc\.env:") as error:
        load_config(PretrainConfig, None, base=saved)
    assert SECRET not in str(error.value)


def write_study(tmp_path, line: str):
    tiny_config(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(
        f"out_dir: {tmp_path / 'out'}\nbase: {{config: tiny.yaml}}\n"
        f"arms:\n  - name: random\n    config: tiny.yaml\n    overrides:\n      - {line}\n"
    )
    return path


def study_runs_config(path):
    from guidedmae.study.plan import plan

    study, folder = load_study(path)
    runs = plan(study, folder)
    for run in runs:
        run.resolved()
    return runs


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_study_file_never_resolves_an_override_it_hands_its_runs(tmp_path, spelling):
    # The override's text written as a YAML string of the study file, then read as an override's value.
    line = json.dumps(f"log.wandb.project={spelling}", ensure_ascii=False)
    path = write_study(tmp_path, line)
    try:
        runs = study_runs_config(path)
    except ConfigError as error:
        assert SECRET not in str(error)
        assert "holds an interpolation" in str(error) or not decodes_to_interpolation(spelling)
        return
    assert not decodes_to_interpolation(spelling)
    assert not any(SECRET in json.dumps(config_to_dict(run.resolved())) for run in runs)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_study_file_takes_no_interpolation_of_its_own(tmp_path, spelling):
    # The spelling as the study file's own YAML: decoded once, by the study file's reader.
    path = write_study(tmp_path, f"log.wandb.project=x\nbaseline: {spelling}")
    decoded = decodes_to_interpolation(path.read_text())
    try:
        load_study(path)
    except ConfigError as error:
        assert SECRET not in str(error)
        if decoded:
            assert f"{path}: " in str(error) and "holds an interpolation" in str(error)
        return
    assert not decoded


def test_the_viewer_never_resolves_a_strategy_option(checkpoint_demo):
    from guidedmae.ui.app import respond

    for spelling in SPELLINGS:
        result = respond(checkpoint_demo, page_request(left_options=f"select={spelling}"))
        assert SECRET not in result.message + result.summary
        if decodes_to_interpolation(spelling) and " " not in spelling:
            assert "holds an interpolation" in result.message


def test_the_viewers_http_api_never_resolves_a_strategy_option(checkpoint_demo):
    pytest.importorskip("gradio", reason="gradio is the ui extra: pip install 'guidedmae[ui]'")
    from gradio_client import Client

    from guidedmae.ui.app import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(checkpoint_demo, "127.0.0.1", port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        settings = page_request(left_options=f'select="\\x24{{oc.env:{VARIABLE}}}"')
        outputs = client.predict(*api_arguments(checkpoint_demo, settings), api_name="/compute")
        message = outputs[-1]
        assert "holds an interpolation" in message and SECRET not in json.dumps(outputs)
        # The raw HTTP route as well: the JSON body's own escapes decode to the same text.
        body = json.dumps({"data": api_arguments(checkpoint_demo, settings)}).replace("$", "\\u0024")
        call = urllib.request.Request(
            f"http://127.0.0.1:{port}/gradio_api/call/compute",
            body.encode(),
            {"Content-Type": "application/json"},
        )
        event = json.loads(urllib.request.urlopen(call, timeout=60).read())["event_id"]
        answer = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/gradio_api/call/compute/{event}", timeout=60
        )
        streamed = answer.read().decode()
        assert "holds an interpolation" in streamed and SECRET not in streamed
    finally:
        server.close()


# -- the viewer's fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_demo(tmp_path_factory):
    from guidedmae.masking import MaskingConfig
    from guidedmae.ui.demo import Demo
    from tests.test_ui import VISIBLE
    from tests.test_visualize import write_run_checkpoint

    path = tmp_path_factory.mktemp("run") / "checkpoint-last.pt"
    write_run_checkpoint(path, MaskingConfig(strategy="attention", num_visible=VISIBLE))
    return Demo.load(str(path))


def page_request(**changes):
    from tests.test_ui import request

    return request(**changes)


def api_arguments(demo, settings) -> list:
    """The page's inputs in the order its compute endpoint takes them (the uploads are the session's, sent
    to its upload endpoints: not among them); a fixed count per model input."""
    counts = list(settings.counts) + [0] * (len(demo.model.config.inputs) - len(settings.counts))
    return [settings.source, settings.scene, settings.pseudo_label, settings.num_visible, settings.budget,
            settings.alphas, *counts, settings.seed, settings.left, settings.left_options, settings.right,
            settings.right_options]  # fmt: skip
