"""The one runner of every training command: `fit(job)` runs (or resumes) a job's training.

    result = fit(PretrainJob(config))            # or FinetuneJob(config)

fit starts the run (guidedmae.engine.start: lock, build, resume, DDP, logs), trains to the end of the
schedule, lets the job finish (evaluations), checks that every rank holds the same weights and writes
results.json, the mark of a finished run. The loop, per optimizer step:

    lr = schedule(step)                         per step, from the step's place on the whole schedule
    accumulate: for each of accum_steps batches  gradients summed locally (DDP syncs on the last one)
        with autocast: output = step(batch, generator, progress)
        backward(output.losses["total"] / accum_steps)
    step or skip: losses = mean over processes   every process takes the same decision
        finite ? clip, optimizer step : skip, count (abort after run.max_nonfinite in a row)
    after the step: log, the job's hook, a checkpoint every checkpoint.every steps

and a last checkpoint at the end. Only rank 0 logs and writes; all ranks read the resume file.
"""

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from guidedmae.data.loader import EpochLoader
from guidedmae.engine.job import RESULTS, Job, LoopState, RunResult, Training
from guidedmae.engine.resume import write_checkpoint
from guidedmae.engine.start import own_run_folder, start
from guidedmae.infra.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_mean,
    broadcast_buffers,
    check_launcher,
    close_distributed,
    init_distributed,
    weights_digest,
)
from guidedmae.infra.files import write_json
from guidedmae.infra.optim import set_lr
from guidedmae.infra.precision import autocast
from guidedmae.infra.run_log import RunLogger
from guidedmae.infra.schedule import Progress

__all__ = ["NonFiniteLossError", "apply_gradients", "fit", "forward_backward", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for run.max_nonfinite optimizer steps in a row."""


def fit(job: Job) -> RunResult:
    """Run (or resume) the job's training; returns where its outputs are and its final scores."""
    context = init_distributed(job.config.run.device)
    try:
        with own_run_folder(Path(job.config.out_dir), context):
            training, state, logger = start(job, context)
            try:
                if job.trains:
                    state = train(training, state, logger)
                scores = job.finish(training, state, logger)
                identical = _verify_identical_weights(context, training, logger)
                if context.is_main:  # written last: a run folder with results.json holds a finished run
                    results = {"step": state.step, "metrics": {}, **scores}
                    logger.results(results, write_json(training.out_dir / RESULTS, results))
            finally:
                logger.close()
    finally:
        close_distributed(context)
    return RunResult(training.out_dir, state.step, identical, scores)


def train(training: Training, state: LoopState, logger: RunLogger) -> LoopState:
    """Run from `state` to the end of the schedule, then write the last checkpoint; returns the final state."""
    config, context, schedule = training.config, training.context, training.schedule
    accum_steps = config.optim.accum_steps
    first_step = state.step
    window = MetricsWindow()
    training.step.train()
    training.optimizer.zero_grad(set_to_none=True)
    batches = EpochLoader(
        training.dataset,
        persistent=config.data.persistent_workers,
        batch_size=config.data.batch_size,
        num_workers=config.data.num_workers,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=context.rank,
        world_size=context.world_size,
        pin_memory=context.device.type == "cuda",
    )
    while state.epoch < schedule.config.total_epochs:
        loader = batches.epoch(state.epoch, state.batch)
        losses_sum: dict[str, torch.Tensor] = {}
        for batch in loader:
            micro_step = state.batch % accum_steps
            if micro_step == 0:
                check_launcher(context)
                lr = schedule.run_lr(state.step)
                set_lr(training.optimizer, lr)
                progress = schedule.progress(state.step)
            # DDP averages gradients over processes in the backward of the last micro-step only.
            last = micro_step == accum_steps - 1
            syncing = last or not context.is_distributed
            # Distributed, the step is a DDP module (or a compiled one around it): it has no_sync.
            with nullcontext() if syncing else training.step.no_sync():  # type: ignore[operator]
                output = forward_backward(
                    training.step, _to_device(batch, context.device), training.generator, progress,
                    config.run.precision, training.scaler, accum_steps,
                )  # fmt: skip
            for name, value in output.losses.items():
                losses_sum[name] = losses_sum.get(name, 0.0) + value.detach().float() / accum_steps
            state.batch += 1
            if not last:
                continue
            _step_or_skip(
                training, state, _mean_over_processes(context, losses_sum), output.scalars, lr, window, logger
            )
            losses_sum = {}
            _after_step(training, state, lr, window, logger)
            if state.batch == 0:
                break  # the epoch is done; the loader's remaining batches do not fill a step
    if state.step > first_step:
        write_checkpoint(training, state, logger)
    return state


class StepResult(Protocol):
    """What a job's step returns (pretrain_step.StepOutput, finetune.FinetuneOutput)."""

    losses: dict[str, torch.Tensor]  # "total" is trained
    scalars: dict[str, float]  # logged beside the losses


def forward_backward(
    step: nn.Module,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    progress: Progress,
    precision: str,
    scaler: torch.amp.GradScaler | None = None,
    accum_steps: int = 1,
) -> StepResult:
    """The step's output on a batch (on the step's device) under autocast, and the backward of its
    share of the loss (1 / accum_steps): what every training step runs, and what `bench` times."""
    device = next(iter(batch.values())).device
    with autocast(device, precision):
        output = step(batch, generator, progress)
    loss = output.losses["total"] / accum_steps
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return output


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device, non_blocking=True) for name, value in batch.items()}


def _mean_over_processes(
    context: DistributedContext, losses_sum: dict[str, torch.Tensor]
) -> dict[str, float]:
    """The same mean on every rank, so that every rank takes the same step-or-skip decision."""
    names = list(losses_sum)
    return dict(zip(names, all_reduce_mean(context, torch.stack(list(losses_sum.values()))).tolist()))


def _step_or_skip(
    training: Training,
    state: LoopState,
    losses: dict[str, float],
    scalars: dict[str, float],
    lr: float,
    window: "MetricsWindow",
    logger: RunLogger,
) -> None:
    """The optimizer step on a finite loss; on a non-finite one no update, an event, and an abort after
    run.max_nonfinite in a row. Either way the step is counted and the gradients cleared."""
    run = training.config.run
    if math.isfinite(losses["total"]):
        grad_norm = apply_gradients(training.optimizer, training.scaler, training.config.optim.clip_grad)
        values = {"loss": losses["total"]}
        values.update({f"loss_{name}": value for name, value in losses.items() if name != "total"})
        values.update(scalars)  # those of the last micro-step, the same on every rank
        window.add(values if grad_norm is None else {**values, "grad_norm": grad_norm})
        state.nonfinite_in_a_row = 0
    else:
        state.nonfinite_in_a_row += 1
        number = state.step + 1  # steps are counted from 1, as in the metrics lines
        logger.event(
            "nonfinite_loss",
            f"step {number}: loss is {losses['total']}, step skipped "
            f"({state.nonfinite_in_a_row} in a row; limit run.max_nonfinite={run.max_nonfinite})",
            step=number,
            losses=losses,
        )
        if state.nonfinite_in_a_row >= run.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss was non-finite for {state.nonfinite_in_a_row} steps in a row "
                f"(steps {number - state.nonfinite_in_a_row + 1}..{number}, lr {lr:.3g}, "
                f"precision {run.precision}); stopped without updating on them. The last "
                f"checkpoint is in {training.out_dir}. Lower the lr, check the data, or try run.precision=fp32."
            )
    training.optimizer.zero_grad(set_to_none=True)
    if training.sync_buffers:
        broadcast_buffers(training.context, training.model)
    state.step += 1
    if state.batch == training.schedule.steps_per_epoch * training.config.optim.accum_steps:
        state.epoch, state.batch = state.epoch + 1, 0


def apply_gradients(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, clip_grad: float
) -> float | None:
    """Unscale, clip (clip_grad > 0), step; returns the gradient norm when clipping computed it."""
    grad_norm = None
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip_grad).item()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return grad_norm


def _after_step(
    training: Training, state: LoopState, lr: float, window: "MetricsWindow", logger: RunLogger
) -> None:
    """Log the window's means, call the job's hook, write a checkpoint every checkpoint.every steps."""
    config, schedule = training.config, training.schedule
    finished = state.epoch == schedule.config.total_epochs
    logger.advance()
    if (state.step % config.log.every == 0 or finished) and window.steps:
        values = window.summary(training.total_batch)
        values["lr"] = lr
        values["epoch"] = schedule.config.start_epoch + state.step / schedule.steps_per_epoch
        logger.scalars(state.step, values)
        window.reset()
    hooks_start = time.perf_counter()
    if training.after_step is not None:
        training.after_step(state)
    if state.step % config.checkpoint.every == 0 and not finished:
        write_checkpoint(training, state, logger)
    window.excluded += time.perf_counter() - hooks_start


class MetricsWindow:
    """Mean values (losses, logged scalars) over the steps since the last log line, and the training
    throughput over them (time spent in checkpoints and pictures left out)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
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


def _verify_identical_weights(context: DistributedContext, training: Training, logger: RunLogger) -> bool:
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
