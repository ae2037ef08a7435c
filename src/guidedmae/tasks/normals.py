"""Surface normals: target batch["normals"] [B, 3, H, W] (the normals modality, its components centred on
0 by its normalization); L1 over valid pixels; angular errors in degrees (mean, median, RMSE, share within
11.25 / 22.5 / 30).

A pixel is valid where its target is about a unit vector: a missing normal, stored as 0 (or as the
normalization of 0), is left out of loss and metrics.
"""

import torch

from guidedmae.metrics import NormalsMeter
from guidedmae.tasks.depth import l1_loss
from guidedmae.tasks.task import Task, TaskConfig, register_task

UNIT_TOLERANCE = 0.25  # a target whose length is 1 +- this is a measured normal


def normals_valid_mask(normals: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, H, W]: pixels whose target normal [B, 3, H, W] is about unit length."""
    length = normals.float().norm(dim=1, keepdim=True)
    return (length - 1).abs() < UNIT_TOLERANCE


@register_task
class Normals(Task):
    name = "normals"
    target_key = "normals"
    dense = True
    head_kinds = ("dpt", "convnext", "linear")

    def out_channels(self, num_classes: int) -> int:
        return 3  # x, y, z

    def loss(
        self, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        return l1_loss(output, target, normals_valid_mask(target))

    def meter(self, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu") -> NormalsMeter:
        return NormalsMeter(device)

    def update(
        self, meter: NormalsMeter, output: torch.Tensor, target: torch.Tensor, config: TaskConfig
    ) -> None:
        meter.update(output.float(), target, normals_valid_mask(target))
