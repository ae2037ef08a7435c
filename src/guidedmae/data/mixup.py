"""Mixup and CutMix for a batch of (possibly multi-modal) images, with label-smoothed soft targets.

One mixing per batch, as MultiMAE's IN1K recipe (timm's Mixup in 'batch' mode): each sample is
mixed with the sample at the mirrored batch position (batch.flip(0)). With probability
`switch_prob` the batch is cut-mixed (a box of area 1 - lam pasted from the partner, lam drawn from
Beta(cutmix, cutmix)), otherwise mixed (x = lam x + (1 - lam) x', lam ~ Beta(mixup, mixup)). The
same lam and box apply to every image modality of the batch, so the modalities stay aligned. The
targets follow: lam y + (1 - lam) y' on label-smoothed one-hot vectors (lam corrected to the box's
actual area after clipping for CutMix).
"""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MixupConfig:
    """MultiMAE's IN1K values: mixup 0.8, cutmix 1.0, always one of them, switching half the time."""

    mixup: float = 0.0  # Beta(a, a) concentration of mixup; 0 = off
    cutmix: float = 0.0  # Beta(a, a) concentration of CutMix; 0 = off
    prob: float = 1.0  # probability of mixing a batch at all
    switch_prob: float = 0.5  # with both on: probability of CutMix rather than mixup
    label_smoothing: float = 0.0  # also used without mixing (cross-entropy's label_smoothing)

    def __post_init__(self) -> None:
        checks = (
            ("mixup", self.mixup >= 0, ">= 0 (0 = off)"),
            ("cutmix", self.cutmix >= 0, ">= 0 (0 = off)"),
            ("prob", 0 <= self.prob <= 1, "a probability in [0, 1]"),
            ("switch_prob", 0 <= self.switch_prob <= 1, "a probability in [0, 1]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
        )
        for key, ok, expected in checks:
            if not ok:
                raise ValueError(f"mixup.{key}={getattr(self, key)!r}; expected {expected}")

    @property
    def enabled(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0


def smooth_one_hot(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """[B] class ids -> [B, K] soft targets: 1 - smoothing + smoothing / K on the class, smoothing / K elsewhere."""
    off = smoothing / num_classes
    soft = torch.full((targets.shape[0], num_classes), off, device=targets.device)
    return soft.scatter_(1, targets[:, None], 1.0 - smoothing + off)


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator
) -> tuple[tuple[int, int, int, int], float]:
    """A box of area about (1 - lam) * height * width, centred uniformly at random, clipped to the image.

    Returns (top, bottom, left, right) and the lam that the clipped box actually leaves.
    """
    cut = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    centre_y = int(torch.randint(0, height, (), generator=generator))
    centre_x = int(torch.randint(0, width, (), generator=generator))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    return (top, bottom, left, right), 1.0 - (bottom - top) * (right - left) / (height * width)


def mix_batch(
    images: dict[str, torch.Tensor],
    targets: torch.Tensor,
    num_classes: int,
    config: MixupConfig,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Mix a batch: images {modality: [B, C, H, W] float} and targets [B] -> (mixed images, soft targets [B, K]).

    Every modality must share H and W (CutMix cuts one box out of all of them). Class-map inputs
    cannot be blended: pass only float images. The partner of sample i is sample B - 1 - i (the middle
    sample of an odd batch is its own partner).
    """
    soft = smooth_one_hot(targets, num_classes, config.label_smoothing)
    not_float = [name for name, image in images.items() if not image.is_floating_point() or image.ndim != 4]
    if not_float:
        raise ValueError(f"mixup/cutmix blend float images [B, C, H, W]; {not_float} are not (class maps?)")
    sizes = {name: tuple(image.shape[-2:]) for name, image in images.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"mixup/cutmix need every input at the same size, got {sizes}")
    if not config.enabled or torch.rand((), generator=generator).item() >= config.prob:
        return images, soft

    use_cutmix = config.cutmix > 0 and (
        config.mixup == 0 or torch.rand((), generator=generator).item() < config.switch_prob
    )
    alpha = config.cutmix if use_cutmix else config.mixup
    # torch's Beta sampler takes no generator: draw lam from a numpy generator seeded by this one.
    lam = float(
        np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator))).beta(alpha, alpha)
    )

    mixed = {}
    if use_cutmix:
        height, width = next(iter(sizes.values()))
        (top, bottom, left, right), lam = cutmix_box(height, width, lam, generator)
        for name, image in images.items():
            out = image.clone()
            out[..., top:bottom, left:right] = image.flip(0)[..., top:bottom, left:right]
            mixed[name] = out
    else:
        mixed = {name: image * lam + image.flip(0) * (1.0 - lam) for name, image in images.items()}
    return mixed, soft * lam + soft.flip(0) * (1.0 - lam)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k t_k log softmax(logits)_k: logits, soft_targets [B, K] -> scalar."""
    return -(soft_targets * logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()
