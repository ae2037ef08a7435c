"""Semantic segmentation: target batch["semseg"] [B, H, W]; cross-entropy leaving out task.ignore_index;
mIoU over a confusion matrix, with every class's IoU (and the objects' mean where the data names them).

task.reduce_zero_label (ADE20K's and NYUv2's recipes): class 0 ("other" / unlabeled) becomes
ignore_index and class k becomes k - 1.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F

from guidedmae.data.modalities import IGNORE_INDEX
from guidedmae.metrics import SegmentationMeter, format_iou_table, iou_per_class
from guidedmae.tasks.task import Task, TaskConfig, register_task


def reduce_zero_label(semseg: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Class 0 ("other" / unlabeled) becomes ignore_index and class k becomes k - 1; ignore stays ignore."""
    return torch.where((semseg == 0) | (semseg == ignore_index), ignore_index, semseg - 1)


@register_task
class Segmentation(Task):
    name = "semseg"
    target_key = "semseg"
    dense = True
    # "linear" is DINOv2's linear probe of dense features
    head_kinds = ("convnext", "dpt", "linear")
    classes_per_pixel = True

    def target(self, batch: dict[str, torch.Tensor], config: TaskConfig) -> torch.Tensor:
        target = super().target(batch, config)
        return reduce_zero_label(target, config.ignore_index) if config.reduce_zero_label else target

    def loss(
        self, output: torch.Tensor, target: torch.Tensor, config: TaskConfig, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, ignore_index=config.ignore_index)

    def meter(
        self, num_classes: int, config: TaskConfig, device: torch.device | str = "cpu"
    ) -> SegmentationMeter:
        return SegmentationMeter(num_classes, config.ignore_index, device)

    def scores(
        self, meter: SegmentationMeter, class_names: list[str] | None, object_classes: tuple[str, ...]
    ) -> dict:
        """mIoU and the rest, per-class IoU (percent; None for a class never seen), its table, and
        iou/<class> and miou_objects among the metrics for the object classes."""
        names = class_names or [str(index) for index in range(meter.num_classes)]
        per_class = {
            name: None if math.isnan(iou) else 100 * iou
            for name, iou in zip(names, iou_per_class(meter.confusion).tolist())
        }
        metrics = meter.compute()
        objects = {name: iou for name in object_classes if (iou := per_class.get(name)) is not None}
        metrics.update({f"iou/{name}": iou for name, iou in objects.items()})
        if objects:
            metrics["miou_objects"] = sum(objects.values()) / len(objects)
        return {
            "metrics": metrics,
            "per_class_iou": per_class,
            "iou_table": format_iou_table(meter.confusion, names),
        }

    def class_ids(self, num_classes: int, config: TaskConfig) -> dict:
        # Stored ids run one above the classes where reduce_zero_label shifts them down.
        shift = 1 if config.reduce_zero_label else 0
        return {"semseg_classes": num_classes + shift, "ignore_index": config.ignore_index}

    def check(self, config: Any) -> None:
        super().check(config)
        if config.data.augment.semseg_stride != 1:
            raise ValueError(
                f"data.augment.semseg_stride={config.data.augment.semseg_stride}; semseg targets are full "
                "resolution: set 1"
            )
