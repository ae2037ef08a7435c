"""Attention-guided masking, the method: mask the patches the global token attends to most.

A no-grad encoder pass over every token reads, from the last block, the attention the global token
pays to each patch (or the mean attention a patch receives); in each modality the highest-scoring
patches are masked ('high') or the lowest ('low'). Variants: Gaussian noise on the scores, a random
subset of heads per sample, AttMask's hints, and a cheaper pass over a coarser token grid (`grid`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from guidedmae.masking.priority import reveal_hints
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, check_selection, register
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import Tokens

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


SCORES = ("global", "received")


@dataclass
class AttentionOptions:
    score: str = "global"  # global: attention the global token pays; received: mean attention received
    select: str = "high"  # high: mask the most attended (the method); low: the inverse
    noise: float = 0.0  # stochastic masking: s + noise * std(s) * eps, std per sample and modality
    heads: int = 0  # random subset of this many heads per sample and step; 0 = mean over all heads
    hint: float = 0.0  # fraction of the masked count revealed from the top 10% (AttMask-Hint)
    grid: int = 0  # score on a grid x grid of averaged tokens per modality, scores upsampled; 0 = every token


def pool_tokens(tokens: Tokens, grid: int) -> Tokens:
    """Tokens averaged over a coarser grid of at most `grid` x `grid` per modality (adaptive average
    pooling of the embeddings, position embeddings included: an average token sits at its cell's centre).
    A pass over 4x fewer tokens costs about 4x less, its attention less still."""
    rows, cols = tokens.grid
    coarse = (min(grid, rows), min(grid, cols))
    batch_size, _, dim = tokens.embeddings.shape
    maps = tokens.embeddings.unflatten(1, (len(tokens.modalities), rows, cols))  # [B, M, rows, cols, D]
    maps = maps.permute(0, 1, 4, 2, 3).flatten(0, 1)  # [B * M, D, rows, cols]
    pooled = F.adaptive_avg_pool2d(maps, coarse)  # [B * M, D, r, c]
    pooled = pooled.unflatten(0, (batch_size, -1)).permute(0, 1, 3, 4, 2).reshape(batch_size, -1, dim)
    return replace(tokens, embeddings=pooled, grid=coarse)


def upsample_scores(
    scores: dict[str, torch.Tensor], coarse: tuple[int, int], grid: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Coarse per-token scores back on the model's token grid, bilinearly (so that neighbours of a strong
    cell rank above the rest of a weak one): {modality: [B, r * c]} -> {modality: [B, rows * cols]}."""
    upsampled: dict[str, torch.Tensor] = {}
    for name, score in scores.items():
        maps = score.unflatten(1, coarse)[:, None]  # [B, 1, r, c]
        upsampled[name] = F.interpolate(maps, size=grid, mode="bilinear", align_corners=False).flatten(1)
    return upsampled


def random_head_weights(
    batch_size: int, num_heads: int, subset: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform weights over a random subset of `subset` heads per sample: [B, H], rows summing to 1."""
    chosen = torch.rand(batch_size, num_heads, generator=generator).argsort(dim=1) < subset
    return chosen.float() / subset


@register("attention", AttentionOptions)
class AttentionMasking(MaskingStrategy):
    """Priorities from the last block's attention over all tokens (see the module docstring)."""

    options: AttentionOptions

    score_label = "attention"

    @classmethod
    def check(cls, masking: MaskingConfig, model: MultiMAEConfig) -> None:
        options: AttentionOptions = masking.attention
        check_selection("attention", options, masking)
        if options.score not in SCORES:
            raise ValueError(f"masking.attention.score={options.score!r}; expected 'global' or 'received'")
        if not 0 <= options.heads <= model.num_heads:
            raise ValueError(
                f"masking.attention.heads={options.heads}; expected 0 (all) .. {model.num_heads} heads of the encoder"
            )
        if not 0.0 <= options.hint <= 1.0:
            raise ValueError(f"masking.attention.hint={options.hint}; expected a value in [0, 1]")
        side = model.grid_side
        if not (options.grid == 0 or 1 <= options.grid <= side):
            raise ValueError(
                f"masking.attention.grid={options.grid}; expected 0 (every token) or 1..{side} (the model's grid)"
            )

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        half = max(1, model.num_heads // 2)
        half_grid = max(1, model.grid_side // 2)
        return {
            "attention-high": {},
            "attention-low": {"select": "low"},
            "noise-0.5": {"noise": 0.5},
            f"heads-{half}": {"heads": half},
            "hint-0.1": {"hint": 0.1},
            "received": {"score": "received"},
            f"grid-{half_grid}": {"grid": half_grid},
        }

    def describe(self) -> str:
        options = self.options
        parts = ["attention", options.select] + (["received"] if options.score == "received" else [])
        parts += [
            f"{key}{getattr(options, key):g}"
            for key in ("noise", "heads", "hint", "grid")
            if getattr(options, key)
        ]
        return "-".join(parts)

    def propose(self, context: MaskingContext) -> Proposal:
        options, tokens = self.options, context.tokens
        head_weights = None
        if options.heads:
            batch_size, num_heads = tokens.embeddings.shape[0], context.model.config.num_heads
            head_weights = random_head_weights(batch_size, num_heads, options.heads, context.generator)
            head_weights = head_weights.to(tokens.embeddings.device)
        if options.grid and options.grid < max(tokens.grid):
            coarse = pool_tokens(tokens, options.grid)
            scores = context.model.attention_scores(coarse, options.score, head_weights)
            scores = upsample_scores(scores, coarse.grid, tokens.grid)
        else:
            scores = context.model.attention_scores(tokens, options.score, head_weights)
        priorities = self.score_priorities(scores, options.select, options.noise, context.generator)
        if options.hint > 0:
            priorities = reveal_hints(
                priorities, context.visible_counts, options.hint, generator=context.generator
            )
        return Proposal(priorities, scores)
