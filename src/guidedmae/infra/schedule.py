"""Learning rate per optimizer step: linear warmup, then a half cosine down to `min_lr`.

The curve is MultiMAE's `cosine_scheduler`, defined over the whole schedule of `total_epochs`:
    step i < W:      lr = warmup_lr + (base - warmup_lr) * i / (W - 1)          (np.linspace, endpoint incl.)
    step i >= W:     lr = min_lr + 0.5 * (base - min_lr) * (1 + cos(pi * (i - W) / (S - W)))
with W = warmup_epochs * steps_per_epoch and S = total_epochs * steps_per_epoch. A run lives on the
part [start_epoch, total_epochs) of it: continuing a 1600-epoch pretraining for 100 epochs is
start_epoch=1600, total_epochs=1700 (the tail of a 1700-epoch cosine, where lr is already small);
restarting is start_epoch=0, total_epochs=100 with its own warmup.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from guidedmae.infra.files import atomic_write


@dataclass
class ScheduleConfig:
    total_epochs: int = 1600  # T: the length of the cosine this run is a part of
    start_epoch: int = 0  # where this run starts on it; the run ends at total_epochs
    warmup_epochs: float = 40.0  # linear warmup at the start of the schedule (may be fractional)
    warmup_lr: float = 1e-6  # lr at step 0 of the schedule
    min_lr: float = 0.0  # lr at the end of the cosine


def validate_schedule(config: ScheduleConfig) -> None:
    """Check a schedule config; errors name the offending key and what was expected."""
    if config.total_epochs < 1:
        raise ValueError(f"schedule.total_epochs={config.total_epochs}; expected at least 1")
    if not 0 <= config.start_epoch < config.total_epochs:
        raise ValueError(
            f"schedule.start_epoch={config.start_epoch}; expected 0 <= start_epoch < total_epochs "
            f"({config.total_epochs}): the run covers epochs [start_epoch, total_epochs)"
        )
    if not 0 <= config.warmup_epochs <= config.total_epochs:
        raise ValueError(
            f"schedule.warmup_epochs={config.warmup_epochs}; expected 0..total_epochs ({config.total_epochs})"
        )
    if config.warmup_lr < 0 or config.min_lr < 0:
        raise ValueError(
            f"schedule.warmup_lr={config.warmup_lr}, schedule.min_lr={config.min_lr}; expected >= 0"
        )


@dataclass(frozen=True)
class Progress:
    """Where a run is, for what changes as training goes on (masking curricula, schedules of strategies)."""

    step: int  # optimizer step on the whole schedule (a continuation starts at its first_step)
    fraction: float  # share of this run's own steps already taken, in [0, 1)


START = Progress(step=0, fraction=0.0)  # outside a run (pictures, benchmarks): the beginning


@dataclass(frozen=True)
class LRSchedule:
    """The lr of every optimizer step of a `total_epochs` schedule, for a given base lr."""

    config: ScheduleConfig
    base_lr: float  # peak lr, reached at the end of warmup
    steps_per_epoch: int  # optimizer steps per epoch (after gradient accumulation)

    def __post_init__(self) -> None:
        validate_schedule(self.config)
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={self.steps_per_epoch}; expected at least 1")

    @property
    def warmup_steps(self) -> int:
        return round(self.config.warmup_epochs * self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        """Steps of the whole schedule, epoch 0 to total_epochs."""
        return self.config.total_epochs * self.steps_per_epoch

    @property
    def first_step(self) -> int:
        """The schedule step at which this run starts (start_epoch)."""
        return self.config.start_epoch * self.steps_per_epoch

    @property
    def run_steps(self) -> int:
        """Optimizer steps this run takes: from start_epoch to total_epochs."""
        return self.total_steps - self.first_step

    def lr(self, step: int) -> float:
        """lr at schedule step `step` (0 = the first step of epoch 0, not of this run)."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} lies outside the schedule's {self.total_steps} steps")
        warmup = self.warmup_steps
        if step < warmup:
            if warmup == 1:
                return self.config.warmup_lr
            return self.config.warmup_lr + (self.base_lr - self.config.warmup_lr) * step / (warmup - 1)
        progress = (step - warmup) / (self.total_steps - warmup)
        return self.config.min_lr + 0.5 * (self.base_lr - self.config.min_lr) * (
            1 + math.cos(math.pi * progress)
        )

    def run_lr(self, run_step: int) -> float:
        """lr at step `run_step` of this run (0 = the first step of start_epoch)."""
        return self.lr(self.first_step + run_step)

    def progress(self, run_step: int) -> Progress:
        """Progress at step `run_step` of this run."""
        return Progress(self.first_step + run_step, run_step / self.run_steps)


def plot_schedule(schedule: LRSchedule, path: str | Path, title: str = "") -> None:
    """PNG of the lr over the whole schedule (x: epochs), with this run's part drawn bold."""
    figure = Figure(figsize=(7, 3.6), dpi=120)  # no pyplot: no global backend, no window
    axes = figure.subplots()
    per_epoch = schedule.steps_per_epoch
    # At most ~4000 points: the curve is smooth, every step is not needed to draw it.
    stride = max(1, schedule.total_steps // 4000)
    steps = [*range(0, schedule.total_steps, stride), schedule.total_steps - 1]
    axes.plot([s / per_epoch for s in steps], [schedule.lr(s) for s in steps], color="0.7", label="schedule")
    run = [s for s in steps if s >= schedule.first_step] or [schedule.first_step]
    axes.plot(
        [s / per_epoch for s in run], [schedule.lr(s) for s in run], color="C0", lw=2.5, label="this run"
    )
    axes.axvline(schedule.config.warmup_epochs, color="0.5", ls=":", lw=1)
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate")
    axes.set_title(title or f"cosine over {schedule.config.total_epochs} epochs")
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png"))
