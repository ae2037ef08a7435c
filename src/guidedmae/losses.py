"""MultiMAE's reconstruction losses, computed on the masked patches only (by default).

Per output, its modality's loss: MSE on rgb, MSE on patch-normalized rgb (`norm_rgb`), L1 on depth (the
standardized depth the model also receives as input), cross-entropy on the semseg class map at 1/4
resolution; declared modalities name theirs (guidedmae.data.modalities). As in the
official criterion, each sample's loss is the mean over its masked pixels, and the batch loss the mean
over samples that have any masked pixel. `per_patch=True` also returns each output's loss per patch
(what loss-guided masking strategies learn from).
"""

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Literal, overload

import torch
import torch.nn.functional as F

from guidedmae.data.modalities import DERIVED_TARGETS, Modality, get_modality, output_loss
from guidedmae.models.adapters import patchify, unpatchify


@dataclass
class PatchLosses:
    """One output's loss per token patch, and which patches were hidden from the encoder."""

    values: torch.Tensor  # [B, N_m] float32: mean loss over the patch's pixels
    masked: torch.Tensor  # [B, N_m] bool: True = masked (all True if the modality was not an input)


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=dict)  # per output; missing outputs weigh 1
    on_unmasked: bool = False  # also take the loss on visible patches (MultiMAE: off)


def normalize_patches(images: torch.Tensor, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """Standardize every patch by its own mean and (unbiased) variance, as MAE's norm_pix_loss.

    [B, C, H, W] -> [B, C, H, W]
    """
    batch, channels, height, width = images.shape
    x = patchify(images, patch)  # [B, N, C * p * p]
    x = (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps)
    return unpatchify(x, (height // patch, width // patch), patch, channels)


def patch_means(per_pixel: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean of a [B, H, W] loss map over each patch: [B, (H/p) * (W/p)], in token order."""
    return patchify(per_pixel[:, None], patch).mean(dim=-1)


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None, patch: int) -> torch.Tensor:
    """Mean of a [B, H, W] loss map over the pixels of masked patches, per sample, then over samples.

    mask: [B, (H/p) * (W/p)] bool, True = masked; None = every pixel counts. Samples without masked
    pixels are left out; a batch without any gives a zero that keeps the graph.
    """
    if mask is None:
        return per_pixel.mean()
    weights = mask.view(mask.shape[0], -1).to(per_pixel.dtype)  # [B, N]: every patch has p * p pixels
    total = (patch_means(per_pixel, patch) * weights).sum(dim=1)
    count = weights.sum(dim=1)
    has_masked = count > 0
    if not has_masked.any():
        return per_pixel.sum() * 0.0
    return (total[has_masked] / count[has_masked]).mean()


def _squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] pair -> [B, H, W]: mean over channels."""
    return (pred.float() - target.float()).square().mean(dim=1)


def _absolute_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().mean(dim=1)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] logits, [B, H, W] ids -> [B, H, W] per-pixel cross-entropy."""
    return F.cross_entropy(logits.float(), target.long(), reduction="none")


def _pixel_loss(loss: str, pred: torch.Tensor, target: torch.Tensor, patch: int) -> torch.Tensor:
    """The per-pixel loss map [B, H, W] of one output under its modality's `loss`."""
    if loss == "cross_entropy":
        return _cross_entropy(pred, target)
    if loss == "l1":
        return _absolute_error(pred, target)
    if loss == "norm_mse":
        target = normalize_patches(target, patch)
    return _squared_error(pred, target)


@overload
def reconstruction_losses(
    preds: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    patch_size: int,
    weights: Mapping[str, float] | None = None,
    on_unmasked: bool = False,
    per_patch: Literal[False] = False,
    modalities: Mapping[str, Modality] | None = None,
) -> dict[str, torch.Tensor]: ...


@overload
def reconstruction_losses(
    preds: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    patch_size: int,
    weights: Mapping[str, float] | None = None,
    on_unmasked: bool = False,
    *,
    per_patch: Literal[True],
    modalities: Mapping[str, Modality] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, PatchLosses]]: ...


def reconstruction_losses(
    preds: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    patch_size: int,
    weights: Mapping[str, float] | None = None,
    on_unmasked: bool = False,
    per_patch: bool = False,
    modalities: Mapping[str, Modality] | None = None,
) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, PatchLosses]]:
    """The loss of every output and their weighted sum under 'total'.

    preds: {output: prediction} as returned by MultiMAE; targets: {modality: tensor} (rgb normalized,
    depth standardized, semseg ids at 1/4); masks: {modality: [B, N] bool}. An output whose modality was
    not an input, or `on_unmasked=True`, takes the loss over every patch. weights default to 1.
    modalities: declared modalities (the model config's); each output takes its modality's loss.
    Returns {name: scalar}; with per_patch=True, ({name: scalar}, {output: PatchLosses}) where the patch
    losses are detached.
    """
    weights = dict(weights or {})
    unknown = set(weights) - set(preds)
    if unknown:
        raise ValueError(f"loss weights given for {sorted(unknown)}, which are not outputs: {sorted(preds)}")
    losses: dict[str, torch.Tensor] = {}
    patches: dict[str, PatchLosses] = {}
    for name, pred in preds.items():
        source = DERIVED_TARGETS.get(name, name)
        if source not in targets:
            raise ValueError(f"no target for output {name!r}: targets hold {sorted(targets)}")
        patch = patch_size // get_modality(name, modalities).stride
        per_pixel = _pixel_loss(output_loss(name, modalities), pred, targets[source], patch)
        mask = masks.get(source)
        losses[name] = masked_mean(per_pixel, None if on_unmasked else mask, patch)
        if per_patch:
            values = patch_means(per_pixel.detach(), patch)
            patches[name] = PatchLosses(
                values, torch.ones_like(values, dtype=torch.bool) if mask is None else mask
            )
    losses["total"] = reduce(operator.add, [weights.get(name, 1.0) * loss for name, loss in losses.items()])
    return (losses, patches) if per_patch else losses


def modality_patch_losses(
    patch_losses: Mapping[str, PatchLosses],
    modalities: tuple[str, ...],
    weights: Mapping[str, float] | None = None,
) -> dict[str, PatchLosses]:
    """Per input modality, the weighted sum of the patch losses of the outputs reconstructing it (rgb:
    rgb and norm_rgb): what a loss-guided strategy ranks a modality's tokens by. {modality: PatchLosses}"""
    weights = dict(weights or {})
    combined: dict[str, PatchLosses] = {}
    for name, losses in patch_losses.items():
        source = DERIVED_TARGETS.get(name, name)
        if source not in modalities:
            continue
        values = weights.get(name, 1.0) * losses.values
        if source in combined:
            values = combined[source].values + values
        combined[source] = PatchLosses(values, losses.masked)
    return {name: combined[name] for name in modalities if name in combined}


def masked_patch_mean(losses: PatchLosses) -> torch.Tensor:
    """Mean loss over the masked patches of a batch (0 when none is masked): a scalar."""
    masked = losses.masked.to(losses.values.dtype)
    return (losses.values * masked).sum() / masked.sum().clamp_min(1)
