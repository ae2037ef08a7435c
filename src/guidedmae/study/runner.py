"""Running a study: check the plan (leaks, stale runs, weights that are missing), launch what is not done,
write the tables.

Running it again skips finished runs and resumes interrupted ones; a started run whose config no
longer matches the study, or that starts from a run that is stale or no longer finished, is refused
(naming the differences) unless redo, which moves the stale folders aside (`<run>.replaced-<time>`), all
or none, and runs them again. A study that would evaluate on data one of its runs trains on is refused
before anything runs. A dry run also prints the power of the finished runs: the smallest difference they
detect, and the seeds a study margin needs.
"""

import copy
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from guidedmae.config import config_to_yaml
from guidedmae.config.presets import find_config
from guidedmae.infra.files import atomic_write, lock_folder, make_folder
from guidedmae.infra.run_log import METRICS, run_seconds
from guidedmae.study.launch import Outcome, describe_holder, launch, run_holder
from guidedmae.study.leaks import check_no_leak
from guidedmae.study.merge import write_provenance
from guidedmae.study.plan import LOGS, REPLACED, STUDY_FILE, Run, StudyConfig, load_study, plan, stale_runs
from guidedmae.study.study_file import ArmDefaults, ArmSpec, BaseSpec, EvaluationSpec
from guidedmae.study.tables import collect, format_markdown, format_power, write_tables

__all__ = ["STUDY_FILE", "load_planned", "run_study"]


def load_planned(path: str | Path, overrides: Sequence[str] = ()) -> tuple[StudyConfig, list[Run]]:
    """The study of a file (or of a study folder holding study.yaml) and its planned runs."""
    path = Path(path)
    if path.is_dir():
        path = path / STUDY_FILE
    study, folder = load_study(path, overrides)
    return study, plan(study, folder)


def _role(run: Run) -> str:
    """Runs of one role take about as long: the same config with the same study settings."""
    return f"{run.kind}:{run.config}:{run.evaluation}:{run.fraction}"


def _estimates(runs: list[Run]) -> dict[str, float]:
    """Seconds per role, from the runs of that role already finished."""
    durations: dict[str, list[float]] = {}
    for run in runs:
        seconds = run_seconds(run.out_dir() / METRICS) if run.status() == "finished" else None
        if seconds:
            durations.setdefault(_role(run), []).append(seconds)
    return {role: sum(values) / len(values) for role, values in durations.items()}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _print_plan(runs: list[Run], stale: dict[str, list[str]]) -> None:
    estimates = _estimates(runs)
    total, unknown = 0.0, 0
    print("| run | kind | status | after | estimate |\n|---|---|---|---|---|")
    for run in runs:
        status = "stale" if run.name in stale else run.status()
        estimate = estimates.get(_role(run))
        if status != "finished":
            total += estimate or 0.0
            unknown += estimate is None
        shown = "-" if status == "finished" else _minutes(estimate) if estimate else "?"
        print(f"| {run.name} | {run.kind} | {status} | {', '.join(run.depends_on) or '-'} | {shown} |")
    todo = sum(run.name in stale or run.status() != "finished" for run in runs)
    print(
        f"\n{len(runs)} runs, {todo} to do; estimated {_minutes(total)} run after run"
        + (f" (+ {unknown} runs with no finished run of their kind to estimate from)" if unknown else "")
    )


def _inside(folder: Path, other: Path) -> bool:
    return other != folder and other in folder.parents


def _move_stale_aside(runs: list[Run], stale: dict[str, list[str]]) -> list[tuple[Run, Path, list[str]]]:
    """Move the folders of the stale runs aside, all or none: only the outermost ones (an evaluation's
    folder inside its stale arm's goes with it), each to a name of its own (`<folder>.replaced-<time>`), and
    a move that fails puts back those made before it. Refused, before anything moves, while another
    process (a run a killed study left going) holds one of them. Returns (run, where its folder went,
    the stale runs that went with it)."""
    folders = {run.name: run.out_dir() for run in runs if run.name in stale}
    for run in runs:
        folder = run.out_dir()
        if any(folder == moved or _inside(folder, moved) for moved in folders.values()):
            holder = run_holder(run)
            if holder is not None:
                raise ValueError(
                    f"{run.name} is stale, but its folder {folder} is in use by another process "
                    f"({describe_holder(holder)}); wait for it to end, then run the study again"
                )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moves = []
    for run in runs:
        source = folders.get(run.name)
        if source is None or any(_inside(source, other) for other in folders.values()):
            continue
        target, number = source.with_name(f"{source.name}{REPLACED}{stamp}"), 1
        while os.path.lexists(target):
            number += 1
            target = source.with_name(f"{source.name}{REPLACED}{stamp}-{number}")
        inner = [name for name, folder in folders.items() if _inside(folder, source)]
        moves.append((run, source, target, inner))
    moved = []
    try:
        for _, source, target, _ in moves:
            source.rename(target)
            moved.append((source, target))
    except OSError as error:
        for back, aside in reversed(moved):
            aside.rename(back)
        raise OSError(
            f"cannot move the stale run folder {source} aside to {target} ({error.strerror or error}); "
            "nothing was moved"
        ) from error
    return [(run, target, inner) for run, _, target, inner in moves]


def _report(outcome: Outcome, done: list[int], total: int) -> None:
    if outcome.state == "waiting":
        print(
            f"waiting for {outcome.run.name}: its folder is held by {outcome.error} (a run an earlier study "
            "left going); it is taken up when that process ends, unless it finished",
            flush=True,
        )
        return
    done[0] += 1
    line = f"[{done[0]}/{total}] {outcome.run.name}: {outcome.state}"
    if outcome.state == "finished":
        line += f" in {_minutes(outcome.seconds)}"
    elif outcome.state == "failed":
        line += f": {outcome.error} (log: {outcome.log})"
    elif outcome.state in ("blocked", "skipped"):
        line += f": {outcome.error}"
    print(line, flush=True)


def _check_before_running(study: StudyConfig, runs: list[Run], dry_run: bool) -> None:
    """What would otherwise fail every run separately, or only once the study is under way."""
    weights = {init for run in runs if (init := run.override("model.init")) and not run.depends_on}
    missing = sorted(path for path in weights if not Path(path).is_file())
    if missing:
        raise FileNotFoundError(
            f"base.checkpoint {missing[0]} does not exist; expected the base's weights file"
        )
    if study.launch.launcher == "slurm" and not dry_run and not shutil.which("sbatch"):
        raise ValueError(
            "launch.launcher=slurm needs Slurm's sbatch, which this machine does not have; run the study on "
            "the cluster's login node, or use --launcher local"
        )
    out_dir = Path(study.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir={out_dir} is a file, not a folder; choose another out_dir")
    logs = out_dir / LOGS
    if logs.is_symlink() or (logs.exists() and not logs.is_dir()):
        what = "a symbolic link" if logs.is_symlink() else "a file"
        raise NotADirectoryError(
            f"{logs} is {what}; the study writes its runs' job logs into a folder of its own there: remove it"
        )


def _study_yaml(study: StudyConfig, source: Path) -> str:
    """The resolved study with its config files' paths made absolute, so that it stands alone in its
    folder (shipped configs keep their names: the same on every machine)."""
    study = copy.deepcopy(study)
    folder = source.resolve() if source.is_dir() else find_config("study", source).resolve().parent
    specs: list[BaseSpec | ArmDefaults | ArmSpec | EvaluationSpec] = [
        study.base,
        study.arm_defaults,
        *study.arms,
        *study.evaluations,
    ]
    for spec in specs:
        if spec.config and (folder / spec.config).is_file():
            spec.config = str((folder / spec.config).resolve())
    if study.base.checkpoint:
        study.base.checkpoint = str((folder / study.base.checkpoint).resolve())
    return config_to_yaml(study)


def run_study(path: str | Path, overrides: list[str], dry_run: bool = False, redo: bool = False) -> int:
    """Run what is not done of the study at `path`, then write its tables; returns the exit status
    (1 when runs did not finish). dry_run prints the plan and the power of the finished runs instead."""
    study, runs = load_planned(path, overrides)
    _check_before_running(study, runs, dry_run)
    check_no_leak(runs)  # also loads every run's config: a bad one stops the study here, naming it
    changed = stale_runs(runs)
    if changed and not redo:
        shown = "; ".join(f"{name} ({', '.join(lines[:3])})" for name, lines in changed.items())
        raise ValueError(f"started runs that differ from the study: {shown}; pass --redo to run them again")
    if dry_run:
        _print_plan(runs, changed)
        print("\n" + format_power(collect(study, runs)))
        return 0
    out_dir = make_folder(study.out_dir, "out_dir")
    with lock_folder(out_dir, "study", "out_dir"):
        for each, target, inner in _move_stale_aside(runs, changed):
            with_it = f" (with {', '.join(inner)})" if inner else ""
            print(f"{each.name}: stale, previous run moved to {target}{with_it}")
        study_yaml = _study_yaml(study, Path(path))
        atomic_write(out_dir / STUDY_FILE, lambda file: file.write(study_yaml.encode()))
        earlier = write_provenance(out_dir)
        if earlier:
            print(
                f"note: {out_dir} holds runs of other code ({earlier}); its tables now mix versions, and it "
                "cannot be merged with other parts"
            )
        done = [sum(each.status() == "finished" for each in runs)]
        outcomes = launch(study, runs, out_dir / LOGS, lambda outcome: _report(outcome, done, len(runs)))
    tables = collect(study, runs)
    written = write_tables(tables, out_dir)
    print("\n" + format_markdown(tables))
    print("written: " + ", ".join(str(path) for path in written))
    failed = [outcome for outcome in outcomes if outcome.state in ("failed", "blocked")]
    if failed:
        print(f"{len(failed)} runs did not finish: " + ", ".join(o.run.name for o in failed))
    return 1 if failed else 0
