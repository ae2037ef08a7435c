"""Attention-guided masking, the method: mask the patches the global token attends to most.

A no-grad encoder pass over every token reads, from the last block, the attention the global token
pays to each patch (or the mean attention a patch receives); in each modality the highest-scoring
patches are masked ('high') or the lowest ('low'). Variants: Gaussian noise on the scores, a random
subset of heads per sample, and AttMask's hints.
"""

from dataclasses import dataclass

import torch

from guidedmae.masking.priority import reveal_hints
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, check_selection, register

SCORES = ("global", "received")


@dataclass
class AttentionOptions:
    score: str = "global"  # global: attention the global token pays; received: mean attention received
    select: str = "high"  # high: mask the most attended (the method); low: the inverse
    noise: float = 0.0  # stochastic masking: s + noise * std(s) * eps, std per sample and modality
    heads: int = 0  # random subset of this many heads per sample and step; 0 = mean over all heads
    hint: float = 0.0  # fraction of the masked count revealed from the top 10% (AttMask-Hint)


def random_head_weights(
    batch_size: int, num_heads: int, subset: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform weights over a random subset of `subset` heads per sample: [B, H], rows summing to 1."""
    chosen = torch.rand(batch_size, num_heads, generator=generator).argsort(dim=1) < subset
    return chosen.float() / subset


@register("attention", AttentionOptions)
class AttentionMasking(MaskingStrategy):
    """Priorities from the last block's attention over all tokens (see the module docstring)."""

    score_label = "attention"

    @classmethod
    def check(cls, masking, model) -> None:
        options = masking.attention
        check_selection("attention", options, masking)
        if options.score not in SCORES:
            raise ValueError(f"masking.attention.score={options.score!r}; expected 'global' or 'received'")
        if not 0 <= options.heads <= model.num_heads:
            raise ValueError(
                f"masking.attention.heads={options.heads}; expected 0 (all) .. {model.num_heads} heads of the encoder"
            )
        if not 0.0 <= options.hint <= 1.0:
            raise ValueError(f"masking.attention.hint={options.hint}; expected a value in [0, 1]")

    @classmethod
    def variants(cls, model) -> dict[str, dict]:
        half = max(1, model.num_heads // 2)
        return {
            "attention-high": {},
            "attention-low": {"select": "low"},
            "noise-0.5": {"noise": 0.5},
            f"heads-{half}": {"heads": half},
            "hint-0.1": {"hint": 0.1},
            "received": {"score": "received"},
        }

    def describe(self) -> str:
        options = self.options
        parts = ["attention", options.select] + (["received"] if options.score == "received" else [])
        parts += [
            f"{key}{getattr(options, key):g}" for key in ("noise", "heads", "hint") if getattr(options, key)
        ]
        return "-".join(parts)

    def propose(self, context: MaskingContext) -> Proposal:
        options, tokens = self.options, context.tokens
        head_weights = None
        if options.heads:
            batch_size, num_heads = tokens.embeddings.shape[0], context.model.config.num_heads
            head_weights = random_head_weights(batch_size, num_heads, options.heads, context.generator)
            head_weights = head_weights.to(tokens.embeddings.device)
        scores = context.model.attention_scores(tokens, options.score, head_weights)
        priorities = self.score_priorities(scores, options.select, options.noise, context.generator)
        if options.hint > 0:
            priorities = reveal_hints(
                priorities, context.visible_counts, options.hint, generator=context.generator
            )
        return Proposal(priorities, scores)
