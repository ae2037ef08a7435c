"""MultiMAE's reconstruction losses, computed on the masked patches only (by default).

Per output: MSE on rgb, MSE on patch-normalized rgb (`norm_rgb`), L1 on depth (the standardized depth
the model also receives as input), cross-entropy on the semseg class map at 1/4 resolution. As in the
official criterion, each sample's loss is the mean over its masked pixels, and the batch loss the mean
over samples that have any masked pixel.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from guidedmae.data.modalities import DERIVED_TARGETS, get_modality


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=dict)  # per output; missing outputs weigh 1
    on_unmasked: bool = False  # also take the loss on visible patches (MultiMAE: off)


def normalize_patches(images: torch.Tensor, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """Standardize every patch by its own mean and (unbiased) variance, as MAE's norm_pix_loss.

    [B, C, H, W] -> [B, C, H, W]
    """
    batch, channels, height, width = images.shape
    x = images.reshape(batch, channels, height // patch, patch, width // patch, patch)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(batch, height // patch, width // patch, -1)
    x = (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps)
    x = x.reshape(batch, height // patch, width // patch, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None, patch: int) -> torch.Tensor:
    """Mean of a [B, H, W] loss map over the pixels of masked patches, per sample, then over samples.

    mask: [B, (H/p) * (W/p)] bool, True = masked; None = every pixel counts. Samples without masked
    pixels are left out; a batch without any gives a zero that keeps the graph.
    """
    if mask is None:
        return per_pixel.mean()
    batch, height, width = per_pixel.shape
    weights = mask.view(batch, height // patch, width // patch).to(per_pixel.dtype)
    weights = weights.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)  # [B, H, W]
    total = (per_pixel * weights).flatten(1).sum(dim=1)
    count = weights.flatten(1).sum(dim=1)
    has_masked = count > 0
    if not has_masked.any():
        return per_pixel.sum() * 0.0
    return (total[has_masked] / count[has_masked]).mean()


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    patch: int,
    normalize_target: bool = False,
) -> torch.Tensor:
    """Mean squared error over channels, then masked_mean. pred, target: [B, C, H, W]."""
    if normalize_target:
        target = normalize_patches(target, patch)
    return masked_mean((pred.float() - target.float()).square().mean(dim=1), mask, patch)


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, patch: int
) -> torch.Tensor:
    """Absolute error over channels, then masked_mean. pred, target: [B, C, H, W]."""
    return masked_mean((pred.float() - target.float()).abs().mean(dim=1), mask, patch)


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    patch: int,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pixel cross-entropy, then masked_mean. logits: [B, K, H, W], target: [B, H, W] class ids."""
    per_pixel = F.cross_entropy(
        logits.float(),
        target.long(),
        reduction="none",
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    return masked_mean(per_pixel, mask, patch)


def reconstruction_losses(
    preds: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    patch_size: int,
    weights: Mapping[str, float] | None = None,
    on_unmasked: bool = False,
) -> dict[str, torch.Tensor]:
    """The loss of every output and their weighted sum under 'total'.

    preds: {output: prediction} as returned by MultiMAE; targets: {modality: tensor} (rgb normalized,
    depth standardized, semseg ids at 1/4); masks: {modality: [B, N] bool}. An output whose modality was
    not an input, or `on_unmasked=True`, takes the loss over every patch. weights default to 1.
    """
    weights = dict(weights or {})
    unknown = set(weights) - set(preds)
    if unknown:
        raise ValueError(f"loss weights given for {sorted(unknown)}, which are not outputs: {sorted(preds)}")
    losses = {}
    for name, pred in preds.items():
        source = DERIVED_TARGETS.get(name, name)
        if source not in targets:
            raise ValueError(f"no target for output {name!r}: targets hold {sorted(targets)}")
        target, mask = targets[source], None if on_unmasked else masks.get(source)
        modality = get_modality(name)
        patch = patch_size // modality.stride
        if modality.is_class_map:
            losses[name] = masked_cross_entropy(pred, target, mask, patch)
        elif name == "depth":
            losses[name] = masked_l1(pred, target, mask, patch)
        else:
            losses[name] = masked_mse(pred, target, mask, patch, normalize_target=name in DERIVED_TARGETS)
    losses["total"] = sum(weights.get(name, 1.0) * loss for name, loss in losses.items())
    return losses
