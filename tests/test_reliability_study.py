"""Studies, as a hostile user runs them: a --redo after the base changed (and one whose move fails half way),
runs whose base has gone, names that the study or a run already uses, a link where the study keeps its job
logs, seeds out of range. Every refusal is one line, given before anything runs or moves."""

import errno
from pathlib import Path

import pytest
import yaml

from guidedmae.cli import main
from tests.test_reliability import folder_digest, one_line_error
from tests.test_study import write_study

ONE_SEED = ["seeds=[0]"]
RUNS = ("base", "random/seed-0", "random/seed-0/probe", "attention/seed-0", "attention/seed-0/probe")


def change_the_base(study: Path) -> None:
    study.write_text(
        study.read_text().replace("[schedule.total_epochs=1]", "[schedule.total_epochs=1, optim.blr=0.01]")
    )


def test_a_redo_after_the_base_changed_runs_again_every_run_built_on_it(tmp_path, capsys, monkeypatch):
    study, out = write_study(tmp_path), tmp_path / "out"
    assert main(["study", str(study), *ONE_SEED]) == 0
    first = {name: (out / name / "checkpoint-last.pt").read_bytes() for name in RUNS}
    change_the_base(study)
    capsys.readouterr()

    # A move that fails (here the third: another device, say) puts back the moves made before it.
    rename = Path.rename

    def fail_on_the_third(self, target):
        if self == out / "attention" / "seed-0":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(self, target)

    before = folder_digest(out)
    monkeypatch.setattr(Path, "rename", fail_on_the_third)
    assert main(["study", str(study), *ONE_SEED, "--redo"]) == 1
    monkeypatch.undo()
    line = one_line_error(capsys, f"cannot move the stale run folder {out / 'attention' / 'seed-0'} aside")
    assert "Invalid cross-device link" in line and line.endswith("nothing was moved")
    assert folder_digest(out) == before and not list(out.rglob("*.replaced-*"))

    # The moves are of the outermost folders (an evaluation goes with its arm), so none can miss its folder.
    assert main(["study", str(study), *ONE_SEED, "--redo"]) == 0
    printed = capsys.readouterr().out
    for name in ("random/seed-0", "attention/seed-0"):
        assert f"{name}: stale, previous run moved to {out / name}.replaced-" in printed
        assert f"(with {name}/probe)\n" in printed
    [base_aside] = out.glob("base.replaced-*")
    [random_aside] = (out / "random").glob("seed-0.replaced-*")
    assert (base_aside / "checkpoint-last.pt").read_bytes() == first["base"]
    assert (random_aside / "probe" / "checkpoint-last.pt").read_bytes() == first["random/seed-0/probe"]
    # Every run is trained again, each from the new base's weights (or its arm's): none ends as before.
    assert yaml.safe_load((out / "base" / "config.yaml").read_text())["optim"]["blr"] == 0.01
    assert all((out / name / "checkpoint-last.pt").read_bytes() != first[name] for name in RUNS)
    assert main(["study", str(study), *ONE_SEED, "--dry-run"]) == 0
    assert "5 runs, 0 to do" in capsys.readouterr().out


def test_runs_whose_base_is_gone_are_stale_and_redone(tmp_path, capsys):
    # As a --redo stopped half way (or a user) left the study: the base moved aside, its arms still finished.
    study, out = write_study(tmp_path), tmp_path / "out"
    small = [*ONE_SEED, "evaluations=[]"]
    assert main(["study", str(study), *small]) == 0
    (out / "base").rename(tmp_path / "old-base")
    capsys.readouterr()
    assert main(["study", str(study), *small, "--dry-run"]) == 1
    line = one_line_error(
        capsys, "random/seed-0 (starts from base, which is missing: it will be trained anew)"
    )
    assert "attention/seed-0 (starts from base, which is missing" in line and "--redo" in line
    assert main(["study", str(study), *small, "--redo"]) == 0
    assert "attention/seed-0: stale, previous run moved to" in capsys.readouterr().out
    assert main(["study", str(study), *small, "--dry-run"]) == 0
    assert "3 runs, 0 to do" in capsys.readouterr().out


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
