"""Evaluation of a fine-tuned model on a split: center crops, whole images, or sliding windows.

    center    the eval transform of the data set (largest centred square, resized): batched
    whole     the whole image, longer side resized to the model's size and padded to a square
              (MultiMAE's semseg evaluation; padding is ignore_index / invalid depth): batched
    sliding   shorter side resized to the model's size; windows of that size every `stride` pixels
              along the longer side, their predictions averaged: one image per batch

Each process evaluates every world_size-th sample (no padding, no duplicates) and the meters'
totals are summed over processes, so the metrics are those of the whole split, exactly once.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from guidedmae.data.datasets import AugmentedDataset, SizedDataset
from guidedmae.data.loader import reuse_freed_memory
from guidedmae.data.modalities import BUILTIN, Modality
from guidedmae.data.transforms import AugmentConfig, class_map_stride, keeps_units, normalize, to_values
from guidedmae.infra.distributed import DistributedContext, all_reduce_sum
from guidedmae.infra.precision import autocast
from guidedmae.models.task_model import FineTuneModel
from guidedmae.tasks import EvalConfig, Task, TaskConfig


def _resize_map(image: torch.Tensor, size: tuple[int, int], class_map: bool) -> torch.Tensor:
    """[C, H, W] -> [C, *size]: antialiased bilinear for values, nearest for class ids (never blended)."""
    if class_map:
        return F.interpolate(image[None].float(), size=size, mode="nearest-exact")[0]
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def resize_for_eval(
    sample: dict,
    augment: AugmentConfig,
    mode: str,
    ignore_index: int,
    modalities: Mapping[str, Modality] | None = None,
) -> dict[str, torch.Tensor]:
    """A raw sample (see guidedmae.data.transforms) resized to augment.size without cropping, as the model
    takes it, normalized as in training (augment.depth, augment.semseg_stride).

    whole: longer side -> size, padded at the bottom and right to size x size (images with 0: rgb's
    mean colour, standardized depth's mean, metric depth's "missing"; class maps with ignore_index).
    sliding: shorter side -> size. modalities: their records (default: the built-ins the sample holds).
    """
    if modalities is None:
        modalities = {name: BUILTIN[name] for name in BUILTIN if name in sample}
    size = augment.size
    height, width = sample[next(iter(modalities))].shape[:2]
    scale = size / (max(height, width) if mode == "whole" else min(height, width))
    new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = {}
    for name, modality in modalities.items():
        array = np.asarray(sample[name])
        image = torch.from_numpy(array.copy())
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
        if modality.is_class_map:
            stride = class_map_stride(modality, augment)
            resized = _resize_map(image, (new_size[0] // stride, new_size[1] // stride), class_map=True)
            out[name] = resized[0].long()
            continue
        values = to_values(image, modality)
        values = _resize_map(values.float(), new_size, class_map=False)
        out[name] = values if keeps_units(modality, augment) else normalize(values, modality)
    if mode == "whole":
        for name, value in out.items():
            modality = modalities[name]
            target = size // (class_map_stride(modality, augment) if modality.is_class_map else 1)
            bottom, right = target - value.shape[-2], target - value.shape[-1]
            pad = ignore_index if modality.is_class_map else 0.0
            out[name] = F.pad(value, (0, right, 0, bottom), value=pad)
    if "label" in sample:
        out["label"] = torch.tensor(sample["label"], dtype=torch.int64)
    return out


class WholeImages(SizedDataset):
    """The raw samples of an augmented data set (its `load`), resized for `whole` or `sliding` evaluation
    as its augmentation and modalities say."""

    def __init__(self, dataset: AugmentedDataset, mode: str, ignore_index: int) -> None:
        if not hasattr(dataset, "load"):
            raise ValueError(
                f"eval.mode={mode} needs a data set with raw samples, got {type(dataset).__name__}"
            )
        self.dataset, self.mode, self.ignore_index = dataset, mode, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        raw = self.dataset.load(index)
        return resize_for_eval(
            raw, self.dataset.augment, self.mode, self.ignore_index, self.dataset.modalities
        )


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of `window` pixels every `stride` pixels, the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def sliding_window(
    predict: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    window: int,
    stride: int,
) -> torch.Tensor:
    """Average of `predict` over window x window crops covering the inputs.

    inputs: {modality: [B, C, H, W]} image-like tensors of one size; predict maps a crop dict to
    [B, K, h, w] at the crop's size. Returns [B, K, H, W]; each pixel averages every window holding it.
    """
    height, width = next(iter(inputs.values())).shape[-2:]
    corners = [
        (top, left)
        for top in window_starts(height, window, stride)
        for left in window_starts(width, window, stride)
    ]

    def predict_at(top: int, left: int) -> torch.Tensor:
        return predict(
            {name: x[..., top : top + window, left : left + window] for name, x in inputs.items()}
        ).float()

    first = predict_at(*corners[0])  # its shape sizes the sums
    total = first.new_zeros(*first.shape[:2], height, width)
    counts = first.new_zeros(1, 1, height, width)
    for index, (top, left) in enumerate(corners):
        prediction = first if index == 0 else predict_at(top, left)
        rows, cols = prediction.shape[-2:]
        total[..., top : top + rows, left : left + cols] += prediction
        counts[..., top : top + rows, left : left + cols] += 1
    return total / counts


def shard_loader(
    dataset: SizedDataset, batch_size: int, num_workers: int, context: DistributedContext
) -> DataLoader:
    """This process's share of an evaluation split: samples rank, rank + W, ... in order."""
    indices = range(context.rank, len(dataset), context.world_size)
    return DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=context.device.type == "cuda",
        worker_init_fn=reuse_freed_memory,
    )


@torch.no_grad()
def evaluate(
    model: FineTuneModel,
    dataset: SizedDataset,
    task: Task,
    num_classes: int,
    task_config: TaskConfig,
    eval_config: EvalConfig,
    context: DistributedContext,
    precision: str,
    batch_size: int,
    num_workers: int = 0,
) -> Any:
    """The task's meter (see guidedmae.metrics) over the whole split, summed over processes.

    model maps {modality: tensor} to the task's output; its inputs are the batch entries named in
    model.encoder.config.inputs. The model is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    inputs_of = model.encoder.config.inputs
    window = model.encoder.config.image_size
    stride = eval_config.stride or max(1, math.ceil(2 * window / 3))
    if eval_config.mode == "sliding":
        class_maps = [name for name in inputs_of if model.encoder.modalities[name].is_class_map]
        if class_maps:
            raise ValueError(f"eval.mode=sliding crops image-like inputs only; {class_maps} are class maps")
        batch_size = 1
    meter = task.meter(num_classes, task_config, context.device)
    for batch in shard_loader(dataset, batch_size, num_workers, context):
        batch = {name: value.to(context.device, non_blocking=True) for name, value in batch.items()}
        inputs = {name: batch[name] for name in inputs_of}
        with autocast(context.device, precision):
            if eval_config.mode == "sliding" and task.dense:
                output = sliding_window(model, inputs, window, stride)
            else:
                output = model(inputs)
        task.update(meter, output, task.target(batch, task_config), task_config)
    meter.totals = all_reduce_sum(context, meter.totals)
    model.train(was_training)
    return meter
