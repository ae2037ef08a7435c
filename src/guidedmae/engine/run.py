"""The one runner: every training command is a small Job handed to `run_job`.

    result = run_job(PretrainJob(config))            # or FinetuneJob(config), and what comes next

A Job says what is its own: how to build the model, the step module, the training set and the
parameter groups (`build`), how to start from saved weights (`initialize`), how to describe itself,
and what to do after each step and at the end (pictures, evaluations). run_job owns the rest, in order:

    context   = init_distributed(run.device); CPU threads per process; malloc keeps freed memory
    lock      : rank 0 holds out_dir/.lock for the whole run (a second run there stops at once)
    resume    = resolve_resume(config.resume, out_dir)          '' | auto (newest readable) | PATH
    seed      -> parts = job.build(context)                     model, step, data set, parameter groups
    model.init (fresh runs only) -> job.initialize(parts.model, path)
    schedule  = LRSchedule(peak lr of the total batch, steps per epoch of the data set)
    optimizer = AdamW(parts.param_groups); loss scaler; per-rank generators
    state     = resume(checkpoint) or the start of the run's part of the schedule
    DDP, torch.compile
    rank 0: config.yaml, events init / resume_skipped / resumed / start
    train(...)                                                  engine.loop, job.after_step on every rank
    job.finish(...) -> scores; weights check; results.json (the mark of a finished run)
"""

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from guidedmae.config import config_to_dict, config_to_yaml, save_config
from guidedmae.data.datasets import derived_generator
from guidedmae.engine.checkpoint import LAST, resolve_resume
from guidedmae.engine.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_object,
    close_distributed,
    init_distributed,
    threads_per_process,
    weights_digest,
)
from guidedmae.engine.logging import METRICS, RunLogger
from guidedmae.engine.loop import LoopSettings, LoopState, TrainingJob, resume, steps_per_epoch, train
from guidedmae.engine.optim import build_optimizer, peak_lr
from guidedmae.engine.precision import grad_scaler
from guidedmae.engine.run_folder import lock_run_folder, remove_stale_temps
from guidedmae.engine.schedule import LRSchedule
from guidedmae.engine.trackers import build_trackers
from guidedmae.files import FolderBusy, write_json
from guidedmae.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
from guidedmae.models.checkpoints import UnreadableCheckpoint
from guidedmae.models.pretrained import InitReport

__all__ = ["CONFIG_FILE", "RESULTS", "Job", "JobParts", "RunResult", "own_run_folder", "run_job"]

CONFIG_FILE = "config.yaml"
RESULTS = "results.json"
# Independent random streams derived from the run seed: derived_generator(seed, rank, stream). The step
# stream drives the step's own draws (masks, mixup); the torch stream seeds the global generator, from
# which stochastic depth draws; jobs may derive further streams from 3 on (e.g. pictures).
STEP_STREAM, TORCH_STREAM = 1, 2


@dataclass
class JobParts:
    """What a job builds for the runner."""

    model: nn.Module  # what checkpoints hold under "model"
    step: nn.Module  # (batch, generator, progress) -> output with .losses["total"]
    dataset: Dataset  # the training set
    param_groups: list[dict]  # AdamW groups over every trained parameter (weight decay, lr scales)
    saved: dict[str, nn.Module] = field(default_factory=dict)  # state kept beside the model, by key


class Job(ABC):
    """A training command's own parts; see the module docstring."""

    kind: ClassVar[str]  # "pretraining", "fine-tuning": names the run in its log

    def __init__(self, config) -> None:
        self.config = config

    @abstractmethod
    def build(self, context: DistributedContext) -> JobParts:
        """The model (random init, on the CPU), the step, the training set and the parameter groups.
        Called after seeding, on every rank: every rank builds the same initial weights."""

    @abstractmethod
    def initialize(self, model: nn.Module, path: str) -> InitReport:
        """Load the weights of `path` (model.init) into a fresh run's model."""

    @abstractmethod
    def describe(self, training: TrainingJob) -> str:
        """What the run is, in one line for the start event (after its size and devices)."""

    def after_step(self, training: TrainingJob, state: LoopState, logger: RunLogger) -> None:  # noqa: B027
        """After every optimizer step, on every rank (collective work allowed); nothing by default."""

    def finish(self, training: TrainingJob, state: LoopState, logger: RunLogger) -> dict:
        """After the last step, on every rank: the run's final scores ({} if it has none)."""
        return {}


@dataclass
class RunResult:
    out_dir: Path
    steps: int  # optimizer steps of the whole run (resumed parts included)
    weights_identical: bool  # every rank ended with the same weights (and saved state)
    scores: dict  # the job's final evaluation, also in results.json ({} when it has none)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / LAST

    @property
    def metrics(self) -> Path:
        return self.out_dir / METRICS

    @property
    def results(self) -> Path:
        return self.out_dir / RESULTS


def run_job(job: Job) -> RunResult:
    """Run (or resume) the job's training; returns where its outputs are and its final scores."""
    context = init_distributed(job.config.run.device)
    try:
        with own_run_folder(Path(job.config.out_dir), context):
            return _run(job, context)
    finally:
        close_distributed(context)


@contextmanager
def own_run_folder(out_dir: Path, context: DistributedContext) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the whole run (and cleans what killed runs left there);
    every rank learns whether it got it, so that all stop together when it did not."""
    with ExitStack() as lock:
        refusal = None
        if context.is_main:
            try:
                lock.enter_context(lock_run_folder(out_dir))
                remove_stale_temps(out_dir)
            except OSError as error:
                refusal = error
        message = broadcast_object(context, None if refusal is None else str(refusal))
        if refusal is not None:
            raise refusal
        if message is not None:
            raise FolderBusy(message)
        yield


def _write_run_config(config, out_dir: Path, resumed_step: int | None) -> Path:
    """config.yaml of the run; a resume with a different config writes config-resumed-<step>.yaml."""
    path = out_dir / CONFIG_FILE
    if resumed_step is not None and path.is_file() and path.read_text() != config_to_yaml(config):
        path = out_dir / f"config-resumed-{resumed_step:08d}.yaml"
    return save_config(config, path)


def _verify_identical_weights(context: DistributedContext, training: TrainingJob, logger: RunLogger) -> bool:
    """Compare every rank's digest of the model, and of the state saved beside it; the result goes to
    the log (with the model digests, which a checkpoint's weights can be checked against)."""
    local = (weights_digest(training.model), *(weights_digest(module) for module in training.saved.values()))
    gathered = all_gather_objects(context, local)
    identical = len(set(gathered)) == 1
    digests = [digest[0] for digest in gathered]
    message = (
        f"weights check: all {context.world_size} processes hold identical weights (sha256 {digests[0][:16]}...)"
        if identical
        else f"WARNING: the processes hold different weights: {gathered}"
    )
    logger.event(
        "weights_check", message, identical=identical, world_size=context.world_size, digests=digests
    )
    return identical


def _log_start(logger: RunLogger, job: Job, training: TrainingJob) -> None:
    schedule, config = training.schedule, job.config
    trainable = sum(p.numel() for group in training.optimizer.param_groups for p in group["params"])
    logger.event(
        "start",
        f"{job.kind}: {trainable / 1e6:.2f}M trained parameters on {training.context.world_size} x "
        f"{training.context.device} ({config.run.precision}); {job.describe(training)}; "
        f"total batch {training.total_batch}, peak lr {schedule.base_lr:.3g}; epochs "
        f"{config.schedule.start_epoch}..{config.schedule.total_epochs} of a {config.schedule.total_epochs}-epoch "
        f"schedule = {schedule.run_steps} steps ({schedule.steps_per_epoch} per epoch), "
        f"lr {schedule.run_lr(0):.3g} -> {schedule.run_lr(schedule.run_steps - 1):.3g}",
        world_size=training.context.world_size,
        total_batch=training.total_batch,
        peak_lr=schedule.base_lr,
        steps=schedule.run_steps,
        steps_per_epoch=schedule.steps_per_epoch,
    )


def _log_resumed(logger: RunLogger, config, path: Path, state: LoopState, changed: list[str]) -> None:
    notes = [f"config changed: {', '.join(changed)}"] if changed else []
    if config.model.init:
        notes.append(f"model.init={config.model.init} is not used when resuming")
    logger.event(
        "resumed",
        "; ".join(
            [f"resumed from {path} at step {state.step} (epoch {state.epoch}, batch {state.batch})", *notes]
        ),
        step=state.step,
        path=str(path),
        changed=changed,
    )


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(child, nn.modules.batchnorm._BatchNorm) for child in module.modules())


def _distributed(step: nn.Module, device: torch.device) -> DistributedDataParallel:
    """The step under DDP. Buffers are not broadcast, not even at the start: every rank computes its
    buffers alike (fixed position tables), and a strategy's memory of per-sample losses is kept
    consistent by the strategy itself. BatchNorm (the probes' heads) is synchronized on GPUs; on CPUs,
    where gloo has no SyncBatchNorm, the loop gives every rank rank 0's statistics after each step.
    (torch 2.13 deprecates broadcast_buffers, but its successor still syncs buffers at init; the
    deprecation warning itself says to keep broadcast_buffers=False for that.)"""
    if device.type == "cuda" and _has_batchnorm(step):
        step = nn.SyncBatchNorm.convert_sync_batchnorm(step)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        return DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )


def _run(job: Job, context: DistributedContext) -> RunResult:
    config = job.config
    torch.set_num_threads(threads_per_process(config.run.threads, context))
    keep_freed_memory(TRAINING_TRIM_THRESHOLD)  # every step reallocates what the last one freed
    out_dir = Path(config.out_dir)
    device = context.device
    # Every rank decides alone: nothing writes checkpoints before all ranks have started.
    candidates = resolve_resume(config.resume, out_dir)

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    parts = job.build(context)
    init_report = None
    if config.model.init and not candidates:
        init_report = job.initialize(parts.model, config.model.init)
    parts.step.to(device)

    settings = LoopSettings.of(config)
    per_epoch = steps_per_epoch(
        len(parts.dataset), settings.batch_size, context.world_size, settings.accum_steps
    )
    total_batch = settings.batch_size * context.world_size * settings.accum_steps
    schedule = LRSchedule(config.schedule, peak_lr(config.optim, total_batch), per_epoch)
    training = TrainingJob(
        context=context,
        model=parts.model,
        step=parts.step,
        optimizer=build_optimizer(parts.model, config.optim, parts.param_groups),
        scaler=grad_scaler(device, config.run.precision),
        schedule=schedule,
        dataset=parts.dataset,
        generator=derived_generator(config.seed, context.rank, STEP_STREAM),
        settings=settings,
        config=config_to_dict(config),
        saved=parts.saved,
        sync_buffers=context.is_distributed and device.type != "cuda" and _has_batchnorm(parts.step),
    )
    torch.manual_seed(derived_generator(config.seed, context.rank, TORCH_STREAM).initial_seed())
    state, changed, resume_path, skipped = LoopState(epoch=config.schedule.start_epoch), [], None, []
    for path in candidates:  # newest first; a file that cannot be read gives way to the next
        try:
            state, changed = resume(training, path)
        except UnreadableCheckpoint as error:
            skipped.append(str(error))
            continue
        resume_path = path
        break
    if candidates and resume_path is None:
        raise UnreadableCheckpoint(f"no checkpoint of {out_dir} can be read: {'; '.join(skipped)}")

    if context.is_distributed:
        training.step = _distributed(parts.step, device)
    if config.run.compile:  # a compiled wrapper: pictures and evaluations keep the eager modules
        training.step = torch.compile(training.step)

    trackers = build_trackers(config.log, out_dir, training.config) if context.is_main else []
    logger = RunLogger(out_dir, schedule.run_steps, state.step, enabled=context.is_main, trackers=trackers)
    training.after_step = lambda state: job.after_step(training, state, logger)
    try:
        if context.is_main:
            for message in skipped:
                logger.event("resume_skipped", f"skipped {message}", reason=message)
            _write_run_config(config, out_dir, state.step if resume_path else None)
            if init_report is not None:
                logger.event("init", init_report.describe(), **asdict(init_report))
            if resume_path is not None:
                _log_resumed(logger, config, resume_path, state, changed)
            _log_start(logger, job, training)
        state = train(training, state, logger)
        scores = job.finish(training, state, logger)
        identical = _verify_identical_weights(context, training, logger)
        if context.is_main:  # written last: a run folder with results.json holds a finished run
            results = {"step": state.step, "metrics": {}, **scores}
            logger.results(results, write_json(out_dir / RESULTS, results))
    finally:
        logger.close()
    return RunResult(out_dir, state.step, identical, scores)
