"""Multi-block masks (I-JEPA's targets, iBOT's block-wise masking): a few rectangles of random size and
aspect are hidden first, the rest of the budget at random.

Per sample and modality, `blocks` rectangles of `scale` of the grid's area (uniform in the range) and
aspect height / width log-uniform in `aspect`. A block's top-left corner is drawn uniformly from every
position at which the block still covers a token, overhanging edges included, then clipped to the grid:
each position is covered by exactly as many of those corners as a block has tokens, so every token,
border and centre alike, is covered equally often (implementations that draw the corner only where the
whole block fits cover the border rarely, and never the last row and column when the upper bound is
exclusive). Tokens under more blocks are hidden first, ties in a random order.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from guidedmae.masking.priority import generator_device
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, register
from guidedmae.models.architecture import MultiMAEConfig

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


TIE_BREAK = 0.5  # below the step of one block: coverage counts come first, the random order after


@dataclass
class MultiBlockOptions:
    blocks: int = 4  # rectangles per sample and modality (I-JEPA: 4 targets)
    scale: tuple[float, float] = (0.15, 0.2)  # a block's share of the grid's tokens (I-JEPA's targets)
    aspect: tuple[float, float] = (0.75, 1.5)  # height / width


def block_coverage(
    batch_size: int,
    grid: tuple[int, int],
    blocks: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """How many of `blocks` random rectangles cover each token: float32 [B, rows * cols], on the
    generator's device (see the module docstring for how they are drawn)."""
    rows, cols = grid
    device = generator_device(generator)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch_size, blocks, generator=generator, device=device)

    area = uniform(*scale) * rows * cols
    ratio = torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    height = (area * ratio).sqrt().round().clamp(1, rows)
    width = (area / ratio).sqrt().round().clamp(1, cols)
    # Corners from -(size - 1) to the last row / column: every position under `size` of them.
    top = (uniform(0, 1) * (rows + height - 1)).floor() - (height - 1)
    left = (uniform(0, 1) * (cols + width - 1)).floor() - (width - 1)
    row = torch.arange(rows, device=device, dtype=top.dtype)
    col = torch.arange(cols, device=device, dtype=left.dtype)
    in_rows = (row >= top[..., None]) & (row < (top + height)[..., None])  # [B, K, rows]
    in_cols = (col >= left[..., None]) & (col < (left + width)[..., None])  # [B, K, cols]
    coverage = torch.einsum("bkr,bkc->brc", in_rows.float(), in_cols.float())
    return coverage.reshape(batch_size, rows * cols)


@register("multiblock", MultiBlockOptions)
class MultiBlockMasking(MaskingStrategy):
    """Within each modality, the tokens under a few random rectangles are hidden first."""

    options: MultiBlockOptions

    guided = False

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: MultiBlockOptions = masking.multiblock
        low, high = options.scale
        if options.blocks < 1 or not 0 < low <= high <= 1:
            raise ValueError(
                f"masking.multiblock.blocks={options.blocks}, scale={list(options.scale)}; expected at least "
                "one block and 0 < scale[0] <= scale[1] <= 1"
            )
        if not 0 < options.aspect[0] <= options.aspect[1]:
            raise ValueError(f"masking.multiblock.aspect={list(options.aspect)}; expected 0 < low <= high")

    def describe(self) -> str:
        return f"multiblock{self.options.blocks}"

    def propose(self, context: MaskingContext) -> Proposal:
        tokens, options, generator = context.tokens, self.options, context.generator
        batch_size = tokens.embeddings.shape[0]
        priorities: dict[str, torch.Tensor] = {}
        for name in tokens.modalities:
            coverage = block_coverage(
                batch_size, tokens.grid, options.blocks, options.scale, options.aspect, generator
            )
            noise = torch.rand(coverage.shape, generator=generator, device=generator_device(generator))
            priorities[name] = (coverage + TIE_BREAK * noise).to(tokens.embeddings.device)
        return Proposal(priorities)
