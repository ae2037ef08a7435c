"""What each fine-tuning task learns from a batch: its inputs, its target, its loss and its metrics.

    classification   target batch["label"] [B];          loss: cross-entropy (soft targets under mixup)
    semseg           target batch["semseg"] [B, H, W];    loss: cross-entropy, ignore_index left out
    depth            target batch["depth"] [B, 1, H, W]   (metres); loss: berHu or L1 over valid pixels,
                     valid = min_depth < depth < max_depth (0 marks a missing measurement)

For depth, MultiMAE's NYUv2 recipe uses berHu (the reverse Huber loss of Laina et al. 2016): |d| below
c = 0.2 max |d| over the batch's valid pixels, (d^2 + c^2) / 2c above, summed and divided by the
number of valid pixels.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from guidedmae.data.mixup import soft_cross_entropy
from guidedmae.data.modalities import IGNORE_INDEX
from guidedmae.metrics import ClassificationMeter, DepthMeter, SegmentationMeter

DEPTH_LOSSES = ("berhu", "l1")
EVAL_MODES = ("center", "whole", "sliding")
BERHU_THRESHOLD = 0.2  # c = 0.2 * max |d|
BERHU_MIN_C = 1e-5


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


def depth_valid_mask(depth: torch.Tensor, config: TaskConfig) -> torch.Tensor:
    """Pixels with a usable measurement: min_depth < depth < max_depth, same shape as depth."""
    return (depth > config.min_depth) & (depth < config.max_depth)


def berhu_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse Huber loss over the valid pixels (MultiMAE's masked_berhu_loss). All [B, 1, H, W]."""
    difference = torch.where(valid, prediction.float() - target.float(), 0.0).abs()
    c = (BERHU_THRESHOLD * difference.max().detach()).clamp_min(BERHU_MIN_C)
    per_pixel = torch.where(difference < c, difference, (difference.square() + c.square()) / (2 * c))
    return per_pixel.sum() / valid.sum().clamp_min(1)


def l1_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the valid pixels. All [B, 1, H, W]."""
    difference = torch.where(valid, prediction.float() - target.float(), 0.0).abs()
    return difference.sum() / valid.sum().clamp_min(1)


def reduce_zero_label(semseg: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Class 0 ("other" / unlabeled) becomes ignore_index and class k becomes k - 1; ignore stays ignore."""
    return torch.where((semseg == 0) | (semseg == ignore_index), ignore_index, semseg - 1)


def target_of(task: str, batch: dict[str, torch.Tensor], config: TaskConfig) -> torch.Tensor:
    """The tensor the head is trained to predict, from a loader batch."""
    key = {"classification": "label", "semseg": "semseg", "depth": "depth"}[task]
    if key not in batch:
        raise ValueError(f"task {task} needs '{key}' in every batch; the data gives {sorted(batch)}")
    target = batch[key]
    if task == "semseg" and config.reduce_zero_label:
        target = reduce_zero_label(target, config.ignore_index)
    return target


def task_loss(
    task: str, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The training loss. classification: target [B] class ids or [B, K] soft targets (mixup)."""
    if task == "classification":
        if target.is_floating_point():
            return soft_cross_entropy(output, target)
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)
    if task == "semseg":
        return F.cross_entropy(output.float(), target, ignore_index=config.ignore_index)
    valid = depth_valid_mask(target, config)
    loss = berhu_loss if config.depth_loss == "berhu" else l1_loss
    return loss(output, target, valid)


def new_meter(task: str, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu"):
    """An empty metric accumulator of the task (see guidedmae.metrics)."""
    if task == "classification":
        return ClassificationMeter(device)
    if task == "semseg":
        return SegmentationMeter(num_classes, config.ignore_index, device)
    return DepthMeter(device)


def update_meter(meter, task: str, output: torch.Tensor, target: torch.Tensor, config: TaskConfig) -> None:
    """Add one batch of predictions to the task's meter."""
    if task == "depth":
        meter.update(output.float(), target, depth_valid_mask(target, config))
    else:
        meter.update(output, target)
