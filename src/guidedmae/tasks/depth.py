"""Monocular depth: target batch["depth"] [B, 1, H, W] in metres; berHu or L1 over valid pixels, valid =
min_depth < depth < max_depth (0 marks a missing measurement); AbsRel, RMSE, δ1-3.

MultiMAE's NYUv2 recipe uses berHu (the reverse Huber loss of Laina et al. 2016): |d| below
c = 0.2 max |d| over the batch's valid pixels, (d^2 + c^2) / 2c above, summed and divided by the
number of valid pixels.
"""

from typing import Any

import torch

from guidedmae.metrics import DepthMeter
from guidedmae.tasks.task import Task, TaskConfig, register_task

BERHU_THRESHOLD = 0.2  # c = 0.2 * max |d|
BERHU_MIN_C = 1e-5


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
    """Mean absolute error over the valid pixels. All [B, C, H, W]; valid [B, 1 or C, H, W]."""
    difference = torch.where(valid, prediction.float() - target.float(), 0.0).abs()
    return difference.sum() / valid.expand_as(difference).sum().clamp_min(1)


@register_task
class Depth(Task):
    name = "depth"
    target_key = "depth"
    dense = True
    head_kinds = ("dpt", "convnext", "linear")

    def out_channels(self, num_classes: int) -> int:
        return 1  # metres

    def loss(
        self, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        loss = berhu_loss if config.depth_loss == "berhu" else l1_loss
        return loss(output, target, depth_valid_mask(target, config))

    def meter(self, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu") -> DepthMeter:
        return DepthMeter(device)

    def update(
        self, meter: DepthMeter, output: torch.Tensor, target: torch.Tensor, config: TaskConfig
    ) -> None:
        meter.update(output.float(), target, depth_valid_mask(target, config))

    def check(self, config: Any) -> None:
        super().check(config)
        if config.data.augment.depth != "metres":
            raise ValueError(
                f"data.augment.depth={config.data.augment.depth!r}; the depth target needs 'metres'"
            )
