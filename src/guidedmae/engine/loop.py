"""The training loop shared by every job: a step module, AdamW, a per-step lr schedule, checkpoints.

The runner (engine.run) builds a TrainingJob: the model, a step module that maps
(batch, generator, progress) to an output with `.losses` ({name: scalar tensor}, with "total") and
`.scalars` ({name: float} logged beside the losses as they are), the
modules saved beside the model (e.g. the masking strategy), the optimizer, the schedule, the data set
and the loop's typed settings. `train` then runs, per optimizer step:

    lr = schedule(step)                         per step, from the step's place on the whole schedule
    for each of accum_steps batches:            gradients summed locally (DDP syncs on the last one)
        with autocast: output = step(batch, generator, progress)
        backward(output.losses["total"] / accum_steps)
    losses = mean over processes                every process takes the same decision below
    finite ? clip, optimizer step : skip, count (abort after run.max_nonfinite in a row)
    log, call the job's hook, checkpoint every checkpoint.every steps

and writes a last checkpoint at the end. Only rank 0 logs and writes; all ranks read the resume file.
"""

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from guidedmae.config import config_differences
from guidedmae.data.datasets import build_loader
from guidedmae.engine.checkpoint import read_training_checkpoint, save_checkpoint
from guidedmae.engine.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_mean,
    broadcast_buffers,
    check_launcher,
)
from guidedmae.engine.logging import RunLogger
from guidedmae.engine.optim import set_lr
from guidedmae.engine.precision import autocast
from guidedmae.engine.schedule import LRSchedule
from guidedmae.models.checkpoints import CheckpointError, load_weights

__all__ = [
    "LoopSettings",
    "LoopState",
    "NonFiniteLossError",
    "TrainingJob",
    "resume",
    "steps_per_epoch",
    "train",
    "write_checkpoint",
]


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for run.max_nonfinite optimizer steps in a row."""


@dataclass(frozen=True)
class LoopSettings:
    """The loop's knobs, read from any training config by `of`."""

    out_dir: Path
    seed: int  # data order and augmentation of every epoch
    batch_size: int  # per process
    num_workers: int
    accum_steps: int
    clip_grad: float  # 0 = no clipping
    precision: str
    max_nonfinite: int
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int

    @classmethod
    def of(cls, config) -> "LoopSettings":
        """The settings of a PretrainConfig or FinetuneConfig."""
        return cls(
            out_dir=Path(config.out_dir),
            seed=config.seed,
            batch_size=config.data.batch_size,
            num_workers=config.data.num_workers,
            accum_steps=config.optim.accum_steps,
            clip_grad=config.optim.clip_grad,
            precision=config.run.precision,
            max_nonfinite=config.run.max_nonfinite,
            log_every=config.log.every,
            checkpoint_every=config.checkpoint.every,
            checkpoint_keep=config.checkpoint.keep,
        )


@dataclass
class LoopState:
    """Where a run is: optimizer steps taken, and the next batch to read."""

    step: int = 0  # optimizer steps taken in this run (the schedule adds its first_step)
    epoch: int = 0  # epoch of the next batch, on the whole schedule
    batch: int = 0  # index of the next batch within that epoch (on this rank)
    nonfinite_in_a_row: int = 0


@dataclass
class TrainingJob:
    """Everything `train` runs on."""

    context: DistributedContext
    model: nn.Module  # the bare model: what checkpoints hold under "model"
    step: nn.Module  # (batch, generator, progress) -> output with .losses; DDP-wrapped / compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedule: LRSchedule
    dataset: Dataset
    generator: torch.Generator  # this rank's randomness of the step (masking), saved in checkpoints
    settings: LoopSettings
    config: dict  # the resolved config as plain values: stored in checkpoints, compared on resume
    # Modules whose state is saved beside the model, each under its own checkpoint key (the masking
    # strategy under "strategy"): official MultiMAE names stay untouched.
    saved: dict[str, nn.Module] = field(default_factory=dict)
    # Called on every rank after each optimizer step (collective work such as evaluations allowed).
    after_step: Callable[[LoopState], None] | None = None
    sync_buffers: bool = False  # give every rank rank 0's buffers after each step (BatchNorm without SyncBN)

    @property
    def out_dir(self) -> Path:
        return self.settings.out_dir

    @property
    def total_batch(self) -> int:
        """Samples per optimizer step over all processes."""
        return self.settings.batch_size * self.context.world_size * self.settings.accum_steps


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


def _checkpoint_state(job: TrainingJob, state: LoopState) -> dict:
    """The checkpoint of the run at `state`. Collective: every rank must call it (RNG states are gathered)."""
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if job.context.device.type == "cuda" else None,
        "step": job.generator.get_state(),
    }
    per_rank = all_gather_objects(job.context, rng)
    return {
        "model": job.model.state_dict(),
        **{key: module.state_dict() for key, module in job.saved.items()},
        "optimizer": job.optimizer.state_dict(),
        "scaler": job.scaler.state_dict() if job.scaler is not None else None,
        "schedule": {
            "step": state.step,
            "first_step": job.schedule.first_step,
            "steps_per_epoch": job.schedule.steps_per_epoch,
            "total_steps": job.schedule.total_steps,
        },
        "data": {
            "epoch": state.epoch,
            "batch": state.batch,
            "nonfinite_in_a_row": state.nonfinite_in_a_row,
            "world_size": job.context.world_size,
            "batch_size": job.settings.batch_size,
        },
        "rng": {key: [ranks[key] for ranks in per_rank] for key in rng},
        "config": job.config,
        "step": state.step,
    }


def write_checkpoint(job: TrainingJob, state: LoopState, logger: RunLogger) -> None:
    """Gather the state on every rank; rank 0 writes it atomically."""
    checkpoint = _checkpoint_state(job, state)
    if job.context.is_main:
        path = save_checkpoint(checkpoint, job.out_dir, state.step, job.settings.checkpoint_keep)
        logger.event("checkpoint", f"step {state.step}: wrote {path}", step=state.step, path=str(path))


def resume(job: TrainingJob, path: Path) -> tuple[LoopState, list[str]]:
    """Restore model, optimizer, scaler, RNG states and data position from a checkpoint (every rank).

    Returns the state to continue from and the config keys that changed since the checkpoint.
    """
    checkpoint = read_training_checkpoint(path)
    saved, data = checkpoint["schedule"], checkpoint["data"]
    ours = {
        "first_step": job.schedule.first_step,
        "steps_per_epoch": job.schedule.steps_per_epoch,
        "total_steps": job.schedule.total_steps,
    }
    layout = {"world_size": job.context.world_size, "batch_size": job.settings.batch_size}
    mismatched = [f"{key}: {saved[key]} -> {value}" for key, value in ours.items() if saved[key] != value]
    mismatched += [f"{key}: {data[key]} -> {value}" for key, value in layout.items() if data[key] != value]
    if mismatched:
        raise CheckpointError(
            f"{path}: cannot resume exactly, the run's layout changed ({'; '.join(mismatched)}). "
            "Resume with the same schedule, batch size and number of processes, or start a new run "
            "from its weights with model.init=PATH"
        )
    load_weights(job.model, checkpoint["model"], str(path))
    for key, module in job.saved.items():
        if key not in checkpoint:
            raise CheckpointError(f"{path}: holds no {key!r} state, which this run keeps beside the model")
        load_weights(module, checkpoint[key], f"{path} ({key})")
    job.optimizer.load_state_dict(checkpoint["optimizer"])
    if job.scaler is not None and checkpoint["scaler"] is not None:
        job.scaler.load_state_dict(checkpoint["scaler"])
    rank = job.context.rank
    torch.set_rng_state(checkpoint["rng"]["torch"][rank])
    if job.context.device.type == "cuda" and checkpoint["rng"]["cuda"][rank] is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"][rank])
    job.generator.set_state(checkpoint["rng"]["step"][rank])
    changed = [
        line
        for line in config_differences(checkpoint["config"], job.config)
        if not line.startswith("resume:")
    ]
    state = LoopState(checkpoint["step"], data["epoch"], data["batch"], data["nonfinite_in_a_row"])
    return state, changed


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device, non_blocking=True) for name, value in batch.items()}


def _optimizer_step(job: TrainingJob) -> float | None:
    """Unscale, clip, step; returns the gradient norm when clipping computed it."""
    clip = job.settings.clip_grad
    grad_norm = None
    if job.scaler is not None:
        job.scaler.unscale_(job.optimizer)
    if clip > 0:
        parameters = [p for group in job.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip).item()
    if job.scaler is not None:
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        job.optimizer.step()
    return grad_norm


class MetricsWindow:
    """Mean values (losses, logged scalars) over the steps since the last log line, and the training
    throughput over them (time spent in checkpoints and pictures left out)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.start = time.perf_counter()
        self.excluded = 0.0

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def summary(self, samples_per_step: int) -> dict[str, float]:
        """The mean of every value added, and "samples_per_s"."""
        values = {name: value / self.steps for name, value in self.sums.items()}
        elapsed = time.perf_counter() - self.start - self.excluded
        values["samples_per_s"] = self.steps * samples_per_step / max(elapsed, 1e-9)
        return values


def train(job: TrainingJob, state: LoopState, logger: RunLogger) -> LoopState:
    """Run from `state` to the end of the schedule, then write the last checkpoint; returns the final state."""
    settings, context, schedule = job.settings, job.context, job.schedule
    accum_steps = settings.accum_steps
    batches_per_epoch = schedule.steps_per_epoch * accum_steps
    end_epoch = schedule.config.total_epochs
    first_step = state.step
    window = MetricsWindow()

    job.step.train()
    job.optimizer.zero_grad(set_to_none=True)
    while state.epoch < end_epoch:
        loader = build_loader(
            job.dataset,
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            shuffle=True,
            drop_last=True,
            seed=settings.seed,
            epoch=state.epoch,
            start_batch=state.batch,
            rank=context.rank,
            world_size=context.world_size,
            pin_memory=context.device.type == "cuda",
        )
        losses_sum: dict[str, torch.Tensor] = {}
        for batch in loader:
            micro_step = state.batch % accum_steps
            if micro_step == 0:
                check_launcher(context)
                lr = schedule.run_lr(state.step)
                set_lr(job.optimizer, lr)
                progress = schedule.progress(state.step)
            last_micro_step = micro_step == accum_steps - 1
            # DDP averages gradients over processes in the backward of the last micro-step only.
            sync = nullcontext() if last_micro_step or not context.is_distributed else job.step.no_sync()
            with sync:
                with autocast(context.device, settings.precision):
                    output = job.step(_batch_to(batch, context.device), job.generator, progress)
                loss = output.losses["total"] / accum_steps
                (job.scaler.scale(loss) if job.scaler is not None else loss).backward()
            for name, value in output.losses.items():
                losses_sum[name] = losses_sum.get(name, 0.0) + value.detach().float() / accum_steps
            state.batch += 1
            if not last_micro_step:
                continue

            # The same mean on every rank, so that every rank takes the same step-or-skip decision.
            names = list(losses_sum)
            losses = dict(
                zip(names, all_reduce_mean(context, torch.stack(list(losses_sum.values()))).tolist())
            )
            losses_sum = {}
            if math.isfinite(losses["total"]):
                grad_norm = _optimizer_step(job)
                values = {"loss": losses["total"]}
                values.update({f"loss_{name}": value for name, value in losses.items() if name != "total"})
                values.update(output.scalars)  # those of the last micro-step, the same on every rank
                window.add(values if grad_norm is None else {**values, "grad_norm": grad_norm})
                state.nonfinite_in_a_row = 0
            else:
                state.nonfinite_in_a_row += 1
                number = state.step + 1  # steps are counted from 1, as in the metrics lines
                logger.event(
                    "nonfinite_loss",
                    f"step {number}: loss is {losses['total']}, step skipped "
                    f"({state.nonfinite_in_a_row} in a row; limit run.max_nonfinite={settings.max_nonfinite})",
                    step=number,
                    losses=losses,
                )
                if state.nonfinite_in_a_row >= settings.max_nonfinite:
                    raise NonFiniteLossError(
                        f"the loss was non-finite for {state.nonfinite_in_a_row} steps in a row "
                        f"(steps {number - state.nonfinite_in_a_row + 1}..{number}, lr {lr:.3g}, "
                        f"precision {settings.precision}); stopped without updating on them. The last "
                        f"checkpoint is in {job.out_dir}. Lower the lr, check the data, or try run.precision=fp32."
                    )
            job.optimizer.zero_grad(set_to_none=True)
            if job.sync_buffers:
                broadcast_buffers(context, job.model)
            state.step += 1
            if state.batch == batches_per_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
            finished = state.epoch == end_epoch
            logger.advance()

            if (state.step % settings.log_every == 0 or finished) and window.steps:
                values = window.summary(job.total_batch)
                values["lr"] = lr
                values["epoch"] = schedule.config.start_epoch + state.step / schedule.steps_per_epoch
                logger.scalars(state.step, values)
                window = MetricsWindow()
            hooks_start = time.perf_counter()
            if job.after_step is not None:
                job.after_step(state)
            if state.step % settings.checkpoint_every == 0 and not finished:
                write_checkpoint(job, state, logger)
            window.excluded += time.perf_counter() - hooks_start
            if state.batch == 0:
                break  # the epoch is done; the loader's remaining batches do not fill a step
    if state.step > first_step:
        write_checkpoint(job, state, logger)
    return state
