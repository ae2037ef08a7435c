"""Inputs, as a hostile user gives them: overrides YAML cannot read, environment variables on the command
line, modality declarations of the wrong type, a .mat declaring giant images, results that are not
results, options out of range, model names that are not folders, a config.json that lies, and a checkpoint
write stopped by Ctrl-C or a full disk. Every case is one line on stderr (exit status 1; 130 for Ctrl-C)
naming the file, key or option and what was expected, or a named error, and nothing already written
changes."""

import errno
import json
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from guidedmae.cli import main
from guidedmae.config import ConfigError, PretrainConfig, load_config
from guidedmae.config.loading import load_modalities
from guidedmae.infra.checkpoints import CheckpointError, atomic_save
from guidedmae.infra.run_log import read_metrics
from guidedmae.masking import MaskingConfig
from guidedmae.models import MultiMAE
from guidedmae.models.architecture import MultiMAEConfig
from tests.test_folder import write_nyu_mat
from tests.test_pretrain import tiny_config
from tests.test_reliability import RUN, folder_digest, one_line_error
from tests.test_visualize import write_run_checkpoint

# -- config overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=[", "command line 'seed=[': '[' is not a valid value (YAML: did not find expected node"),
        ("out_dir=*x", "command line 'out_dir=*x': '*x' is not a valid value (YAML: found undefined alias)"),
        (
            "data.root=!!binary abc",
            "command line 'data.root=!!binary abc': '!!binary abc' is not a valid value (YAML: failed to "
            "decode base64",
        ),
    ],
)
def test_an_override_yaml_cannot_read_is_named_among_the_others(tmp_path, capsys, override, message):
    # Several overrides: merged at once first, then one at a time to name the one at fault.
    arguments = ["pretrain", str(tiny_config(tmp_path)), f"out_dir={tmp_path / 'run'}", *RUN, override]
    assert main(arguments) == 1
    line = one_line_error(capsys, message)
    assert "quote it within the override" in line
    assert not (tmp_path / "run").exists()


def test_a_quoted_override_is_taken_as_text(tmp_path):
    config = load_config(PretrainConfig, tiny_config(tmp_path), [f"out_dir='{tmp_path}/*x'"])
    assert config.out_dir == f"{tmp_path}/*x"


def test_an_environment_variable_is_refused_on_the_command_line_unseen(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GUIDEDMAE_TEST_TOKEN", "s3cr3t")
    for override in ("log.wandb.project=${oc.env:GUIDEDMAE_TEST_TOKEN}", "out_dir=/x/${ oc.env : HOME }"):
        assert main(["pretrain", str(tiny_config(tmp_path)), f"out_dir={tmp_path / 'run'}", override]) == 1
        line = one_line_error(capsys, f"command line {override!r}: ")
        assert "holds an interpolation ('${...}'), which is never resolved here" in line
        assert "stored in config.yaml and sent to the trackers" in line and "s3cr3t" not in line
    assert not (tmp_path / "run").exists()


def test_an_environment_variable_in_a_config_file_is_resolved_or_named(tmp_path, capsys, monkeypatch):
    tiny = tiny_config(tmp_path)
    config = tmp_path / "env.yaml"
    config.write_text(f"extends: {tiny.name}\nout_dir: ${{oc.env:GUIDEDMAE_TEST_RUNS}}/demo\n")
    monkeypatch.setenv("GUIDEDMAE_TEST_RUNS", str(tmp_path / "runs"))
    assert load_config(PretrainConfig, config).out_dir == str(tmp_path / "runs" / "demo")
    monkeypatch.delenv("GUIDEDMAE_TEST_RUNS")
    assert main(["pretrain", str(config), *RUN]) == 1
    one_line_error(
        capsys, f"{config} + command line: 'out_dir': KeyError raised while resolving interpolation"
    )
    with pytest.raises(ConfigError, match="Environment variable 'GUIDEDMAE_TEST_RUNS' not found"):
        load_config(PretrainConfig, config)


# -- modality declarations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"channels": 2.5, "format": "npy"}, "modalities.flow.channels=2.5; expected a whole number"),
        ({"channels": "two", "format": "npy"}, "modalities.flow.channels='two'; expected a whole number"),
        ({"scale": float("inf")}, "modalities.flow.scale=inf; expected a finite number"),
        (
            {"channels": 2, "format": "npy", "normalize": "fixed", "mean": [0, 0], "std": [1, float("nan")]},
            "modalities.flow.std=[1, nan]; expected a list of finite numbers",
        ),
        (None, "modalities.flow=None; expected a mapping of its keys"),
        (
            {"mean": [0.5]},
            "modalities.flow.mean=[0.5] is only read with normalize=fixed, not normalize=none",
        ),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_key(tmp_path, capsys, declaration, message):
    config = tmp_path / "modalities.yaml"
    text = json.dumps(declaration).replace("Infinity", ".inf").replace("NaN", ".nan")  # as YAML writes them
    config.write_text(f"modalities: {{flow: {text}}}\n")
    command = ["data", "shard", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "shards")]
    assert main([*command, "--modalities", "rgb", "flow", "--config", str(config)]) == 1
    one_line_error(capsys, f"{config}: {message}")
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("modalities.flow.channels=2.5", "modalities.flow.channels=2.5; expected a whole number"),
        ("modalities.flow=null", "modalities.flow=None; expected a mapping of its keys"),
        ("modalities.depth.mean=[0.5]", "modalities.depth.mean=[0.5] is only read with normalize=fixed"),
    ],
)
def test_a_bad_declaration_in_a_training_config_is_named(tmp_path, capsys, override, message):
    assert main(["pretrain", str(tiny_config(tmp_path)), f"out_dir={tmp_path / 'run'}", override]) == 1
    one_line_error(capsys, message)


def test_a_builtin_declared_with_another_normalization_drops_its_fixed_statistics(tmp_path):
    config = tmp_path / "normals.yaml"
    config.write_text("modalities: {normals: {normalize: standardize}}\n")
    normals = load_modalities(config)["normals"]
    assert (normals.normalize, normals.mean, normals.std) == ("standardize", (), ())


# -- NYUv2 .mat files ----------------------------------------------------------------------------


def declare_giant_images(path: Path) -> None:
    """A few kB of HDF5 declaring one 60000 x 60000 image (chunked: nothing stored, every value a fill)."""
    with h5py.File(path, "w") as mat:
        mat.create_dataset("images", (1, 3, 60000, 60000), np.uint8, chunks=(1, 1, 64, 64))
        mat.create_dataset("depths", (1, 60000, 60000), np.float32, chunks=(1, 64, 64))
        mat.create_dataset("labels", (1, 60000, 60000), np.uint16, chunks=(1, 64, 64))


def replace_dataset(name: str, array: np.ndarray):
    def damage(path: Path) -> None:
        write_nyu_mat(path)
        with h5py.File(path, "a") as mat:
            del mat[name]
            mat[name] = array

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            declare_giant_images,
            "dataset 'images' declares 1 images of 60000 x 60000 pixels; expected 1..100000",
        ),
        (
            replace_dataset("depths", np.zeros((4, 6, 4), np.float32)),  # 4 depths for 5 images
            "dataset 'depths' has shape [4, 6, 4]; expected [N, W, H] = [5, 6, 4]",
        ),
        (
            replace_dataset("labels", np.zeros((5, 4, 6), np.uint16)),  # [N, H, W]: transposed
            "dataset 'labels' has shape [5, 4, 6]; expected [N, W, H] = [5, 6, 4]",
        ),
        (
            replace_dataset("images", np.zeros((5, 3, 6, 4), np.float64)),
            "dataset 'images' holds float64 values; expected uint8",
        ),
        (
            replace_dataset("labels", np.zeros((5, 6, 4), np.float32)),
            "dataset 'labels' holds float32 values; expected integer",
        ),
    ],
)
def test_a_mat_whose_datasets_do_not_fit_is_refused_before_reading(tmp_path, capsys, damage, message):
    mat = tmp_path / "nyu.mat"
    damage(mat)
    assert mat.stat().st_size < 100_000
    assert main(["data", "nyuv2", "--mat", str(mat), "--out", str(tmp_path / "out")]) == 1
    one_line_error(capsys, f"{mat}: {message}")
    assert not (tmp_path / "out").exists()


# -- report --------------------------------------------------------------------------------------


def test_results_that_are_not_an_object_are_named(tmp_path, capsys):
    (tmp_path / "results.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path)]) == 1
    one_line_error(capsys, f"{tmp_path / 'results.json'}: expected a 'metrics' object")
    (tmp_path / "results.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    assert main(["report", str(tmp_path)]) == 1
    one_line_error(capsys, f"{tmp_path / 'results.json'}: not valid JSON")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(128, 256)) * 4, "not a metrics.jsonl (not UTF-8 text, byte 0)"),
        (b'{"step": 1, "loss": 2.0}\nGIF89a garbage\n', "line 2 is not a JSON object"),
        (b'{"step": 1, "loss": 2.0}\n[1, 2]\n', "line 2 is not a JSON object"),
    ],
)
def test_metrics_that_are_not_metrics_are_named(tmp_path, capsys, content, message):
    (tmp_path / "metrics.jsonl").write_bytes(content)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "curves.png")]) == 1
    one_line_error(capsys, f"{tmp_path / 'metrics.jsonl'}: {message}")


def test_the_line_a_killed_run_left_half_written_is_still_skipped(tmp_path, capsys):
    lines = b'{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n\x00\x00\x00\n{"step": 2, "loss": 1.5}\n'
    (tmp_path / "metrics.jsonl").write_bytes(lines)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "curves.png")]) == 0
    assert "| loss | 1.5 |" in capsys.readouterr().out


# -- bench and visualize options -----------------------------------------------------------------

PRESET = ["bench", "--preset", "tiny", "--image-size", "32", "--patch-size", "8", "--rounds", "1"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "100000000"], "--batch-size 100000000: its inputs at 32px would take"),
        (["--num-visible", "0"], "--num-visible 0; expected 1..48 (all input tokens)"),
        (["--num-visible", "49"], "--num-visible 49; expected 1..48"),
        (["--semseg-classes", "0"], "--semseg-classes 0; expected at least 8"),
    ],
)
def test_bench_options_out_of_range_are_named_at_once(capsys, flags, message):
    assert main([*PRESET, *flags]) == 1
    line = one_line_error(capsys, message)
    if flags[0] == "--batch-size":
        assert "of memory; choose a smaller --batch-size" in line


def test_bench_refuses_a_visible_count_a_config_would_ignore(tmp_path, capsys):
    from tests.test_bench import TINY_CONFIG

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    assert main(["bench", "--config", str(config), "--num-visible", "8"]) == 1
    one_line_error(capsys, "--num-visible sets the budget of a --preset model")


def test_visualize_names_its_samples_option(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    write_run_checkpoint(checkpoint, MaskingConfig(strategy="attention", num_visible=8))
    assert main(["visualize", str(checkpoint), "--samples", "0"]) == 1
    line = one_line_error(capsys, "--samples 0; expected at least 1")
    assert "picture_samples" not in line
    assert list(tmp_path.iterdir()) == [checkpoint]


# -- pseudolabel models and device ---------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: models are local folders, never looked up on a hub."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_model_that_is_not_a_folder_is_refused_without_the_network(tmp_path, capsys, no_network):
    rgb = tmp_path / "data" / "train" / "rgb" / "things"
    rgb.mkdir(parents=True)
    (rgb / "000.png").write_bytes(b"")
    root = str(tmp_path / "data")
    for name in ("/nonexistent/model", "Intel/dpt-hybrid-midas"):
        assert main(["pseudolabel", root, "--depth", name]) == 1
        one_line_error(capsys, f"--depth {name}: no such folder; models are local folders")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pseudolabel", root, "--semseg", str(empty)]) == 1
    one_line_error(capsys, f"--semseg {empty}: no config.json in it")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "dpt"}')
    assert main(["pseudolabel", root, "--depth", str(model), "--device", "bogus"]) == 1
    one_line_error(capsys, "--device='bogus'; expected one of ('auto', 'cpu', 'cuda')")
    assert sorted(path.name for path in (tmp_path / "data" / "train").iterdir()) == ["rgb"]


# -- model folders: config.json ------------------------------------------------------------------


@pytest.fixture
def model_folder(tmp_path) -> Path:
    config = MultiMAEConfig(
        image_size=32, patch_size=8, dim=32, depth=1, num_heads=4, decoder_dim=16, decoder_depth=1,
        decoder_heads=2, semseg_classes=8, semseg_class_dim=8,
    )  # fmt: skip
    return MultiMAE(config).save_pretrained(tmp_path / "model")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_heads": 3}, "model.dim=32, model.num_heads=3; expected a dim divisible by num_heads and by 4"),
        (
            {"decoder_heads": 5},
            "model.decoder_dim=16, model.decoder_heads=5; expected a decoder_dim divisible",
        ),
        ({"dim": 128.0}, "model.dim=128.0; expected a whole number"),
        ({"dim": None}, "model.dim=None; expected a whole number"),
        ({"qkv_bias": "yes"}, "model.qkv_bias='yes'; expected true or false"),
        ({"inputs": "rgb"}, "model.inputs='rgb'; expected a list of strings"),
        ({"inputs": ["rgb", "flow"]}, "unknown modality 'flow'"),
        ({"model_type": "bert"}, "model_type='bert'; expected a JSON object with model_type='multimae'"),
    ],
)
def test_a_config_json_that_does_not_describe_a_multimae_names_itself_and_the_key(
    model_folder, change, message
):
    config_json = model_folder / "config.json"
    config_json.write_text(json.dumps({**json.loads(config_json.read_text()), **change}))
    with pytest.raises(CheckpointError) as error:
        MultiMAE.from_pretrained(model_folder)
    assert str(error.value).startswith(f"{config_json}: ") and message in str(error.value)


def test_a_config_json_that_is_not_an_object_is_named(model_folder):
    config_json = model_folder / "config.json"
    for content, message in ((b"[1, 2]", "not a JSON object"), (b"\xff\xfe\x00garbage", "not valid JSON")):
        config_json.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"^{config_json}: {message}"):
            MultiMAE.from_pretrained(model_folder)


def test_export_names_the_checkpoint_whose_stored_model_cannot_be(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    write_run_checkpoint(checkpoint, MaskingConfig(num_visible=8))
    saved = torch.load(checkpoint, weights_only=True)
    saved["config"]["model"]["num_heads"] = 3
    torch.save(saved, checkpoint)
    assert main(["export", str(checkpoint), "--to", "hf", "--out", str(tmp_path / "hf")]) == 1
    one_line_error(
        capsys,
        f"{checkpoint}: the stored model config does not describe a MultiMAE (model.dim=64, model.num_heads=3",
    )
    assert not (tmp_path / "hf").exists()


# -- a checkpoint write stopped: Ctrl-C, a full disk ---------------------------------------------


class FailingFile:
    """A file whose writes fail (`error(*arguments)`) after the first `writes` of them, as a Ctrl-C or a
    full disk strikes in the middle of torch.save (its zip writer then reports "unexpected pos ...")."""

    def __init__(self, file, error: type[BaseException], arguments: tuple, writes: int) -> None:
        self.file, self.error, self.arguments, self.writes = file, error, arguments, writes

    def write(self, data) -> int:
        if self.writes == 0:
            raise self.error(*self.arguments)
        self.writes -= 1
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def fail_torch_save(monkeypatch, error: type[BaseException], arguments: tuple, writes: int = 2) -> None:
    real_save = torch.save

    def save(obj, file, **options):
        real_save(obj, FailingFile(file, error, arguments, writes), **options)

    monkeypatch.setattr(torch, "save", save)


INTERRUPTED = (KeyboardInterrupt, (), "interrupted while writing {path}; it is as it was")
FULL_DISK = (
    OSError,
    (errno.ENOSPC, "No space left on device"),
    "cannot write {path}: the disk is full (No space left on device); it is as it was",
)


@pytest.mark.parametrize(("error", "arguments", "message"), [INTERRUPTED, FULL_DISK])
@pytest.mark.parametrize("writes", [0, 2])  # before torch.save's zip writer starts, and inside it
def test_a_stopped_checkpoint_write_says_why_and_leaves_the_file_as_it_was(
    tmp_path, monkeypatch, error, arguments, message, writes
):
    path = tmp_path / "checkpoint-last.pt"
    atomic_save({"step": 1}, path)
    fail_torch_save(monkeypatch, error, arguments, writes)
    with pytest.raises(error) as raised:
        atomic_save({"step": 2, "weights": torch.zeros(1000)}, path)
    assert str(raised.value).endswith(message.format(path=path)) and "unexpected pos" not in str(raised.value)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(("error", "arguments", "message", "status"), [(*INTERRUPTED, 130), (*FULL_DISK, 1)])
def test_a_run_whose_checkpoint_write_is_stopped_says_so_and_keeps_its_checkpoints(
    tmp_path, capsys, monkeypatch, error, arguments, message, status
):
    config, out = tiny_config(tmp_path), tmp_path / "run"
    command = ["pretrain", str(config), f"out_dir={out}", "resume=auto", "schedule.total_epochs=2", *RUN]
    assert main(command) == 0
    for name in ("checkpoint-00000016.pt", "checkpoint-last.pt"):  # as if killed after step 12's checkpoint
        (out / name).unlink()
    checkpoints = {name: digest for name, digest in folder_digest(out).items() if name.endswith(".pt")}
    fail_torch_save(monkeypatch, error, arguments)
    assert main(command) == status
    stderr = capsys.readouterr().err
    [line] = [line for line in stderr.splitlines() if line.startswith("guidedmae pretrain: ")]
    assert message.format(path=out / "checkpoint-00000016.pt") in line, stderr
    assert "Traceback" not in stderr and "unexpected pos" not in stderr
    assert {
        name: digest for name, digest in folder_digest(out).items() if name.endswith(".pt")
    } == checkpoints
    assert not list(out.glob(".*.tmp"))
