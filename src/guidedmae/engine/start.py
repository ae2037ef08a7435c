"""Everything before a run's first step, in order:

lock      : rank 0 holds out_dir/.lock for the whole run (a second run there stops at once)
backends  : threads, TF32, the attention kernel, determinism (run.*: guidedmae.infra.backends)
resume    = resolve_resume(config.resume, out_dir)          '' | auto (newest readable) | PATH
memory    : a run that cannot fit (its config's model, images and batch) is refused before anything is built
seed      -> parts = job.build(context)                     model, step, data set, parameter groups
evaluation: every sample of a held-out set read from files is read once (a broken one fails now, not after training)
model.init (fresh runs only) -> job.initialize(parts.model, path)
schedule  = LRSchedule(peak lr of the total batch, steps per epoch of the data set)
optimizer = AdamW(parts.param_groups); loss scaler; per-rank generators
state     = resume(checkpoint) or the start of the run's part of the schedule
DDP, torch.compile
rank 0: config.yaml, events init / resume_skipped / resumed / start
"""

import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from guidedmae.config import TrainingConfig, config_to_dict, config_to_yaml, save_config
from guidedmae.data.loader import read_every_sample
from guidedmae.data.seeding import derived_generator
from guidedmae.data.sources import get_source
from guidedmae.engine.footprint import check_fits_in_memory
from guidedmae.engine.job import CONFIG_FILE, Job, LoopState, Training
from guidedmae.engine.resume import resume
from guidedmae.infra.backends import apply_backend_settings
from guidedmae.infra.checkpoints import UnreadableCheckpoint, resolve_resume
from guidedmae.infra.distributed import DistributedContext, broadcast_object, threads_per_process
from guidedmae.infra.files import FolderBusy
from guidedmae.infra.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
from guidedmae.infra.optim import build_optimizer, peak_lr
from guidedmae.infra.precision import grad_scaler
from guidedmae.infra.run_folder import lock_run_folder, remove_stale_temps
from guidedmae.infra.run_log import RunLogger
from guidedmae.infra.schedule import LRSchedule
from guidedmae.infra.trackers import build_trackers
from guidedmae.models.multimae import MultiMAE

__all__ = ["own_run_folder", "run_schedule", "start", "steps_per_epoch"]

# Independent random streams derived from the run seed: derived_generator(seed, rank, stream). The step
# stream drives the step's own draws (masks, mixup); the torch stream seeds the global generator, from
# which stochastic depth draws; jobs may derive further streams from 3 on (e.g. pictures).
STEP_STREAM, TORCH_STREAM = 1, 2


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


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int, accum_steps: int) -> int:
    """Optimizer steps in one epoch: every rank reads num_samples // world_size samples in full
    batches (drop_last, as MultiMAE), and the batches that do not fill an accumulation group are left out."""
    per_rank = num_samples // world_size
    steps = per_rank // batch_size // accum_steps
    if steps < 1:
        raise ValueError(
            f"the data set's {num_samples} samples give no full optimizer step of "
            f"{batch_size} x {world_size} processes x {accum_steps} accumulation steps; "
            "lower data.batch_size or optim.accum_steps, or use more data"
        )
    return steps


def run_schedule(config: TrainingConfig, world_size: int, per_epoch: int) -> LRSchedule:
    """The lr schedule a run of `config` follows on `world_size` processes, `per_epoch` steps an epoch:
    its peak lr scaled by the total batch (what `guidedmae schedule` prints)."""
    return LRSchedule(config.schedule, peak_lr(config.optim, config.total_batch(world_size)), per_epoch)


def start(job: Job, context: DistributedContext) -> tuple[Training, LoopState, RunLogger]:
    """Build (or restore) the run of `job` up to its next step; returns what the loop runs on, where it
    stands, and the run's logger (rank 0 writes; every rank holds one)."""
    config = job.config
    torch.set_num_threads(threads_per_process(config.run.threads, context))
    apply_backend_settings(config.run, context.device)
    keep_freed_memory(TRAINING_TRIM_THRESHOLD)  # every step reallocates what the last one freed
    out_dir = Path(config.out_dir)
    device = context.device
    # Every rank decides alone: nothing writes checkpoints before all ranks have started.
    candidates = resolve_resume(config.resume, out_dir)

    check_fits_in_memory(config, context)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    parts = job.build(context)
    for module in parts.model.modules():  # the MultiMAE (or the fine-tuned encoder) recomputes its blocks
        if isinstance(module, MultiMAE):
            module.activation_checkpointing = config.run.activation_checkpointing
    if parts.evaluation is not None and get_source(config.data.source).reads_root:
        read_every_sample(parts.evaluation, config.data.num_workers)
    init_report = None
    if config.model.init and not candidates:
        init_report = job.initialize(parts.model, config.model.init)
    parts.step.to(device)

    batch_size, accum_steps = config.data.batch_size, config.optim.accum_steps
    per_epoch = (
        steps_per_epoch(len(parts.dataset), batch_size, context.world_size, accum_steps) if job.trains else 1
    )
    training = Training(
        context=context,
        config=config,
        model=parts.model,
        step=parts.step,
        optimizer=build_optimizer(parts.model, config.optim, parts.param_groups),
        scaler=grad_scaler(device, config.run.precision),
        schedule=run_schedule(config, context.world_size, per_epoch),
        dataset=parts.dataset,
        generator=derived_generator(config.seed, context.rank, STEP_STREAM),
        saved=parts.saved,
        sync_buffers=context.is_distributed and device.type != "cuda" and _has_batchnorm(parts.step),
    )
    torch.manual_seed(derived_generator(config.seed, context.rank, TORCH_STREAM).initial_seed())
    state, resume_path = LoopState(epoch=config.schedule.start_epoch), None
    changed: list[str] = []
    skipped: list[str] = []
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

    if context.is_distributed and job.trains:
        training.step = _distributed(parts.step, device)
    if (
        config.run.compile and job.trains
    ):  # a compiled wrapper: pictures and evaluations keep the eager modules
        training.step = cast(nn.Module, torch.compile(training.step))  # an OptimizedModule around the step

    trackers = build_trackers(config.log, out_dir, config_to_dict(config)) if context.is_main else []
    logger = RunLogger(
        out_dir, training.schedule.run_steps, state.step, enabled=context.is_main, trackers=trackers
    )
    training.after_step = lambda state: job.after_step(training, state, logger)
    if context.is_main:
        try:
            for message in skipped:
                logger.event("resume_skipped", f"skipped {message}", reason=message)
            _write_run_config(config, out_dir, state.step if resume_path else None)
            if init_report is not None:
                logger.event("init", init_report.describe(), **asdict(init_report))
            if resume_path is not None:
                _log_resumed(logger, config, resume_path, state, changed)
            _log_start(logger, job, training)
        except BaseException:
            logger.close()
            raise
    return training, state, logger


def _write_run_config(config: TrainingConfig, out_dir: Path, resumed_step: int | None) -> Path:
    """config.yaml of the run; a resume with a different config writes config-resumed-<step>.yaml."""
    path = out_dir / CONFIG_FILE
    if resumed_step is not None and path.is_file() and path.read_text() != config_to_yaml(config):
        path = out_dir / f"config-resumed-{resumed_step:08d}.yaml"
    return save_config(config, path)


def _log_start(logger: RunLogger, job: Job, training: Training) -> None:
    schedule, config = training.schedule, job.config
    if not job.trains:
        where = f"{training.context.world_size} x {training.context.device} ({config.run.precision})"
        logger.event("start", f"{job.kind}: nothing trained, on {where}; {job.describe(training)}")
        return
    trainable = sum(p.numel() for group in training.optimizer.param_groups for p in group["params"])
    context = training.context
    backend = f", {context.backend}" if context.backend else ""
    logger.event(
        "start",
        f"{job.kind}: {trainable / 1e6:.2f}M trained parameters on {context.world_size} x "
        f"{context.device} ({config.run.precision}{backend}); {job.describe(training)}; "
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


def _log_resumed(
    logger: RunLogger, config: TrainingConfig, path: Path, state: LoopState, changed: list[str]
) -> None:
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
