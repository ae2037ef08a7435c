"""What a training command is to the runner (a Job), what it builds (JobParts), what the loop runs on
(Training) and where a run stands (LoopState), and what a finished run returns (RunResult).

A Job says what is its own: how to build the model, the step module, the training set and the
parameter groups (`build`), how to start from saved weights (`initialize`), how to describe itself,
and what to do after each step and at the end (pictures, evaluations). guidedmae.engine.fit owns the rest.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import torch
from torch import nn

from guidedmae.config import TrainingConfig
from guidedmae.data.datasets import SizedDataset
from guidedmae.infra.checkpoints import LAST
from guidedmae.infra.distributed import DistributedContext
from guidedmae.infra.run_log import METRICS, RunLogger
from guidedmae.infra.schedule import LRSchedule
from guidedmae.models.pretrained import InitReport

__all__ = ["CONFIG_FILE", "RESULTS", "Job", "JobParts", "LoopState", "RunResult", "Training"]

CONFIG_FILE = "config.yaml"
RESULTS = "results.json"


@dataclass
class JobParts:
    """What a job builds for the runner."""

    model: nn.Module  # what checkpoints hold under "model"
    step: nn.Module  # (batch, generator, progress) -> output with .losses["total"]; a job that trains
    # nothing gives its model
    dataset: SizedDataset  # the training set
    param_groups: list[dict]  # AdamW groups over every trained parameter (weight decay, lr scales)
    saved: dict[str, nn.Module] = field(default_factory=dict)  # state kept beside the model, by key
    evaluation: SizedDataset | None = None  # the held-out set the job evaluates on, if any


@dataclass
class LoopState:
    """Where a run is: optimizer steps taken, and the next batch to read."""

    step: int = 0  # optimizer steps taken in this run (the schedule adds its first_step)
    epoch: int = 0  # epoch of the next batch, on the whole schedule
    batch: int = 0  # index of the next batch within that epoch (on this rank)
    nonfinite_in_a_row: int = 0


@dataclass
class Training:
    """Everything the loop runs on: a job's parts with the optimizer, schedule and randomness of its run."""

    context: DistributedContext
    config: TrainingConfig
    model: nn.Module  # the bare model: what checkpoints hold under "model"
    step: nn.Module  # (batch, generator, progress) -> output with .losses; DDP-wrapped / compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedule: LRSchedule
    dataset: SizedDataset
    generator: torch.Generator  # this rank's randomness of the step (masking), saved in checkpoints
    # Modules whose state is saved beside the model, each under its own checkpoint key (the masking
    # strategy under "strategy"): official MultiMAE names stay untouched.
    saved: dict[str, nn.Module] = field(default_factory=dict)
    # Called on every rank after each optimizer step (collective work such as evaluations allowed).
    after_step: Callable[[LoopState], None] | None = None
    sync_buffers: bool = False  # give every rank rank 0's buffers after each step (BatchNorm without SyncBN)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def total_batch(self) -> int:
        """Samples per optimizer step over all processes."""
        return self.config.total_batch(self.context.world_size)


Model = TypeVar("Model", bound=nn.Module)  # the model a job builds (MultiMAE, FineTuneModel)


class Job(ABC, Generic[Model]):
    """A training command's own parts; see the module docstring."""

    kind: ClassVar[str]  # "pretraining", "fine-tuning": names the run in its log
    # False for a job that only evaluates (the k-NN probe): the run is started and finished as every
    # other (lock, config.yaml, logs, results.json), but no step is taken and no checkpoint written.
    trains: ClassVar[bool] = True

    def __init__(self, config: TrainingConfig) -> None:
        self.config = config

    @abstractmethod
    def build(self, context: DistributedContext) -> JobParts:
        """The model (random init, on the CPU), the step, the training set and the parameter groups.
        Called after seeding, on every rank: every rank builds the same initial weights."""

    @abstractmethod
    def initialize(self, model: Model, path: str) -> InitReport:
        """Load the weights of `path` (model.init) into a fresh run's model."""

    @abstractmethod
    def describe(self, training: Training) -> str:
        """What the run is, in one line for the start event (after its size and devices)."""

    def after_step(self, training: Training, state: LoopState, logger: RunLogger) -> None:  # noqa: B027
        """After every optimizer step, on every rank (collective work allowed); nothing by default."""

    def finish(self, training: Training, state: LoopState, logger: RunLogger) -> dict:
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
