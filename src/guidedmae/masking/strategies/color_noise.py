"""Coloured-noise masks (ColorMAE, Hinojosa et al., ECCV 2024): data-independent masks from filtered white
noise, each colour a spatial prior. With G_s a Gaussian blur of s tokens and W white noise on the grid:

    white   W                    no prior: random masking
    red     G_s W                low-pass: large hidden blobs
    blue    W - G_s W            high-pass: hidden tokens spread evenly
    green   G_s W - G_s2 W       band-pass (a difference of Gaussians, s < s2): blobs of one size,
                                 ColorMAE's best (+2.7 ADE20K mIoU over random masking for MAE ViT-B)
    purple  W - (G_s W - G_s2 W) band-stop

As in ColorMAE the tokens of the highest noise stay visible (the lowest are hidden first). The noise is
drawn on the grid enlarged by the filter's reach on every side and cropped back, so tokens at the border
are filtered like the others: every position is hidden equally often. ColorMAE draws its patterns from a
precomputed bank with widths tuned for 14 x 14 grids; here each mask is drawn fresh, and the widths are
options in tokens (defaults 1 and 2: blobs of a few tokens on the 8 x 8 grids of the demo model).
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from guidedmae.masking.priority import generator_device
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, register
from guidedmae.models.architecture import MultiMAEConfig

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


COLORS = ("white", "red", "blue", "green", "purple")


@dataclass
class ColorNoiseOptions:
    color: str = "green"  # white | red | blue | green | purple (see the module's table)
    sigma: float = 1.0  # tokens: the Gaussian of red and blue, the narrower one of green and purple
    sigma_wide: float = 2.0  # tokens: the wider Gaussian of green and purple


def _blur(noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of noise [B, H, W] ('valid': the result is 2 * radius smaller per side)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=noise.dtype, device=noise.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    batch, height, width = noise.shape
    rows = F.conv1d(noise.reshape(batch * height, 1, width), kernel).view(batch, height, -1)
    columns = rows.transpose(1, 2).reshape(-1, 1, height)
    return F.conv1d(columns, kernel).view(batch, -1, height - 2 * radius).transpose(1, 2)


def colored_noise(
    batch_size: int,
    grid: tuple[int, int],
    color: str,
    sigma: float,
    sigma_wide: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise of `color` on a rows x cols grid, per sample: float32 [B, rows * cols], on the generator's
    device. Drawn with a margin of the widest filter's reach and cropped back, so it is stationary."""
    if color not in COLORS:
        raise ValueError(f"noise color {color!r}; expected one of {COLORS}")
    rows, cols = grid
    margin = (
        0
        if color == "white"
        else math.ceil(3 * max(sigma, sigma_wide if color in ("green", "purple") else 0))
    )
    white = torch.randn(
        batch_size,
        rows + 2 * margin,
        cols + 2 * margin,
        generator=generator,
        device=generator_device(generator),
    )

    def crop(noise: torch.Tensor) -> torch.Tensor:  # the central rows x cols of a (blurred) map
        top, left = (noise.shape[1] - rows) // 2, (noise.shape[2] - cols) // 2
        return noise[:, top : top + rows, left : left + cols]

    if color == "white":
        noise = white
    elif color in ("red", "blue"):
        low = crop(_blur(white, sigma))
        noise = low if color == "red" else crop(white) - low
    else:
        band = crop(_blur(white, sigma)) - crop(_blur(white, sigma_wide))
        noise = band if color == "green" else crop(white) - band
    return noise.reshape(batch_size, rows * cols)


@register("color_noise", ColorNoiseOptions)
class ColorNoiseMasking(MaskingStrategy):
    """Within each modality, the tokens of the lowest filtered noise are hidden (ColorMAE)."""

    options: ColorNoiseOptions

    guided = False

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: ColorNoiseOptions = masking.color_noise
        if options.color not in COLORS:
            raise ValueError(f"masking.color_noise.color={options.color!r}; expected one of {COLORS}")
        if not 0 < options.sigma < options.sigma_wide <= 64:
            raise ValueError(
                f"masking.color_noise.sigma={options.sigma}, sigma_wide={options.sigma_wide}; expected "
                "0 < sigma < sigma_wide <= 64 tokens"
            )

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {f"color-{color}": {"color": color} for color in ("green", "red", "blue")}

    def describe(self) -> str:
        return f"color-{self.options.color}"

    def propose(self, context: MaskingContext) -> Proposal:
        tokens, options = context.tokens, self.options
        batch_size = tokens.embeddings.shape[0]
        priorities = {
            name: -colored_noise(
                batch_size, tokens.grid, options.color, options.sigma, options.sigma_wide, context.generator
            ).to(tokens.embeddings.device)
            for name in tokens.modalities
        }
        return Proposal(priorities)
