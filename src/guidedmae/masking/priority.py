"""Masking strategies as priority functions: per token, how urgently to hide it (higher = masked first).

Selection, gathering and the Dirichlet budget live in `select` and `budget`; a strategy only ranks tokens.
"""

from collections.abc import Mapping

import torch


def random_priorities(
    batch_size: int, tokens_per_modality: Mapping[str, int], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Uniform noise per token: selecting on it is MultiMAE's random masking (noise + argsort).

    Returns {modality: [B, N_m] float32} on the generator's device.
    """
    return {
        name: torch.rand(batch_size, count, generator=generator, device=generator_device(generator))
        for name, count in tokens_per_modality.items()
    }


def attention_priorities(
    scores: dict[str, torch.Tensor],
    select: str = "high",
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Attention scores as priorities: 'high' masks the most attended tokens first, 'low' the least.

    noise = alpha in [0, 1] makes the choice stochastic: s + alpha * std(s) * eps, eps ~ N(0, 1), with the
    standard deviation taken per sample and modality (scores of different modalities differ in scale).
    scores: {modality: [B, N_m]} -> {modality: [B, N_m] float32}
    """
    if select not in ("high", "low"):
        raise ValueError(f"attention select must be 'high' or 'low', got {select!r}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"attention noise must be in [0, 1], got {noise}")
    sign = 1.0 if select == "high" else -1.0
    priorities = {}
    for name, score in scores.items():
        score = score.float()
        if noise > 0:
            eps = torch.randn(score.shape, generator=generator, device=generator_device(generator)).to(
                score.device
            )
            score = score + noise * score.std(dim=1, keepdim=True) * eps
        priorities[name] = sign * score
    return priorities


def reveal_hints(
    priorities: dict[str, torch.Tensor],
    visible_counts: torch.Tensor,
    fraction: float,
    top_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """AttMask-Hint with an exact budget: keep a few of the highest-priority tokens visible.

    Per sample and modality, round(fraction * masked count) tokens drawn uniformly from the top
    `top_fraction` of tokens by priority get the lowest priority, so they stay visible; selection then
    masks as many of the next-highest tokens instead, and the visible count is unchanged. Hints are
    drawn only among tokens that would be masked (when a modality keeps more than the rest visible, the
    pool shrinks to its masked count), and never outnumber the visible count.
    visible_counts: [B, M] in `priorities` order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hint fraction must be in [0, 1], got {fraction}")
    hinted = {}
    for column, (name, priority) in enumerate(priorities.items()):
        batch, num_tokens = priority.shape
        visible = visible_counts[:, column].cpu()
        masked = num_tokens - visible
        pool = max(1, round(top_fraction * num_tokens))
        # float64: in float32, 0.49999999999999994 * 3 would round up to 2 instead of down to 1
        num_hints = torch.minimum((fraction * masked.double()).round().long(), visible).clamp(max=pool)
        top = priority.argsort(dim=1, descending=True, stable=True)[:, :pool].cpu()  # [B, pool]
        eligible = torch.arange(pool) < masked[:, None]  # [B, pool]: would be masked without hints
        draw = torch.rand(batch, pool, generator=generator, device=generator_device(generator)).cpu()
        rank = draw.masked_fill(~eligible, 2.0).argsort(dim=1).argsort(dim=1)  # ineligible rank last
        chosen = rank < num_hints[:, None]  # a uniform subset of num_hints eligible tokens per row
        revealed = (
            torch.zeros(batch, num_tokens, dtype=torch.bool).scatter_(1, top, chosen).to(priority.device)
        )
        hinted[name] = priority.masked_fill(revealed, float("-inf"))
    return hinted


def generator_device(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None
