"""A masking strategy from its config: budget -> priorities -> selection, for one training batch.

    choice = choose_masks(config, model, tokens, generator)   # choice.selection, choice.scores

Random masking never runs the model; attention-guided masking runs the no-grad attention pass over the
(detached) token embeddings, turns the scores into priorities and selects with the same Dirichlet budget.
"""

from dataclasses import dataclass, field

import torch

from guidedmae.masking.budget import sample_visible_counts
from guidedmae.masking.priority import attention_priorities, random_priorities, reveal_hints
from guidedmae.masking.select import Selection, from_priorities

STRATEGIES = ("random", "attention")


@dataclass
class MaskingConfig:
    strategy: str = "random"  # random | attention
    num_visible: int = 98  # tokens the encoder sees, over all modalities (MultiMAE-B: 98 of 588)
    alphas: list[float] = field(default_factory=lambda: [1.0])  # Dirichlet: one value = symmetric
    sample_tasks_uniformly: bool = False
    # attention only
    score: str = "global"  # global: attention the global token pays; received: mean attention received
    select: str = "high"  # high: mask the most attended (the method); low: the inverse
    noise: float = 0.0  # stochastic masking: s + noise * std(s) * eps
    heads: int = 0  # random subset of this many heads per sample and step; 0 = mean over all heads
    hint: float = 0.0  # fraction of the masked count revealed from the top 10% (AttMask-Hint)


@dataclass
class MaskChoice:
    selection: Selection
    scores: dict[str, torch.Tensor] | None  # {modality: [B, N_m]} when the strategy computed them


def validate_masking(config: MaskingConfig, num_tokens: int, num_heads: int) -> None:
    """Check a masking config against the model it will drive; errors name the offending key."""
    if config.strategy not in STRATEGIES:
        raise ValueError(f"masking.strategy={config.strategy!r}; expected one of {STRATEGIES}")
    if not 0 <= config.num_visible <= num_tokens:
        raise ValueError(
            f"masking.num_visible={config.num_visible}; expected 0..{num_tokens} (all input tokens)"
        )
    if not 0 <= config.heads <= num_heads:
        raise ValueError(
            f"masking.heads={config.heads}; expected 0 (all) .. {num_heads} heads of the encoder"
        )
    if config.score not in ("global", "received"):
        raise ValueError(f"masking.score={config.score!r}; expected 'global' or 'received'")
    if config.select not in ("high", "low"):
        raise ValueError(f"masking.select={config.select!r}; expected 'high' or 'low'")
    for key in ("noise", "hint"):
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise ValueError(f"masking.{key}={getattr(config, key)}; expected a value in [0, 1]")


def random_head_weights(
    batch_size: int, num_heads: int, subset: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform weights over a random subset of `subset` heads per sample: [B, H], rows summing to 1."""
    chosen = torch.rand(batch_size, num_heads, generator=generator).argsort(dim=1) < subset
    return chosen.float() / subset


def choose_masks(config: MaskingConfig, model, tokens, generator: torch.Generator) -> MaskChoice:
    """Masks for one batch. tokens: the batch's `Tokens` (read detached); generator: a CPU generator."""
    batch_size = tokens.embeddings.shape[0]
    device = tokens.embeddings.device
    visible_counts = sample_visible_counts(
        batch_size,
        [tokens.tokens_per_modality] * len(tokens.modalities),
        config.num_visible,
        config.alphas if len(config.alphas) > 1 else config.alphas[0],
        config.sample_tasks_uniformly,
        generator,
    )
    if config.strategy == "random":
        per_modality = dict.fromkeys(tokens.modalities, tokens.tokens_per_modality)
        priorities = {
            k: v.to(device) for k, v in random_priorities(batch_size, per_modality, generator).items()
        }
        return MaskChoice(from_priorities(priorities, visible_counts), None)

    head_weights = None
    if config.heads:
        head_weights = random_head_weights(batch_size, model.config.num_heads, config.heads, generator).to(
            device
        )
    scores = model.attention_scores(tokens.detach(), config.score, head_weights)
    priorities = attention_priorities(scores, config.select, config.noise, generator)
    if config.hint > 0:
        priorities = reveal_hints(priorities, visible_counts, config.hint, generator=generator)
    return MaskChoice(from_priorities(priorities, visible_counts), scores)
