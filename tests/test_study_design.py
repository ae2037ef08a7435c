"""Study designs: no leak between training and evaluation data, replicates, bases, arm defaults, folder
names, stale runs, and the statistics of the tables (corrections, equivalence, power, low-data contrasts)."""

import json
import math
import os
import select
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from guidedmae.cli import main
from guidedmae.config import PretrainConfig, load_config
from guidedmae.config.presets import CONFIG_ROOT
from guidedmae.engine.finetune_setup import evaluation_set, training_set
from guidedmae.engine.pretrain import pretraining_set
from guidedmae.infra.files import LOCK_FILE, lock_folder
from guidedmae.infra.run_log import read_metrics
from guidedmae.study.leaks import check_no_leak, data_footprint
from guidedmae.study.runner import load_planned
from guidedmae.study.stats import equivalence_p, holm, mde, paired_difference, seeds_needed
from guidedmae.study.tables import StudyTables, collect, comparisons, format_markdown, power
from tests.test_pretrain import ROOT, tiny_config
from tests.test_reliability import _alive, _children, logged_steps, wait_for
from tests.test_study import write_study

SHIPPED = sorted((CONFIG_ROOT / "study").glob("*.yaml"))
# What a shipped study needs from whoever runs it (the official checkpoint's path).
REQUIRED = {"reference_multimae_b": ["base.checkpoint=/weights/multimae-b.pth"]}


def _synthetic_data(config) -> tuple[tuple, tuple]:
    """(training, evaluation) data sets a config builds, as (held_out, series) of its synthetic scenes."""
    if isinstance(config, PretrainConfig):
        training, evaluation = pretraining_set(config), pretraining_set(config, held_out=True)
    else:
        whole = replace(config, data=replace(config.data, fraction=1.0, per_class=0))
        training, evaluation = training_set(whole), evaluation_set(config)
    return (training.population, training.series), (evaluation.population, evaluation.series)


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_no_shipped_study_evaluates_on_scenes_any_of_its_runs_trains_on(path, tmp_path):
    study, runs = load_planned(path, [f"out_dir={tmp_path}", *REQUIRED.get(path.stem, [])])
    check_no_leak(runs)
    configs = {run.name: run.resolved() for run in runs}
    footprints = {name: data_footprint(config) for name, config in configs.items()}
    trained = set().union(*(training for training, _ in footprints.values()))
    evaluated = set().union(*(evaluation for _, evaluation in footprints.values()))
    assert not trained & evaluated
    # The footprint is what the runs really build: training scenes of the training population, evaluation
    # scenes of the held-out one (checked once per distinct data set up).
    checked = set()
    for name, config in configs.items():
        key = tuple(frozenset(part) for part in footprints[name])
        if config.data.source != "synthetic" or key in checked:
            continue
        checked.add(key)
        (train_population, train_series), (eval_population, eval_series) = _synthetic_data(config)
        assert (train_population, eval_population) == ("train", "val")
        assert footprints[name] == (
            {("synthetic", "train", train_series)},
            {("synthetic", "val", eval_series)},
        )
    # Seeds are replicates on one data set: every pretraining run of a study trains on the same scenes.
    pretraining = {frozenset(footprints[run.name][0]) for run in runs if run.kind == "pretrain"}
    assert len(pretraining) <= 1


def test_held_out_scenes_are_never_training_scenes_whatever_the_seeds():
    from guidedmae.data.scenes import scene_layout

    training = {repr(scene_layout(seed, index)) for seed in range(4) for index in range(16)}
    held_out = {repr(scene_layout(seed, index, "val")) for seed in range(4) for index in range(16)}
    test = {repr(scene_layout(seed, index, "test")) for seed in range(4) for index in range(16)}
    assert len(training) == len(held_out) == len(test) == 64
    assert not training & held_out and not training & test and not held_out & test
    assert repr(scene_layout(3, 5)) == repr(scene_layout(3, 5))  # each population is deterministic


def test_series_beyond_32_bits_are_refused_so_that_populations_cannot_collide():
    from guidedmae.data.scenes import scene_layout

    # Before the bound, training series 2^64 + 5 * 2^96 scene 1 was held-out series 2^64 scene 5.
    with pytest.raises(
        ValueError, match=rf"seed={2**64 + 5 * 2**96}, index=1; expected whole numbers 0..2\^32-1"
    ):
        scene_layout(2**64 + 5 * 2**96, 1)
    with pytest.raises(ValueError, match="index=4294967296"):
        scene_layout(0, 2**32, "val")


def test_a_folder_that_data_synth_wrote_is_named_by_its_scenes_in_the_leak_check(tmp_path, capsys):
    # A split written from the training scenes, used as a run's held-out set: the check sees through the
    # folder to the scenes its manifest lists, though the names differ.
    assert main(["data", "synth", "--out", str(tmp_path / "data"), "--n", "4", "--size", "16",
                 "--split", "heldout", "--seed", "0"]) == 0  # fmt: skip
    manifest = json.loads((tmp_path / "data" / "heldout" / "manifest.json").read_text())
    assert manifest["synthetic_scenes"] == [{"population": "heldout", "series": 0, "count": 4}]
    from guidedmae.data.writers import write_synthetic

    write_synthetic(tmp_path / "data", n=4, size=16, split="heldout", seed=0, progress=False)
    write_synthetic(tmp_path / "data", n=2, size=16, split="copy", seed=0, progress=False)
    (tmp_path / "data" / "copy" / "manifest.json").write_text(
        json.dumps({"synthetic_scenes": [{"population": "train", "series": 0, "count": 2}]})
    )  # a folder of training scenes, as a manifest says
    config = load_config(
        PretrainConfig,
        tiny_config(tmp_path),
        ["data.source=folder", f"data.root={tmp_path / 'data'}", "data.split=heldout", "eval.split=copy"],
    )
    training, evaluation = data_footprint(config)
    assert ("synthetic", "heldout", 0) in training and ("synthetic", "train", 0) in evaluation
    synthetic = load_config(PretrainConfig, tiny_config(tmp_path), [])
    assert data_footprint(synthetic)[0] & evaluation == {("synthetic", "train", 0)}


def test_splits_written_by_data_synth_are_populations_of_their_own(tmp_path):
    from guidedmae.data.writers import write_synthetic

    for split in ("val", "test"):
        write_synthetic(tmp_path, n=3, size=16, split=split, seed=0, progress=False)
    val = sorted(path.read_bytes() for path in (tmp_path / "val" / "rgb").rglob("*.png"))
    test = sorted(path.read_bytes() for path in (tmp_path / "test" / "rgb").rglob("*.png"))
    assert len(val) == len(test) == 3 and not set(val) & set(test)


def test_a_study_that_evaluates_on_its_training_split_is_refused(tmp_path, capsys):
    study = write_study(tmp_path)
    (tmp_path / "data" / "train").mkdir(parents=True)
    stored = ["data.source=folder", f"data.root={tmp_path / 'data'}"]
    text = study.read_text().replace("overrides: [schedule.total_epochs=1]", f"overrides: {stored}")
    study.write_text(
        text.replace(
            "{name: probe, config: probe.yaml}",
            f"{{name: probe, config: probe.yaml, overrides: {[*stored, 'data.eval_split=train']}}}",
        )
    )
    assert main(["study", str(study), "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "random/seed-0/probe evaluates on ('folder'" in error and "which base trains on" in error


def test_several_bases_each_continued_by_every_arm(tmp_path):
    study = write_study(tmp_path)
    text = study.read_text().replace(
        "overrides: [schedule.total_epochs=1]}", "overrides: [schedule.total_epochs=1], seeds: [3, 4]}"
    )
    study.write_text(text)
    _, runs = load_planned(study)
    names = [run.name for run in runs]
    assert names[:2] == ["base/seed-3", "base/seed-4"]
    assert "attention/base-4/seed-1/probe" in names and len(runs) == 2 + 2 * 2 * 2 * 2
    arm = next(run for run in runs if run.name == "attention/base-4/seed-1")
    assert arm.depends_on == ["base/seed-4"] and arm.replicate == "b4-s1"
    assert arm.resolved().model.init == str(tmp_path / "out" / "base" / "seed-4" / "checkpoint-last.pt")
    assert next(run for run in runs if run.name == "base/seed-4").resolved().seed == 4


def test_arm_defaults_apply_to_every_arm_and_an_arm_can_skip_pretraining(tmp_path):
    study = write_study(tmp_path)
    text = study.read_text().split("arms:")[0] + (
        "arm_defaults: {config: tiny.yaml, overrides: [schedule.start_epoch=1, schedule.total_epochs=2]}\n"
        "arms:\n  - {name: base_only, pretrain: false}\n  - {name: random}\n"
        "  - {name: attention, overrides: [masking.strategy=attention]}\n"
        "seeds: [0]\nevaluations:\n  - {name: probe, config: probe.yaml}\nlaunch: {launcher: debug}\n"
    )
    study.write_text(text)
    _, runs = load_planned(study)
    by_name = {run.name: run for run in runs}
    assert "base_only/seed-0" not in by_name
    probe = by_name["base_only/seed-0/probe"]
    assert probe.depends_on == ["base"]
    assert probe.resolved().model.init == str(tmp_path / "out" / "base" / "checkpoint-last.pt")
    attention = by_name["attention/seed-0"].resolved()
    assert attention.masking.strategy == "attention" and attention.schedule.total_epochs == 2
    assert by_name["random/seed-0"].resolved().schedule.start_epoch == 1


@pytest.mark.parametrize(
    "arms, evaluations, expected",
    [
        ("[{name: ''}]", "[]", "arm name ''"),
        ("[{name: '.'}]", "[]", "arm name '.'"),
        ("[{name: '..'}]", "[]", "arm name '..'"),
        ("[{name: a/b}]", "[]", "arm name 'a/b'"),
        ("[{name: a}]", "[{name: '..', config: probe.yaml}]", "evaluation name '..'"),
        (
            "[{name: a}]",
            "[{name: knn, config: probe.yaml, fractions: [0.5]}, {name: knn-f0.5, config: probe.yaml}]",
            "share the folder",
        ),
        (
            "[{name: a}]",
            "[{name: knn, config: probe.yaml, fractions: [0.2500001, 0.2500002]}]",
            "share the folder",
        ),
    ],
)
def test_study_folders_are_plain_names_and_never_shared(tmp_path, capsys, arms, evaluations, expected):
    study = write_study(tmp_path)
    study.write_text(f"out_dir: {tmp_path / 'out'}\narms: {arms}\nevaluations: {evaluations}\n")
    assert main(["study", str(study), "--dry-run"]) == 1
    assert expected in capsys.readouterr().err


def test_holm_tost_and_power_have_their_textbook_values():
    # Holm: sorted p 0.01, 0.02, 0.04 times 3, 2, 1, made monotone.
    assert holm({"a": 0.04, "b": 0.01, "c": 0.02, "d": None}) == pytest.approx(
        {"a": 0.04, "b": 0.03, "c": 0.04, "d": None}
    )
    difference = paired_difference({0: 1.1, 1: 1.2, 2: 0.9, 3: 1.0}, {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    # d = 0.1, 0.2, -0.1, 0.0: mean 0.05, sd 0.1291, se 0.06455, t = 0.7746 on 3 df -> p = 0.4950
    assert difference["p"] == pytest.approx(0.4950, abs=1e-3) and difference["sd"] == pytest.approx(
        0.1291, abs=1e-4
    )
    # TOST within ±0.3: max(sf((0.05 + 0.3) / se), cdf((0.05 - 0.3) / se)) on 3 df = 0.0152
    assert equivalence_p(difference, 0.3) == pytest.approx(0.0152, abs=1e-3)
    assert equivalence_p(difference, 0.05) == pytest.approx(0.5)  # the mean on the margin
    # MDE = (t(0.975, 3) + t(0.8, 3)) sd / sqrt(4) = (3.1824 + 0.9785) * 0.1291 / 2
    assert mde(0.1291, 4) == pytest.approx(4.1609 * 0.1291 / 2, rel=1e-3)
    assert mde(0.1291, 4, comparisons=5) > mde(0.1291, 4)
    needed = seeds_needed(0.1291, 0.1)
    assert mde(0.1291, needed) <= 0.1 < mde(0.1291, needed - 1)


def test_with_several_bases_the_units_are_the_bases():
    baseline = {"b0-s0": 1.0, "b0-s1": 1.0, "b1-s0": 2.0, "b1-s1": 2.0}
    arm = {"b0-s0": 1.1, "b0-s1": 1.3, "b1-s0": 2.0, "b1-s1": 2.2}
    difference = paired_difference(arm, baseline)
    assert difference["n"] == 2 and difference["replicates"] == 4  # base means 0.2 and 0.1
    assert difference["mean"] == pytest.approx(0.15) and difference["sd"] == pytest.approx(math.sqrt(0.005))
    one_base = paired_difference({"b0-s0": 1.1, "b0-s1": 1.3}, {"b0-s0": 1.0, "b0-s1": 1.0})
    assert one_base["n"] == 2  # one base: over its replicates (conditional on it)


def _tables() -> StudyTables:
    controls = {"attn": "random", "noisy": "random"}
    tables = StudyTables(["random", "attn", "noisy"], ["s0", "s1", "s2"], controls, {"top1": 2.0})
    tables.values = {
        "probe-f0.1: top1": {
            "random": {"s0": 30.0, "s1": 32.0, "s2": 31.0},
            "attn": {"s0": 35.0, "s1": 37.1, "s2": 35.9},  # +5 at a tenth of the data
            "noisy": {"s0": 30.1, "s1": 31.9, "s2": 31.05},  # +0.02: equivalent within 2
        },
        "probe: top1": {
            "random": {"s0": 50.0, "s1": 51.0, "s2": 52.0},
            "attn": {"s0": 51.0, "s1": 52.0, "s2": 53.0},  # +1 with all of it
            "noisy": {"s0": 50.0, "s1": 51.0, "s2": 52.0},
        },
    }
    tables.fractions = {"probe": {0.1: "probe-f0.1", 1.0: "probe"}}
    return tables


def test_tables_give_verdicts_power_and_the_low_data_contrast():
    tables = _tables()
    from guidedmae.study.tables import _add_contrasts

    _add_contrasts(tables)
    contrast = tables.values["probe f0.1-f1: top1"]
    assert contrast["attn"] == pytest.approx({"s0": -16.0, "s1": -14.9, "s2": -17.1})
    compared = comparisons(tables)
    assert compared["probe-f0.1: top1"]["attn"]["verdict"] == "different"
    assert compared["probe-f0.1: top1"]["noisy"]["verdict"] == "equivalent ±2"
    # The interaction: attn gains 5 - 1 = 4 more points at a tenth of the data than with all of it.
    interaction = compared["probe f0.1-f1: top1"]["attn"]
    assert interaction["mean"] == pytest.approx(4.0) and interaction["verdict"] == "different"
    # Holm over the two arms: the smaller p doubled.
    first = compared["probe-f0.1: top1"]
    smaller = min(first["attn"]["p"], first["noisy"]["p"])
    assert min(first["attn"]["p_holm"], first["noisy"]["p_holm"]) == pytest.approx(2 * smaller)
    rows = {row["metric"]: row for row in power(tables, compared)}
    assert rows["probe-f0.1: top1"]["margin"] == 2.0 and rows["probe-f0.1: top1"]["needed"] >= 2
    assert rows["probe-f0.1: top1"]["mde"] == pytest.approx(
        mde(rows["probe-f0.1: top1"]["sd"], 3, comparisons=2)
    )
    text = format_markdown(tables)
    assert "equivalent ±2" in text and "units for the margin" in text


def test_the_dry_run_sizes_the_seeds_from_finished_pilot_runs(tmp_path, capsys):
    study = write_study(tmp_path)
    study.write_text(study.read_text() + "margins: {eval_random/loss: 0.001}\n")
    assert main(["study", str(study), "evaluations=[]"]) == 0
    capsys.readouterr()
    assert main(["study", str(study), "evaluations=[]", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("| pretrain: eval_random/loss |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    # metric | sd | n (units) | k (arms compared) | MDE | margin | units for the margin
    assert cells[2] == "2" and cells[3] == "1" and cells[5] == "0.001"
    assert cells[6].isdigit() or cells[6] == "> 1000"
    tables = collect(*load_planned(study, ["evaluations=[]"]))
    assert set(tables.replicates) == {"s0", "s1"}
    assert Path(tmp_path / "out").is_dir()


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "base={config: '', checkpoint: /nonexistent/weights.pth}",
            "base.checkpoint /nonexistent/weights.pth does not exist",
        ),
        ("launch.timeout_min=0", "launch.timeout_min=0"),
        ("launch.launcher=slurm", "needs Slurm's sbatch"),
    ],
)
def test_what_would_fail_every_run_is_refused_before_the_study_starts(tmp_path, capsys, override, expected):
    study = write_study(tmp_path)
    assert main(["study", str(study), override]) == 1
    assert expected in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    study = write_study(tmp_path)
    (tmp_path / "out").write_text("not a folder")
    assert main(["study", str(study), "--dry-run"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_second_study_on_the_same_folder_is_refused(tmp_path, capsys):
    from guidedmae.infra.files import lock_folder

    study = write_study(tmp_path)
    (tmp_path / "out").mkdir()
    with lock_folder(tmp_path / "out", "study", "out_dir"):
        assert main(["study", str(study)]) == 1
    assert "is in use by another study" in capsys.readouterr().err
    assert not (tmp_path / "out" / "base").exists()


def test_a_dry_run_read_in_part_ends_quietly(tmp_path):
    study = write_study(tmp_path)
    command = f"{sys.executable} -m guidedmae study {study} --dry-run | head -n 1"
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (
        result.stdout.startswith("| run |")
        and "Error" not in result.stderr
        and "Traceback" not in result.stderr
    )


def _as_a_terminal_job() -> None:
    """SIGINT at its default in the study's process, as in a terminal's foreground job. A process started by a
    non-interactive shell's `&` (as CI may start the tests) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt: the study would rightly run on, as any program started that way does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _local_study(tmp_path: Path, base_epochs: int = 1) -> Path:
    study = write_study(tmp_path)
    text = study.read_text().replace("launch: {launcher: debug}", "launch: {launcher: local}")
    study.write_text(text.replace("[schedule.total_epochs=1]", f"[schedule.total_epochs={base_epochs}]"))
    return study


def _processes_below(pid: int) -> list[int]:
    below = _children(pid)
    for child in below:  # grows as it goes
        below += _children(child)
    return below


def test_ctrl_c_stops_the_study_and_every_process_of_its_runs(tmp_path):
    # A base of 400 epochs (minutes): whatever stops it is the study.
    study, out = _local_study(tmp_path, base_epochs=400), tmp_path / "out"
    log = tmp_path / "study.log"  # a file, not a pipe: a run left going would hold a pipe open
    process = subprocess.Popen(
        [sys.executable, "-m", "guidedmae", "study", str(study)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=_as_a_terminal_job,
    )
    runs = []
    try:
        wait_for(lambda: logged_steps(out / "base") >= 1, "the base run's first step", timeout=300)
        runs = _processes_below(process.pid)  # the job's controller and the run it started
        run = json.loads((out / "base" / LOCK_FILE).read_text())["pid"]
        assert run in runs and _alive(run)
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the group
        assert process.wait(timeout=120) == 130
        error = log.read_text()
        assert "interrupted" in error and "Traceback" not in error
        # The study waits for its runs to end before it exits: a few seconds for the system to reap them.
        wait_for(lambda: not any(map(_alive, runs)), "the run's processes to end with the study", timeout=5)
    finally:
        for pid in filter(_alive, runs):
            os.kill(pid, signal.SIGKILL)
    assert logged_steps(out / "base") < 400 * 8  # stopped, not finished
    with lock_folder(out / "base", "run", "out_dir"):  # free: the study can go on from where it stopped
        pass


def test_a_run_that_does_not_stop_when_asked_is_killed_with_its_processes(monkeypatch):
    # A run still starting passes over SIGTERM (submitit's job environment): the study kills it, and what it
    # started, after the grace period.
    from types import SimpleNamespace

    from guidedmae.study import launch

    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    controller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    below = int(controller.stdout.readline())
    try:
        monkeypatch.setattr(launch, "STOP_GRACE_SECONDS", 1.0)
        launch._stop([SimpleNamespace(_process=controller)])
        assert controller.poll() == -signal.SIGKILL
        wait_for(lambda: not _alive(below), "the process the run started to end", timeout=5)
    finally:
        for pid in (controller.pid, below):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_studys_orphaned_run_is_waited_for_and_never_run_twice(tmp_path):
    # SIGKILL leaves a local run going on alone; the study run again says what it waits for, and does not run it
    # again once it has finished.
    study, out = _local_study(tmp_path), tmp_path / "out"
    small = ["seeds=[0]", "evaluations=[]"]
    command = [sys.executable, "-m", "guidedmae", "study", str(study), *small]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: logged_steps(out / "base") >= 1, "the base run's first step", timeout=300)
    orphan = json.loads((out / "base" / LOCK_FILE).read_text())["pid"]
    os.kill(orphan, signal.SIGSTOP)  # held until the study run again has said what it waits for
    try:
        first.kill()
        first.wait()
        log = (tmp_path / "again.log").open("w")
        again = subprocess.Popen(
            [*command, "--launcher", "debug"], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
        # Its first line (120 s: a guard against a study that waits without a word, not a timing assumption).
        waiting = again.stdout.readline() if select.select([again.stdout], [], [], 120)[0] else ""
    finally:
        os.kill(orphan, signal.SIGCONT)
    if not waiting:
        again.kill()
    assert waiting.startswith(f"waiting for base: its folder is held by pid {orphan} on "), waiting
    printed = waiting + again.communicate(timeout=300)[0]
    assert again.returncode == 0, (tmp_path / "again.log").read_text()[-2000:]
    assert "base: skipped: finished by the process waited for" in printed
    assert "failed" not in printed and "blocked" not in printed
    events = [record.get("event") for record in read_metrics(out / "base" / "metrics.jsonl")]
    assert events.count("start") == 1 and events.count("eval") == 1  # trained and evaluated once
    assert (out / "attention" / "seed-0" / "results.json").is_file()


def test_ctrl_c_during_a_local_submission_arrives_once_the_run_is_recorded():
    """A Ctrl-C while a local run is submitted waits (pending) until the run is among those the study stops;
    the run's processes are started with Ctrl-C blocked, so only the study sees it."""
    from types import SimpleNamespace

    from guidedmae.study.launch import _ctrl_c_held

    study = SimpleNamespace(launch=SimpleNamespace(launcher="local"))
    recorded = []
    check = "import signal; print(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))"
    # Python's own Ctrl-C handler, as a study in a terminal has it: the suite itself may have been started
    # by a shell's `&` (as CI starts it), which leaves SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), _ctrl_c_held(study):
            os.kill(os.getpid(), signal.SIGINT)
            child = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
            recorded.append(child.stdout.strip())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert recorded == ["True"]


def test_ctrl_c_ignored_by_the_study_stays_ignored_while_a_run_is_submitted():
    """A study started with Ctrl-C ignored (a shell's `&`) is not stopped by one that lands mid-submission."""
    from types import SimpleNamespace

    from guidedmae.study.launch import _ctrl_c_held

    study = SimpleNamespace(launch=SimpleNamespace(launcher="local"))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _ctrl_c_held(study):
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sanity_arms_stand_alone_and_stay_out_of_the_power_of_the_design():
    # Two compared arms and one sanity check, 4 units: the sanity arm's p is its own, the compared arms'
    # are Holm-corrected over 2, and the power pools the compared arms' spread only.
    values = {
        "baseline": {f"s{i}": 10.0 for i in range(4)},
        "guided": {f"s{i}": 10.0 + d for i, d in enumerate((1.0, 1.2, 0.8, 1.1))},
        "other": {f"s{i}": 10.0 + d for i, d in enumerate((0.1, -0.1, 0.2, 0.0))},
        "longer": {f"s{i}": 10.0 + d for i, d in enumerate((5.0, -5.0, 6.0, -4.0))},
    }
    tables = StudyTables(
        list(values), [f"s{i}" for i in range(4)], {"guided": "baseline", "other": "baseline",
        "longer": "baseline"}, sanity={"longer"}, values={"m": values},
    )  # fmt: skip
    compared = comparisons(tables)["m"]
    assert compared["longer"]["p_holm"] == compared["longer"]["p"]
    raw = {arm: compared[arm]["p"] for arm in ("guided", "other")}
    assert holm(raw) == {arm: compared[arm]["p_holm"] for arm in raw}
    (row,) = power(tables, comparisons(tables))
    pooled = math.sqrt((compared["guided"]["sd"] ** 2 + compared["other"]["sd"] ** 2) / 2)
    assert row["comparisons"] == 2 and row["sd"] == pytest.approx(pooled)
    assert row["mde"] == pytest.approx(mde(pooled, 4, 2))
    assert (
        "over those of the 2 compared arms that have one (longer: sanity checks, uncorrected)"
        in format_markdown(tables, compared={"m": compared})
    )


def test_headroom_measures_the_baseline_above_random_weights_in_mdes():
    from guidedmae.study.headroom import format_headroom, headroom

    units = [f"b{i}-s0" for i in range(4)]
    values = {
        "probe: miou": {
            "random": dict(zip(units, (40.0, 41.0, 39.0, 40.5))),
            "guided": dict(zip(units, (40.2, 41.4, 39.1, 40.4))),
            "floor": dict(zip(units, (20.0, 20.0, 20.0, 20.0))),
        },
        "probe: rmse": {
            "random": dict(zip(units, (0.8, 0.82, 0.81, 0.8))),
            "guided": dict(zip(units, (0.79, 0.83, 0.8, 0.81))),
            "floor": dict(zip(units, (0.81, 0.83, 0.8, 0.8))),
        },
    }
    tables = StudyTables(["random", "guided", "floor"], units, {"guided": "random", "floor": "random"},
                         sanity={"floor"}, floor="floor", values=values)  # fmt: skip
    rows = {row["metric"]: row for row in headroom(tables, power(tables, comparisons(tables)))}
    miou, rmse = rows["probe: miou"], rows["probe: rmse"]
    assert miou["gap"] == pytest.approx(20.125) and miou["room"] and miou["gap_in_mdes"] > 5
    assert miou["best"] == pytest.approx(40.275) and miou["to_bound"] == pytest.approx(100 - 40.275)
    assert not rmse["room"] and rmse["to_bound"] == pytest.approx(0.8075)  # errors are bounded by 0
    # Random weights far better than the trained baseline: a gap of many MDEs, but the wrong way.
    worse = {
        arm: {unit: 100 - value for unit, value in by_unit.items()}
        for arm, by_unit in values["probe: miou"].items()
    }
    worse_tables = replace(tables, values={"probe: miou": worse})
    [row] = headroom(worse_tables, power(worse_tables, comparisons(worse_tables)))
    assert row["gap_in_mdes"] < -5 and not row["room"]
    text = format_headroom(list(rows.values()), "floor")
    assert "| probe: miou | 20 | +20.1 [" in text and "| yes |" in text and "| no |" in text
