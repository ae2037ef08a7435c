"""Aligned augmentation: one crop, one flip, drawn once per sample and applied to every modality.

A raw sample is a dict of numpy arrays of the same height and width, one per modality
(guidedmae.data.modalities declares each):
    rgb     uint8   [H, W, 3]
    depth   float   [H, W]      metres (0 = no measurement)
    semseg  integer [H, W]      class ids
    other   [H, W] or [H, W, C]: uint8 (divided by the modality's scale after resizing) or values
    label   int                 image-level class (optional, passed through)
`augment_sample` turns it into the tensors the model takes:
    rgb     float32 [3, S, S]   ImageNet-normalized
    depth   float32 [1, S, S]   standardized per image, or metres
    semseg  int64   [S / stride, S / stride]
    other   float32 [C, S, S] normalized as declared; class maps int64 [S / stride, S / stride]
    label   int64   []
    view    float32 [5]         where the pixels come from: the crop box (top, left, height, width) as
                                fractions of the source image's height and width, then 1 if flipped
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from guidedmae.data.modalities import BUILTIN, IMAGENET_MEAN, IMAGENET_STD, Modality

DEPTH_MODES = ("standardize", "metres")
# ITU-R 601 luma weights, as in PIL's convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class AugmentConfig:
    """How a sample is cropped, flipped and normalized.

    train=True: random resized crop (area fraction in `scale`, aspect ratio in `ratio`), horizontal
    flip with probability `hflip`, colour jitter of strength `color_jitter` on rgb only.
    train=False: the largest centred square, resized to `size`; nothing random.
    depth: "standardize" (MultiMAE's truncated per-image standardization) or "metres" (depth targets).
    semseg_stride: semseg comes out at size // semseg_stride (4 for pretraining inputs, 1 for targets).
    """

    size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.0
    depth: str = "standardize"
    semseg_stride: int = BUILTIN["semseg"].stride
    train: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"augment.size must be a positive number of pixels, got {self.size}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"augment.scale must be (low, high) with 0 < low <= high <= 1, got {self.scale}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"augment.ratio must be (low, high) with 0 < low <= high, got {self.ratio}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"augment.hflip is a probability in [0, 1], got {self.hflip}")
        if not 0 <= self.color_jitter <= 1:
            raise ValueError(f"augment.color_jitter is a strength in [0, 1], got {self.color_jitter}")
        if self.depth not in DEPTH_MODES:
            raise ValueError(f"augment.depth must be one of {DEPTH_MODES}, got {self.depth!r}")
        if self.semseg_stride < 1 or self.size % self.semseg_stride:
            raise ValueError(
                f"augment.semseg_stride must be a positive divisor of augment.size={self.size}, "
                f"got {self.semseg_stride}"
            )


class CropBox(NamedTuple):
    top: int
    left: int
    height: int
    width: int


def uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> CropBox:
    """A box covering a random fraction `scale` of the image with aspect ratio (w / h) in `ratio`.

    The rule of torchvision's RandomResizedCrop: ten tries at a random area and log-uniform aspect
    ratio, then the largest centred box whose ratio is clamped into `ratio`.
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * uniform(scale[0], scale[1], generator)
        aspect = math.exp(uniform(log_low, log_high, generator))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return CropBox(top, left, crop_h, crop_w)
    image_ratio = width / height
    if image_ratio < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif image_ratio > ratio[1]:
        crop_w, crop_h = round(height * ratio[1]), height
    else:
        crop_w, crop_h = width, height
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def _center_square_box(height: int, width: int) -> CropBox:
    """The largest centred square: resize-shorter-side-then-centre-crop, done in one resize."""
    side = min(height, width)
    return CropBox((height - side) // 2, (width - side) // 2, side, side)


def _crop_and_resize(array: np.ndarray, box: CropBox, size: int, class_map: bool) -> Tensor:
    """Crop `box` out of array [H, W] or [H, W, C] and resize it to a tensor [C, size, size].

    The crop comes first: converting the whole image first was most of the cost of an rgb sample.
    8-bit colour stays 8-bit (torch's uint8 kernel is ~3x faster than float, and rounds to the nearest
    level, as MultiMAE's PIL resize does); the rest is resized as float32. Bilinear with antialiasing
    for continuous values; nearest for class ids, which must never be blended ("nearest-exact" samples
    pixel centres, unlike the legacy "nearest").
    """
    region = array[box.top : box.top + box.height, box.left : box.left + box.width]
    if not (region.flags.c_contiguous and region.flags.writeable):  # decoded images are read-only
        region = region.copy()
    pixels = torch.from_numpy(region)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if class_map or pixels.dtype != torch.uint8:
        pixels = pixels.float()
    if class_map:
        return F.interpolate(pixels[None], size=(size, size), mode="nearest-exact")[0]
    return F.interpolate(
        pixels[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


def _grayscale(rgb: Tensor) -> Tensor:
    """Luma of rgb [3, H, W] in [0, 1] -> [1, H, W]."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(0, keepdim=True)


def color_jitter(rgb: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Random brightness, contrast and saturation (in that order) of rgb [3, H, W] in [0, 1].

    Each factor is uniform in [1 - strength, 1 + strength], as torchvision's ColorJitter(s, s, s).
    """
    low, high = max(0.0, 1 - strength), 1 + strength
    rgb = (rgb * uniform(low, high, generator)).clamp(0, 1)
    mean_luma = _grayscale(rgb).mean()
    rgb = ((rgb - mean_luma) * uniform(low, high, generator) + mean_luma).clamp(0, 1)
    luma = _grayscale(rgb)
    return ((rgb - luma) * uniform(low, high, generator) + luma).clamp(0, 1)


def normalize_rgb(rgb: Tensor) -> Tensor:
    """rgb [3, H, W] in [0, 1] -> ImageNet-standardized."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb - mean) / std


def _sorted_values(values: Tensor) -> Tensor:
    """values sorted along the last dimension; on the CPU with numpy, whose vectorized sort is ~20x
    faster than torch's there (0.3 vs 6 ms for a 224x224 map): it was the data pipeline's costliest step."""
    if values.device.type != "cpu" or values.requires_grad:
        return values.sort(dim=-1).values
    return torch.from_numpy(np.sort(values.numpy(), axis=-1))


def standardize_depth(depth: Tensor, trim: float = 0.1, eps: float = 1e-6) -> Tensor:
    """MultiMAE's truncated standardization of each depth map in depth [..., H, W].

    Statistics come from the middle 80% of the sorted values (the lowest and highest 10% are
    outliers: holes, far walls); the mean and unbiased variance of those standardize the whole map.
    """
    flat = depth.flatten(-2)  # [..., H * W]
    num = flat.shape[-1]
    low, high = int(trim * num), int((1 - trim) * num)
    if high - low < 2:
        raise ValueError(f"a depth map of {num} pixels is too small to standardize (need at least 3)")
    kept = _sorted_values(flat)[..., low:high]
    mean = kept.mean(-1)[..., None, None]
    var = kept.var(-1)[..., None, None]
    return (depth - mean) / torch.sqrt(var + eps)


def to_values(image: Tensor, modality: Modality) -> Tensor:
    """A resized image [C, H, W] in the modality's units: 8-bit data divided by its scale, float as is."""
    return image.float() / modality.scale if image.dtype == torch.uint8 else image


def normalize(values: Tensor, modality: Modality) -> Tensor:
    """values [C, H, W] normalized as the modality declares (imagenet, standardize, fixed or none)."""
    if modality.normalize == "imagenet":
        return normalize_rgb(values)
    if modality.normalize == "standardize":
        return standardize_depth(values)
    if modality.normalize == "fixed":
        mean = torch.tensor(modality.mean, dtype=values.dtype).view(-1, 1, 1)
        std = torch.tensor(modality.std, dtype=values.dtype).view(-1, 1, 1)
        return (values - mean) / std
    return values


def hflip(value: Tensor, modality: Modality) -> Tensor:
    """Mirror left-right; the channels in flip_negates change sign (normals: x points the other way)."""
    value = value.flip(-1)
    if modality.flip_negates:
        value[list(modality.flip_negates)] *= -1
    return value


def class_map_stride(modality: Modality, config: AugmentConfig) -> int:
    """semseg's resolution divisor is the augmentation's (1 for targets); other class maps keep theirs."""
    return config.semseg_stride if modality.name == "semseg" else modality.stride


def keeps_units(modality: Modality, config: AugmentConfig) -> bool:
    """Whether the modality skips normalization: depth targets stay in metres."""
    return modality.name == "depth" and config.depth == "metres"


def augment_sample(
    sample: dict,
    config: AugmentConfig,
    generator: torch.Generator,
    modalities: Mapping[str, Modality] | None = None,
) -> dict[str, Tensor]:
    """Raw sample (numpy arrays, see the module docstring) -> the model's tensors, aligned.

    modalities: the records of the sample's modalities (default: the built-ins it holds). The crop, the
    flip and the jitter are drawn from `generator` once; every modality goes through the same crop and
    flip.
    """
    if modalities is None:
        modalities = {name: BUILTIN[name] for name in BUILTIN if name in sample}
    images = {name: sample[name] for name in modalities}
    shapes = {name: tuple(image.shape[:2]) for name, image in images.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"the modalities of a sample must have the same height and width, got {shapes}")
    height, width = next(iter(shapes.values()))

    if config.train:
        box = random_resized_crop_box(height, width, config.scale, config.ratio, generator)
        flip = torch.rand((), generator=generator).item() < config.hflip
    else:
        box, flip = _center_square_box(height, width), False

    out: dict[str, Tensor] = {}
    for name, modality in modalities.items():
        if modality.is_class_map:
            size = config.size // class_map_stride(modality, config)
            out[name] = _crop_and_resize(images[name], box, size, class_map=True)[0].long()  # [S/s, S/s]
            continue
        values = to_values(_crop_and_resize(images[name], box, config.size, class_map=False), modality)
        if modality.color_jitter and config.train and config.color_jitter > 0:
            values = color_jitter(values, config.color_jitter, generator)
        out[name] = values if keeps_units(modality, config) else normalize(values, modality)  # [C, S, S]
    if flip:
        out = {name: hflip(tensor, modalities[name]) for name, tensor in out.items()}
    if "label" in sample:
        out["label"] = torch.tensor(sample["label"], dtype=torch.int64)
    out["view"] = torch.tensor(
        [box.top / height, box.left / width, box.height / height, box.width / width, float(flip)]
    )
    return out
