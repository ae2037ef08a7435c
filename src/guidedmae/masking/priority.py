"""Priority functions: per token, how urgently to hide it (higher = masked first).

Selection, gathering and the Dirichlet budget live in `select` and `budget`; a strategy only ranks tokens,
with these: uniform noise (random masking), scores with Gaussian noise (the original report's stochastic masking) or
Gumbel noise (sampling without replacement), AttMask's hints, and the mix of guided and random choices
that curricula schedule.
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


def gumbel_priorities(
    scores: dict[str, torch.Tensor],
    select: str = "high",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Gumbel-top-k on log scores: selecting the top k of log(s) / temperature + Gumbel noise draws k
    tokens without replacement with probability proportional to s ** (1 / temperature) (a Plackett-Luce
    draw; 'low' uses 1 / s). temperature -> 0 is plain top-k, a large temperature uniform sampling.
    scores: {modality: [B, N_m]} positive -> {modality: [B, N_m] float32}
    """
    if select not in ("high", "low"):
        raise ValueError(f"select must be 'high' or 'low', got {select!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    sign = 1.0 if select == "high" else -1.0
    priorities = {}
    for name, score in scores.items():
        uniform = torch.rand(score.shape, generator=generator, device=generator_device(generator)).to(
            score.device
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
        priorities[name] = sign * score.float().clamp_min(1e-30).log() / temperature + gumbel
    return priorities


def mix_with_random(
    priorities: dict[str, torch.Tensor],
    visible_counts: torch.Tensor,
    guided_share: torch.Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Let the strategy choose only a share of each modality's masked tokens, the rest at random.

    Per sample b and modality, round(guided_share[b] * masked count) tokens of highest priority are
    masked first; the remaining masked tokens are drawn uniformly among the others. guided_share: [B] in
    [0, 1] (1 = the strategy's masks, 0 = random masking). visible_counts: [B, M] in `priorities` order.
    """
    mixed = {}
    for column, (name, priority) in enumerate(priorities.items()):
        batch, num_tokens = priority.shape
        masked = num_tokens - visible_counts[:, column].to(priority.device)
        num_guided = (guided_share.to(priority.device).double() * masked).round().long()  # [B]
        rank = priority.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = highest
        noise = torch.rand(batch, num_tokens, generator=generator, device=generator_device(generator))
        # Guided picks rank above every random draw (which lie in [0, 1)) and keep their order.
        mixed[name] = torch.where(
            rank < num_guided[:, None], 2.0 + num_tokens - rank, noise.to(priority.device)
        )
    return mixed


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
