"""Pictures of masked reconstruction: per sample and output, the input, the attention heat map, the
chosen mask and the reconstruction, as one PNG grid.

Columns: input | scores (guided strategies: attention, predicted loss, ...) | masked input | prediction | prediction + visible patches.
Rows: one per output (rgb, depth, semseg, norm_rgb), samples stacked below each other.
"""

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from guidedmae.data.modalities import DERIVED_TARGETS, IMAGENET_MEAN, IMAGENET_STD, Modality, get_modality
from guidedmae.infra.files import atomic_write
from guidedmae.masking.strategy import MaskChoice

COLUMNS = ("input", "attention", "masked input", "prediction", "pred. + visible")
PANEL = 128  # pixels per panel side: small inputs are enlarged so patches stay visible
HEADER, LABEL, GAP = 18, 70, 6
MASKED_GREY = 0.5
# Colour maps: score maps (each scaled to its own min..max), one-channel values (depth: 2nd..98th
# percentile of the target), class ids (one colour per id, repeating every 20).
SCORE_COLOURS, VALUE_COLOURS, CLASS_COLOURS = "inferno", "magma", "tab20"


def colormap(values: np.ndarray, name: str) -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] floats in [0, 1]."""
    return matplotlib.colormaps[name](np.clip(values, 0.0, 1.0))[..., :3]


def _colour_picture(image: torch.Tensor, modality: Modality, reference: torch.Tensor) -> np.ndarray:
    """[C, H, W] (C >= 2) -> [H, W, 3] in [0, 1]: imagenet and fixed normalizations undone (rgb, normals);
    other values scaled per channel by the 2nd..98th percentile of the reference (the target). The first
    three channels are shown; a 2-channel image as red and green."""
    image = image.float().cpu()[:3]
    if modality.normalize in ("imagenet", "fixed"):
        mean, std = (
            (IMAGENET_MEAN, IMAGENET_STD)
            if modality.normalize == "imagenet"
            else (modality.mean, modality.std)
        )
        image = image * torch.tensor(std[:3])[:, None, None] + torch.tensor(mean[:3])[:, None, None]
    else:
        flat = reference.float().cpu()[:3].flatten(1)
        low, high = flat.quantile(0.02, dim=1), flat.quantile(0.98, dim=1)
        image = (image - low[:, None, None]) / (high - low).clamp_min(1e-6)[:, None, None]
    if len(image) == 2:
        image = torch.cat([image, torch.zeros_like(image[:1])])
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def _value_picture(values: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """[1, H, W] -> [H, W, 3], scaled by the 2nd..98th percentile of the reference (the target) values."""
    low, high = np.percentile(reference.float().cpu().numpy(), [2, 98])
    return colormap((values[0].float().cpu().numpy() - low) / max(high - low, 1e-6), VALUE_COLOURS)


def class_picture(classes: torch.Tensor) -> np.ndarray:
    """[h, w] class ids -> [h, w, 3], a fixed well-separated colour per id (ids repeat every 20)."""
    return matplotlib.colormaps[CLASS_COLOURS](classes.long().cpu().numpy() % 20)[..., :3]


def _picture(
    name: str, value: torch.Tensor, target: torch.Tensor, patch: int, modality: Modality
) -> np.ndarray:
    """One output's tensor (a prediction or its target) as an [H, W, 3] picture; `modality` says how."""
    if modality.is_class_map:
        return class_picture(value.argmax(dim=0) if value.is_floating_point() else value)
    if name in DERIVED_TARGETS:
        # Patch-normalized prediction: undo the normalization with the target patch statistics, as MAE shows it.
        value = _unnormalize_patches(value.float(), target.float(), patch)
    if modality.channels == 1:
        return _value_picture(value, target)
    return _colour_picture(value, modality, target)


def _unnormalize_patches(pred: torch.Tensor, target: torch.Tensor, patch: int) -> torch.Tensor:
    """Map a patch-normalized [C, H, W] prediction back with each target patch's mean and std."""
    target_patches = target.unfold(1, patch, patch).unfold(2, patch, patch)  # [C, gh, gw, p, p]
    mean = target_patches.mean(dim=(0, 3, 4), keepdim=True)  # statistics over C * p * p, as normalize_patches
    std = target_patches.var(dim=(0, 3, 4), keepdim=True).add(1e-6).sqrt()
    per_patch = pred.unfold(1, patch, patch).unfold(2, patch, patch) * std + mean
    channels, grid_h, grid_w = per_patch.shape[:3]
    return per_patch.permute(0, 1, 3, 2, 4).reshape(channels, grid_h * patch, grid_w * patch)


def _token_map(per_token: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[N] per-token values -> [H, W] by nearest upsampling of the token grid (same aspect as the image)."""
    height, width = size
    grid_h = round((per_token.numel() * height / width) ** 0.5)
    grid = per_token.float().cpu().view(1, 1, grid_h, per_token.numel() // grid_h)
    return F.interpolate(grid, size=size, mode="nearest")[0, 0].numpy()


def panel_image(picture: np.ndarray, size: int = PANEL) -> Image.Image:
    image = Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8))
    return image.resize((size, size * image.height // image.width), Image.Resampling.NEAREST)


def sample_panels(
    name: str,
    target: torch.Tensor | None,
    pred: torch.Tensor,
    mask: torch.Tensor | None,
    score: torch.Tensor | None,
    patch: int,
    modality: Modality | None = None,
) -> list[np.ndarray | None]:
    """The five pictures of one output of one sample (None where a column does not apply). A derived
    output (norm_rgb) shows its source as the input, and its prediction with each patch's mean and std
    taken from that input (MAE's way: patch-normalized pixels alone look grey). modality: the output's
    record (default: the built-in one). Without a target (a modality the image came without) only the
    prediction is drawn, its values scaled by its own range."""
    modality = modality or get_modality(name)
    if target is None:
        return [None, None, None, _picture(name, pred, pred, patch, modality), None]
    shown = _picture(modality.name, target, target, patch, modality)
    predicted = _picture(name, pred, target, patch, modality)
    size = shown.shape[:2]
    masked = hidden = None
    if mask is not None:
        hidden = _token_map(mask.float(), size)[..., None] > 0.5  # [H, W, 1]
        masked = np.where(hidden, MASKED_GREY, shown)
    heat = None
    if score is not None:
        values = _token_map(score, size)
        values = (values - values.min()) / max(values.max() - values.min(), 1e-12)
        heat = 0.35 * shown.mean(axis=-1, keepdims=True) + 0.65 * colormap(values, SCORE_COLOURS)
    pasted = predicted if hidden is None else np.where(hidden, predicted, shown)
    return [shown, heat, masked, predicted, pasted]


def output_rows(
    batch: dict[str, torch.Tensor],
    choice: MaskChoice,
    preds: dict[str, torch.Tensor],
    sample: int,
    patch_size: int,
    modalities: Mapping[str, Modality] | None = None,
) -> list[tuple[str, bool, list[np.ndarray | None]]]:
    """Per output of sample `sample`: its name, whether the batch holds its input, and its five pictures
    (sample_panels). A derived output whose source the batch lacks (norm_rgb without rgb) is left out:
    patch-normalized predictions are drawn with their source's patch statistics."""
    masks, scores = choice.selection.masks, choice.scores or {}
    rows = []
    for name in preds:
        source = DERIVED_TARGETS.get(name, name)
        if name in DERIVED_TARGETS and source not in batch:
            continue
        modality = get_modality(name, modalities)
        panels = sample_panels(
            name,
            batch[source][sample] if source in batch else None,
            preds[name][sample].detach(),
            masks[source][sample] if source in masks else None,
            scores[source][sample] if source in scores else None,
            patch_size // modality.stride,
            modality,
        )
        rows.append((name, source in batch, panels))
    return rows


def reconstruction_figure(
    batch: dict[str, torch.Tensor],
    choice: MaskChoice,
    preds: dict[str, torch.Tensor],
    max_samples: int = 4,
    patch_size: int = 16,
    score_label: str = "attention",
    modalities: Mapping[str, Modality] | None = None,
) -> Image.Image:
    """A grid of inputs, score maps, masks and reconstructions for the first `max_samples` samples.

    batch: model-ready tensors (the targets; an output whose modality it lacks shows its prediction only,
    and a derived one, norm_rgb without rgb, is left out); choice: the masks (and scores) used; preds:
    model outputs.
    patch_size: the model's patch size (for patch-normalized outputs); score_label: what the scores are
    (the second column's title: attention, predicted loss, ...); modalities: the model's records of
    declared modalities (how each output is drawn).
    """
    num_samples = min(max_samples, next(iter(preds.values())).shape[0])
    samples = [
        output_rows(batch, choice, preds, sample, patch_size, modalities) for sample in range(num_samples)
    ]
    row_height = max(PANEL * preds[name].shape[-2] // preds[name].shape[-1] for name, _, _ in samples[0])
    width = LABEL + len(COLUMNS) * (PANEL + GAP)
    height = HEADER + num_samples * (len(samples[0]) * (row_height + GAP) + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate((COLUMNS[0], score_label, *COLUMNS[2:])):
        draw.text((LABEL + column * (PANEL + GAP) + 4, 3), title, fill="black")
    top = HEADER
    for sample, rows in enumerate(samples):
        for name, given, panels in rows:
            label = f"#{sample} {name}" + ("\n(mean, std\nof the input)" if name in DERIVED_TARGETS else "")
            label += "" if given else "\n(not given)"
            draw.text((4, top + row_height // 2 - 6), label, fill="black")
            for column, panel in enumerate(panels):
                if panel is not None:
                    canvas.paste(panel_image(panel), (LABEL + column * (PANEL + GAP), top))
            top += row_height + GAP
        top += GAP
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (temp file in the same folder, fsync, rename): never a half-written file."""
    return atomic_write(path, lambda file: image.save(file, format="PNG"))
