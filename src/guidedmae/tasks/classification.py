"""Image classification: target batch["label"] [B]; cross-entropy (soft targets under mixup); top-1/5."""

import torch
import torch.nn.functional as F

from guidedmae.data.mixup import soft_cross_entropy
from guidedmae.metrics import ClassificationMeter
from guidedmae.tasks.task import Task, TaskConfig, register_task


@register_task
class Classification(Task):
    name = "classification"
    target_key = "label"
    dense = False
    # "knn": a k-nearest-neighbour classifier on frozen features (nothing trained)
    head_kinds = ("linear", "knn")
    mixes_labels = True

    def loss(
        self, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """target: [B] class ids, or [B, K] soft targets (mixup)."""
        if target.is_floating_point():
            return soft_cross_entropy(output, target)
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)

    def meter(
        self, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu"
    ) -> ClassificationMeter:
        return ClassificationMeter(device)
