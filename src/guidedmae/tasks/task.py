"""What a fine-tuning task is, and the registry that finds one by name (`head.task`).

A task says what it learns from a batch and how it is scored: the batch key of its target, its loss, its
metric accumulator, the heads it takes (the first is its default) and how many channels they predict, and
the checks it makes of a fine-tuning config. Nothing else in the package asks a task's name: the engine,
the heads and the config checks read these attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from guidedmae.data.modalities import IGNORE_INDEX

__all__ = ["EVAL_MODES", "TASKS", "EvalConfig", "Task", "TaskConfig", "get_task", "register_task"]

EVAL_MODES = ("center", "whole", "sliding")
DEPTH_LOSSES = ("berhu", "l1")


@dataclass
class EvalConfig:
    """How a fine-tuned model is evaluated: how often, and how images larger than its input are read."""

    every: int = 1  # epochs between evaluations during training (always one at the end); 0 = end only
    mode: str = "center"  # center | whole | sliding
    stride: int = 0  # sliding: pixels between windows; 0 = two thirds of the window
    batch_size: int = 0  # 0 = data.batch_size (sliding always evaluates one image at a time)

    def __post_init__(self) -> None:
        if self.mode not in EVAL_MODES:
            raise ValueError(f"eval.mode={self.mode!r}; expected one of {EVAL_MODES}")
        if self.every < 0 or self.stride < 0 or self.batch_size < 0:
            raise ValueError(
                f"eval.every={self.every}, eval.stride={self.stride}, eval.batch_size={self.batch_size}; "
                "expected non-negative values (0 = the default)"
            )


@dataclass
class TaskConfig:
    """How the task's target is read and scored. The task itself and its classes are in HeadConfig."""

    depth_loss: str = "berhu"  # berhu | l1
    min_depth: float = 1e-3  # metres: depth at or below is missing (0 in the files)
    max_depth: float = 10.0  # metres: depth at or above is not scored (NYUv2's sensor range)
    ignore_index: int = IGNORE_INDEX  # semseg target value left out of loss and metrics
    reduce_zero_label: bool = False  # semseg: 0 -> ignore_index, k -> k - 1 (ADE20K, NYUv2 recipes)

    def __post_init__(self) -> None:
        if self.depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"task.depth_loss={self.depth_loss!r}; expected one of {DEPTH_LOSSES}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(
                f"task.min_depth={self.min_depth}, task.max_depth={self.max_depth}; expected 0 <= min < max"
            )


class Task(ABC):
    """One fine-tuning task. Subclasses set the class attributes and implement loss and meter."""

    name: ClassVar[str]  # the registry's key: head.task
    target_key: ClassVar[str]  # the batch entry it predicts: "label", or a modality
    dense: ClassVar[bool]  # a map per pixel (a target modality, sliding windows) or one answer per image
    head_kinds: ClassVar[tuple[str, ...]]  # the heads it takes; the first is its default
    mixes_labels: ClassVar[bool] = False  # mixup / cutmix apply to its targets
    classes_per_pixel: ClassVar[bool] = False  # its dense output is class logits, not regressed values

    def out_channels(self, num_classes: int) -> int:
        """Channels (or classes) the head predicts, given head.num_classes."""
        return num_classes

    def target(self, batch: dict[str, torch.Tensor], config: TaskConfig) -> torch.Tensor:
        """The tensor the head is trained to predict, from a loader batch."""
        if self.target_key not in batch:
            raise ValueError(
                f"task {self.name} needs '{self.target_key}' in every batch; the data gives {sorted(batch)}"
            )
        return batch[self.target_key]

    @abstractmethod
    def loss(
        self, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The training loss of one batch."""

    @abstractmethod
    def meter(self, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu") -> Any:
        """An empty metric accumulator (see guidedmae.metrics): .update, .compute and summable .totals."""

    def update(self, meter: Any, output: torch.Tensor, target: torch.Tensor, config: TaskConfig) -> None:
        """Add one batch of predictions to the meter."""
        meter.update(output, target)

    def scores(self, meter: Any, class_names: list[str] | None, object_classes: tuple[str, ...]) -> dict:
        """The run's scores from its meter: {"metrics": {name: value}, ...}. class_names: what the data
        calls the target's classes; object_classes: those of them that are objects (the scenes')."""
        return {"metrics": meter.compute()}

    def class_ids(self, num_classes: int, config: TaskConfig) -> dict:
        """What the target's stored class maps may hold (data.sources.ClassIds' fields); {} for none."""
        return {}

    def check(self, config: Any) -> None:
        """The task's own checks of a FinetuneConfig (a floor above the tasks'; raise ValueError naming the
        keys): by default, a dense task's target cannot also be an input."""
        if self.dense and self.target_key in config.model.inputs:
            raise ValueError(
                f"head.task={self.name} predicts {self.target_key}: it cannot also be in model.inputs "
                f"{list(config.model.inputs)}"
            )


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make the task available as head.task=<cls.name>."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"head.task={name!r}; expected one of {tuple(TASKS)}")
    return TASKS[name]
