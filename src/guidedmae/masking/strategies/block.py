"""Block masking: whole blocks of neighbouring tokens hidden together (BEiT's block-wise masking, in the
fixed-budget form every strategy shares). Neither random nor guided, it scores every run on masks none of
them trained on: the held-out evaluation's neutral reconstruction loss."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from guidedmae.masking.priority import generator_device
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, register
from guidedmae.models.architecture import MultiMAEConfig

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


@dataclass
class BlockOptions:
    size: int = 2  # tokens per side of a block


def block_priorities(
    batch_size: int,
    grid: tuple[int, int],
    modalities: list[str],
    size: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Uniform noise per block of size x size tokens, shared by the block's tokens: selecting on it masks
    whole blocks (the last block of the budget partly). A smaller noise per token orders the tokens within
    a block at random without ever moving a token past another block.

    Returns {modality: [B, rows * cols] float64} on the generator's device.
    """
    rows, cols = grid
    device = generator_device(generator)
    blocks = (-(-rows // size), -(-cols // size))
    priorities = {}
    for name in modalities:
        coarse = torch.rand(batch_size, *blocks, generator=generator, device=device)
        coarse = coarse.repeat_interleave(size, dim=1).repeat_interleave(size, dim=2)[:, :rows, :cols]
        within = torch.rand(batch_size, rows, cols, generator=generator, device=device)
        # Distinct float32 draws in [0, 1) differ by at least 2**-24 (~6e-8): noise below 1e-9 never reorders
        # two blocks (in float64, where it is not rounded away).
        priorities[name] = (coarse.double() + within.double() * 1e-9).flatten(1)
    return priorities


@register("block", BlockOptions)
class BlockMasking(MaskingStrategy):
    """Within each modality, blocks of masking.block.size x size tokens are hidden together, in a random
    order, until the budget is spent."""

    options: BlockOptions

    guided = False

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        if masking.block.size < 1:
            raise ValueError(f"masking.block.size={masking.block.size}; expected at least 1 token per side")

    def describe(self) -> str:
        return f"block{self.options.size}"

    def propose(self, context: MaskingContext) -> Proposal:
        tokens = context.tokens
        batch_size = tokens.embeddings.shape[0]
        priorities = block_priorities(
            batch_size, tokens.grid, list(tokens.modalities), self.options.size, context.generator
        )
        return Proposal({name: value.to(tokens.embeddings.device) for name, value in priorities.items()})
