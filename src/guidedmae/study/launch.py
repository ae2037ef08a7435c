"""Running a study's plan through submitit's local or Slurm executor, or in this process (debug).

The study command stays up while its runs go (start it in tmux/screen on a cluster's login node): a run
is submitted when every run it depends on has finished, at most `launch.parallel` at a time (local: each
with its share of the cores). A failed run is reported with its log and blocks only the runs that need
its weights; the others go on. The command can be started again at any time: finished runs are skipped,
interrupted ones resume; a run that a killed study left going is waited for (and not run again if it
finishes). Ctrl-C stops the study and, before it exits, its local runs.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from tqdm import tqdm

from guidedmae.infra.files import FolderBusy, lock_folder
from guidedmae.study.plan import Run, StudyConfig

if TYPE_CHECKING:
    import submitit  # imported where it is used: a study without runs to submit never loads it

__all__ = ["Outcome", "execute_run", "launch", "run_holder"]

POLL_SECONDS = 2.0
# How long a local run has to stop after the study passes it SIGTERM before it is killed: a step and a
# checkpoint write, whatever the run is doing between two of them.
STOP_GRACE_SECONDS = 10.0


def _stopped_by_the_study(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("stopped by the study")


def execute_run(kind: str, config: str, overrides: list[str]) -> dict:
    """What a submitted job runs: the pretraining or fine-tuning of one run; returns its scores.
    Under Slurm with several GPUs per node, each task joins the run's process group from submitit's
    environment (torchrun's variables)."""
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit.helpers

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        # submitit's job environment passes over SIGTERM (on a cluster it comes before a requeue); a local run
        # gets it only from the study stopping (through its controller), and stops as on Ctrl-C.
        signal.signal(signal.SIGTERM, _stopped_by_the_study)
    from guidedmae.config import FinetuneConfig, PretrainConfig, load_config
    from guidedmae.engine.finetune import finetune
    from guidedmae.engine.pretrain import pretrain

    if kind == "pretrain":
        result = pretrain(load_config(PretrainConfig, config, overrides))
    else:
        result = finetune(load_config(FinetuneConfig, config, overrides))
    if not result.weights_identical:
        raise RuntimeError(f"{result.out_dir}: the processes ended with different weights")
    return result.scores


@dataclass
class Outcome:
    run: Run
    # finished (now), skipped (finished before, or by a process waited for), failed, blocked (a dependency
    # failed); waiting: reported once while another process holds the run's folder
    state: str
    seconds: float = 0.0
    log: str = ""  # where the run's output went (failed runs)
    error: str = ""


class _InProcessJob:
    """A run done in this process at submission (launcher=debug: tests, debugging with breakpoints)."""

    class paths:  # noqa: N801 - the shape of submitit's job.paths
        stderr = "(this process's output)"

    def __init__(self, function: Callable, *args: object) -> None:
        try:
            self._result, self._error = function(*args), None
        except Exception as error:  # reported by the study as the run's failure
            self._result, self._error = None, error

    def done(self) -> bool:
        return True

    def result(self) -> object:
        if self._error is not None:
            raise self._error
        return self._result


class _InProcessExecutor:
    def submit(self, function: Callable, *args: object) -> _InProcessJob:
        return _InProcessJob(function, *args)


def _executor(study: StudyConfig, logs: Path) -> "submitit.AutoExecutor | _InProcessExecutor":
    launch = study.launch
    if launch.launcher == "debug":
        return _InProcessExecutor()
    import submitit

    executor = submitit.AutoExecutor(folder=logs, cluster=launch.launcher)
    parameters = {"timeout_min": launch.timeout_min, "name": "guidedmae-study"}
    if launch.launcher == "slurm":
        tasks = max(1, launch.gpus_per_node)
        parameters.update(nodes=launch.nodes, tasks_per_node=tasks, gpus_per_node=launch.gpus_per_node)
        if launch.partition:
            parameters["slurm_partition"] = launch.partition
        if launch.cpus_per_task:
            parameters["cpus_per_task"] = launch.cpus_per_task
        if launch.account:
            parameters["slurm_account"] = launch.account
    executor.update_parameters(**parameters)
    return executor


def _threads(study: StudyConfig, sharing: int) -> list[str]:
    """Local runs share this machine's cores among the `sharing` runs that will run at once (a base run
    that everything waits for gets them all); elsewhere each run sizes itself."""
    if study.launch.launcher != "local":
        return []
    return [f"run.threads={max(1, (os.cpu_count() or 1) // max(1, sharing))}"]


def _reason(error: Exception) -> str:
    """The line that says why a run failed. submitit wraps a job's error in its traceback text; its
    last `SomeError: message` line is the run's own (ours are one line, see guidedmae.cli)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [
        line for line in lines if re.match(r"^[\w.]*(Error|Exception|Busy|Gone|Checkpoint)\b.*: ", line)
    ]
    return (raised or lines or [type(error).__name__])[-1]


def _can_start(run: Run, outcomes: dict[str, Outcome]) -> bool:
    """Every run `run` depends on has finished (now or before)."""
    return all(
        outcomes.get(name) and outcomes[name].state in ("finished", "skipped") for name in run.depends_on
    )


@contextmanager
def _ctrl_c_held(study: StudyConfig) -> Iterator[None]:
    """Ctrl-C held while a local run is submitted and recorded. The run's processes inherit SIGINT blocked
    and never see it: a terminal's Ctrl-C reaches every process of its group, and the study, not each job,
    stops the runs (see _stop), so nothing prints a traceback. The study's own Ctrl-C (whichever of its
    threads the signal lands on) is noted and raised once the run is recorded among those it stops. A study
    started with Ctrl-C ignored (by a shell's `&`) keeps ignoring it here too."""
    if (
        study.launch.launcher != "local"
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield
        return
    noted = []
    previous_handler = signal.signal(signal.SIGINT, lambda number, frame: noted.append(number))
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # what forked children inherit
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        signal.signal(signal.SIGINT, previous_handler)
    if noted:
        raise KeyboardInterrupt


def run_holder(run: Run) -> dict | None:
    """What the process holding the run's folder recorded (host, pid, started; {} if unknown), or None when
    no process holds it. Another process holding it is a run a killed study left going: the run is
    submitted once that process ends, if it did not finish, instead of failing as busy."""
    if not run.out_dir().is_dir():
        return None
    try:
        with lock_folder(run.out_dir(), "run", "out_dir"):
            return None
    except FolderBusy as busy:
        return busy.holder or {}


def describe_holder(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (Linux's /proc; elsewhere `pid` alone)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended meanwhile
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, ...
            parents[int(stat.parent.name)] = int(fields[1])
    tree = [pid]
    for member in tree:  # grows as it goes: breadth first
        tree += [child for child, parent in parents.items() if parent == member]
    return tree


def _stop(jobs: list) -> None:
    """Stop submitted runs and, for local ones, wait until their processes are gone. A local job's
    controller passes SIGTERM on to its run, which stops at once (see execute_run); one that has not
    stopped after STOP_GRACE_SECONDS (still starting: submitit passes over SIGTERM until the run begins)
    is killed with every process below it. A run stopped or killed between writes loses nothing (every
    file is written whole) and resumes when the study runs again. Slurm jobs are cancelled."""
    controllers = []
    for job in jobs:
        process = getattr(job, "_process", None)  # submitit's LocalJob keeps its controller here
        if process is not None:
            process.send_signal(signal.SIGTERM)
            controllers.append(process)
        elif hasattr(job, "cancel"):
            job.cancel(check=False)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in controllers:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for pid in _process_tree(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """A further Ctrl-C while the study stops its runs would leave them going: it is ignored meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def launch(
    study: StudyConfig,
    runs: list[Run],
    logs: Path,
    report: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run every run not finished yet, each after its dependencies; returns every run's outcome."""
    outcomes: dict[str, Outcome] = {}
    pending = []
    for run in runs:
        if run.status() == "finished":
            outcomes[run.name] = Outcome(run, "skipped")
        else:
            pending.append(run)
    executor = None  # made at the first submission
    running: dict[str, tuple] = {}  # name -> (run, job, start time)
    waited: set[str] = set()  # runs whose folder another process held (reported once)
    bar = tqdm(total=len(runs), initial=len(outcomes), unit="run", desc="study", file=sys.stderr)
    try:
        while pending or running:
            ready = [run for run in pending if _can_start(run, outcomes)]
            sharing = min(study.launch.parallel, len(running) + len(ready))
            held = False
            for run in list(pending):
                failed = [
                    name
                    for name in run.depends_on
                    if outcomes.get(name) and outcomes[name].state in ("failed", "blocked")
                ]
                if failed:
                    outcomes[run.name] = Outcome(run, "blocked", error=f"needs {', '.join(failed)}")
                elif len(running) < study.launch.parallel and _can_start(run, outcomes):
                    holder = run_holder(run)
                    if holder is not None:
                        held = True
                        if run.name not in waited:
                            waited.add(run.name)
                            report(Outcome(run, "waiting", error=describe_holder(holder)))
                        continue
                    if run.status() == "finished":  # by the process waited for: never run twice
                        outcomes[run.name] = Outcome(
                            run, "skipped", error="finished by the process waited for"
                        )
                    else:
                        overrides = [*run.overrides, *_threads(study, sharing)]
                        executor = executor or _executor(study, logs)
                        with _ctrl_c_held(study):
                            job = executor.submit(execute_run, run.kind, run.config, overrides)
                            running[run.name] = (run, job, time.monotonic())
                else:
                    continue
                pending.remove(run)
                if run.name in outcomes:
                    report(outcomes[run.name])
                    bar.update()
            for name, (run, job, start) in list(running.items()):
                if not job.done():
                    continue
                del running[name]
                try:
                    job.result()
                    outcomes[name] = Outcome(run, "finished", time.monotonic() - start)
                except Exception as error:  # the run's own error, as the job recorded it
                    outcomes[name] = Outcome(
                        run, "failed", time.monotonic() - start, str(job.paths.stderr), _reason(error)
                    )
                report(outcomes[name])
                bar.update()
            if running or held:
                time.sleep(POLL_SECONDS)
    except BaseException:
        # The runs under way stop with the study, however it stops (a local job would go on alone, holding its
        # folder).
        with _ctrl_c_ignored():
            _stop([job for _, job, _ in running.values()])
        raise
    finally:
        bar.close()
    return [outcomes[run.name] for run in runs]
