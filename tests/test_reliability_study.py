"""Studies, as a hostile user writes them: names that the study or a run already uses, seeds out of range, a
link where the study keeps its job logs. Every refusal is one line, given before anything runs."""

import pytest

from guidedmae.cli import main
from tests.test_reliability import one_line_error
from tests.test_study import write_study

ONE_SEED = ["seeds=[0]"]


LONG = "a" * 300


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("arms=[{name: study.yaml, config: tiny.yaml}]", "arm name 'study.yaml': the study's folder holds"),
        ("arms=[{name: logs, config: tiny.yaml}]", "arm name 'logs': the study's folder holds 'logs'"),
        ("arms=[{name: study.md, config: tiny.yaml}]", "arm name 'study.md': the study's folder holds"),
        (
            "arms=[{name: curves.png, config: tiny.yaml}]",
            "arm name 'curves.png': the study's folder holds '*.png'",
        ),
        ("arms=[{name: base, config: tiny.yaml}]", "arm name 'base': the study's folder holds 'base'"),
        (
            "evaluations=[{name: checkpoint-last.pt, config: probe.yaml}]",
            "evaluation name 'checkpoint-last.pt': a run's folder holds 'checkpoint-*.pt' of its own",
        ),
        (
            "evaluations=[{name: tensorboard, config: probe.yaml}]",
            "evaluation name 'tensorboard': a run's folder holds 'tensorboard' of its own",
        ),
        ("evaluations=[{name: results.json, config: probe.yaml}]", "evaluation name 'results.json'"),
        ("evaluations=[{name: pictures, config: probe.yaml}]", "evaluation name 'pictures'"),
        (
            f"evaluations=[{{name: {LONG}, config: probe.yaml}}]",
            f"evaluation name '{'a' * 40}... (300 characters)': expected distinct folder names of 1 to 100",
        ),
        (f"arms=[{{name: {LONG}, config: tiny.yaml}}]", "(300 characters)': expected distinct folder names"),
    ],
)
def test_names_the_study_or_its_runs_use_are_refused_at_load(tmp_path, capsys, override, message):
    study = write_study(tmp_path)
    for dry_run in (["--dry-run"], []):
        assert main(["study", str(study), override, *dry_run]) == 1
        one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "seeds=[18446744073709551617]",
            "seeds[0]=18446744073709551617; expected a whole number 0 <= seed < 2^32",
        ),
        ("seeds=[0, -1]", "seeds[1]=-1; expected a whole number 0 <= seed < 2^32"),
        ("base.seeds=[0, 4294967296]", "base.seeds[1]=4294967296; expected a whole number 0 <= seed < 2^32"),
        ("base.overrides=[seed=18446744073709551617]", "seed=18446744073709551617; expected a whole number"),
        (
            "arm_defaults.overrides=[data.scene_seed=18446744073709551616]",
            "data.scene_seed=18446744073709551616; expected a whole number 0 <= seed < 2^32",
        ),
    ],
)
def test_seeds_out_of_range_are_refused_by_a_dry_run(tmp_path, capsys, override, message):
    study = write_study(tmp_path)
    assert main(["study", str(study), override, "--dry-run"]) == 1
    one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


def test_a_link_where_the_study_keeps_its_job_logs_is_refused(tmp_path, capsys):
    study, out = write_study(tmp_path), tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "logs").symlink_to(elsewhere)
    for dry_run in (["--dry-run"], []):
        assert main(["study", str(study), *ONE_SEED, "--launcher", "local", *dry_run]) == 1
        one_line_error(capsys, f"{out / 'logs'} is a symbolic link; the study writes its runs' job logs")
    assert not list(elsewhere.iterdir()) and [path.name for path in out.iterdir()] == ["logs"]
