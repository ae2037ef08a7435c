"""`guidedmae study`: a tiny study end to end, killed and run again; plans, refusals and the statistics."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from guidedmae.cli import main
from guidedmae.config.presets import CONFIG_ROOT
from guidedmae.infra.run_log import read_metrics
from guidedmae.study.runner import load_planned
from guidedmae.study.tables import paired_difference
from tests.test_pretrain import ROOT, TINY

PROBE = """
extends: synthetic_cls_probe  # a shipped config, by name
model: {{image_size: 32, patch_size: 8, dim: 32, depth: 2, num_heads: 4, semseg_classes: 8, semseg_class_dim: 8}}
data: {{num_samples: 16, eval_num_samples: 8, batch_size: 8, num_workers: 0, augment: {{size: 32}}}}
schedule: {{total_epochs: 1, warmup_epochs: 0}}
run: {{precision: fp32, threads: 1}}
"""
STUDY = """
out_dir: {out}
base: {{config: tiny.yaml, overrides: [schedule.total_epochs=1]}}
arms:
  - {{name: random, config: tiny.yaml, overrides: [schedule.start_epoch=1, schedule.total_epochs=2]}}
  - {{name: attention, config: tiny.yaml, overrides: [schedule.start_epoch=1, schedule.total_epochs=2,
      masking.strategy=attention]}}
seeds: [0, 1]
evaluations:
  - {{name: probe, config: probe.yaml}}
launch: {{launcher: debug}}
"""


def write_study(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY.replace("picture_every: 8", "picture_every: 0"))
    (tmp_path / "probe.yaml").write_text(PROBE.format(root=ROOT))
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(out=tmp_path / "out"))
    return path


def results_times(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("results.json")}


def test_a_killed_study_runs_again_without_redoing_finished_runs(tmp_path, capsys):
    study = write_study(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "guidedmae", "study", str(study)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300  # a guard against a hung child, not a timing assumption
    while not (out / "random" / "seed-0" / "probe" / "results.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the study never finished its first probe"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = results_times(out)
    assert {"base/results.json", "random/seed-0/results.json", "random/seed-0/probe/results.json"} <= set(
        finished
    )

    assert main(["study", str(study)]) == 0
    printed = capsys.readouterr().out
    # Finished runs are not run again; every other run finishes now.
    assert all(results_times(out)[name] == mtime for name, mtime in finished.items())
    assert sum(1 for r in read_metrics(out / "base" / "metrics.jsonl") if r.get("event") == "start") == 1
    assert len(results_times(out)) == 1 + 2 * 2 * 2  # base, 2 arms x 2 seeds x (pretraining + probe)
    tables = json.loads((out / "study.json").read_text())
    assert (
        tables["arms"] == ["random", "attention"]
        and tables["controls"] == {"attention": "random"}
        and not tables["missing"]
    )
    for metric in ("probe: top1", "pretrain: eval_random/loss", "pretrain: eval_own/loss_semseg"):
        for arm in ("random", "attention"):
            assert tables["metrics"][metric][arm]["n"] == 2
        difference = tables["differences"][metric]["attention"]
        assert difference["n"] == 2 and difference["low"] <= difference["mean"] <= difference["high"]
    assert "| pretrain: eval_own/loss |" in printed and "paired difference to the control" in printed
    assert (out / "pretraining_curves.png").is_file() and (out / "study.md").is_file()

    # The report command reads the study folder the same way.
    assert main(["report", str(out), "--per-seed"]) == 0
    assert "per replicate" in capsys.readouterr().out


def test_the_plan_and_a_refused_change(tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["study", str(study), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "| random/seed-1/probe | finetune | new | random/seed-1 | ? |" in printed
    assert "9 runs, 9 to do" in printed
    assert main(["study", str(study), "seeds=[0]", "evaluations=[]"]) == 0
    capsys.readouterr()
    assert main(["study", str(study), "seeds=[0]", "--dry-run"]) == 0
    assert "| random/seed-0 | pretrain | finished | base | - |" in capsys.readouterr().out
    # Written by an older version (a section added since is absent) with other threads: still finished.
    written = tmp_path / "out" / "random" / "seed-0" / "config.yaml"
    saved = yaml.safe_load(written.read_text())
    del saved["log"]["wandb"]
    saved["run"]["threads"] = 7
    written.write_text(yaml.safe_dump(saved))
    assert main(["study", str(study), "seeds=[0]", "--dry-run"]) == 0
    assert "| random/seed-0 | pretrain | finished | base | - |" in capsys.readouterr().out
    # A finished run whose planned config changed is refused, naming the change, unless --redo.
    study.write_text(
        study.read_text().replace("schedule.total_epochs=2]", "schedule.total_epochs=2, optim.blr=0.01]", 1)
    )
    changed = ["seeds=[0]", "evaluations=[]"]
    assert main(["study", str(study), *changed]) == 1
    assert "random/seed-0 (optim.blr: 0.002 -> 0.01)" in capsys.readouterr().err
    assert main(["study", str(study), *changed, "--redo"]) == 0
    assert list((tmp_path / "out" / "random").glob("seed-0.replaced-*"))
    capsys.readouterr()
    # A changed base makes every run that starts from it stale.
    study.write_text(
        study.read_text().replace("[schedule.total_epochs=1]", "[schedule.total_epochs=1, optim.blr=0.01]")
    )
    assert main(["study", str(study), *changed, "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "base (optim.blr" in error and "random/seed-0 (starts from base, which is stale)" in error
    assert "attention/seed-0 (starts from base, which is stale)" in error
    assert main(["study", str(study), *changed, "--redo"]) == 0
    assert "attention/seed-0: stale, previous run moved to" in capsys.readouterr().out
    assert list((tmp_path / "out" / "attention").glob("seed-0.replaced-*"))


def test_paired_differences_have_student_t_intervals():
    baseline = {0: 1.0, 1: 2.0, 2: 3.0}
    arm = {0: 1.5, 1: 2.7, 2: 3.4, 7: 9.0}  # seed 7 has no pair
    difference = paired_difference(arm, baseline)
    # d = 0.5, 0.7, 0.4: mean 0.5333, sd 0.1528, t(0.975, 2) = 4.3027 -> half width 0.3795
    assert difference["n"] == 3 and difference["mean"] == pytest.approx(0.5333, abs=1e-4)
    assert difference["high"] - difference["mean"] == pytest.approx(4.3027 * 0.15275 / math.sqrt(3), abs=1e-3)
    assert difference["excludes_zero"]
    noisy = paired_difference({0: 1.0, 1: 3.0}, {0: 2.0, 1: 2.0})
    assert not noisy["excludes_zero"] and noisy["low"] < 0 < noisy["high"]
    assert paired_difference({0: 1.0}, {0: 0.5})["low"] is None  # one pair: no interval


def test_study_plans_name_the_folders_of_every_run(tmp_path):
    study, runs = load_planned(write_study(tmp_path))
    assert [run.name for run in runs][:3] == ["base", "random/seed-0", "random/seed-0/probe"]
    probe = next(run for run in runs if run.name == "attention/seed-1/probe")
    assert probe.depends_on == ["attention/seed-1"] and probe.seed == 1
    config = probe.resolved()
    assert config.model.init == str(tmp_path / "out" / "attention" / "seed-1" / "checkpoint-last.pt")
    assert config.seed == 1 and config.resume == "auto"


def test_a_shipped_study_plans_with_valid_run_configs(tmp_path, capsys):
    # --dry-run loads every run's config as the study would run it: a bad override fails here, not an hour in
    # (tests/test_study_design.py loads every run of every shipped study).
    study = CONFIG_ROOT / "study" / "reference_cpu_quick.yaml"
    assert main(["study", str(study), f"out_dir={tmp_path}", "--dry-run"]) == 0
    assert "runs, " in capsys.readouterr().out


def test_local_runs_share_the_cores_among_the_runs_at_once(tmp_path):
    # launch.parallel=2: the base run, alone, gets every core; the two arms after it run together on half each.
    study = write_study(tmp_path)
    one_seed = study.read_text().replace("seeds: [0, 1]", "seeds: [0]").split("evaluations:")[0]
    study.write_text(one_seed + "launch: {launcher: local, parallel: 2}\n")
    assert main(["study", str(study)]) == 0
    cores = os.cpu_count() or 1
    threads = {
        name: yaml.safe_load((tmp_path / "out" / name / "config.yaml").read_text())["run"]["threads"]
        for name in ("base", "random/seed-0", "attention/seed-0")
    }
    assert threads == {
        "base": cores,
        "random/seed-0": max(1, cores // 2),
        "attention/seed-0": max(1, cores // 2),
    }
