"""How many visible tokens each modality gets: MultiMAE's Dirichlet budget.

Per sample, proportions lambda ~ Dirichlet(alpha_1..alpha_M) over the M input modalities; modality m gets
round(lambda_m * K) of the K visible tokens, corrected so that the counts sum to K exactly and no modality
exceeds its token count.
"""

from collections.abc import Sequence
from itertools import product

import numpy as np
import torch

# MultiMAE adds this to the {0, 1} task choices of `sample_tasks_uniformly` (Dirichlet needs alpha > 0).
UNCHOSEN_ALPHA = 1e-5


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded from the torch one: torch's Dirichlet cannot take a generator."""
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return np.random.default_rng(seed)


def sample_proportions(
    batch_size: int,
    num_modalities: int,
    alphas: float | Sequence[float] = 1.0,
    sample_tasks_uniformly: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dirichlet proportions per sample: [B, M] float64, rows summing to 1.

    alphas: one concentration for all modalities (symmetric) or one per modality.
    sample_tasks_uniformly: first pick a uniformly random non-empty subset of modalities per sample,
    then draw the proportions over that subset (the others get alpha ~ 0), as MultiMAE's option.
    """
    alpha = np.broadcast_to(np.asarray(alphas, dtype=np.float64), (num_modalities,))
    if alpha.shape != (num_modalities,) or (alpha <= 0).any():
        raise ValueError(f"alphas must be positive, one or {num_modalities} of them; got {alphas!r}")
    rng = _numpy_rng(generator)
    if not sample_tasks_uniformly:
        return torch.from_numpy(rng.dirichlet(alpha, size=batch_size))
    subsets = np.array(list(product([0.0, 1.0], repeat=num_modalities))[1:])  # every non-empty subset
    chosen = subsets[rng.integers(len(subsets), size=batch_size)]  # [B, M]
    rows = [rng.dirichlet(row) for row in chosen * alpha + UNCHOSEN_ALPHA]
    return torch.from_numpy(np.stack(rows))


def round_to_budget(proportions: torch.Tensor, num_visible: int, capacity: Sequence[int]) -> torch.Tensor:
    """Integer counts [B, M] closest to proportions * num_visible, summing to num_visible exactly,
    with counts[:, m] <= capacity[m]. Leftover tokens go to the largest remainders with room.
    """
    cap = torch.tensor(capacity, dtype=torch.long)
    if num_visible > int(cap.sum()) or num_visible < 0:
        raise ValueError(
            f"cannot keep {num_visible} visible tokens out of {int(cap.sum())} ({list(capacity)})"
        )
    target = proportions.double() * num_visible  # [B, M]
    counts = torch.minimum(target.floor().long(), cap)
    # One token per step to the sample's best modality with room; at most num_visible steps.
    deficit = num_visible - counts.sum(dim=1)
    while (deficit > 0).any():
        remainder = torch.where(
            counts < cap, target - counts, torch.tensor(-float("inf"), dtype=target.dtype)
        )
        best = remainder.argmax(dim=1, keepdim=True)
        counts.scatter_add_(1, best, (deficit > 0).long()[:, None])
        deficit = num_visible - counts.sum(dim=1)
    return counts


def sample_visible_counts(
    batch_size: int,
    tokens_per_modality: Sequence[int],
    num_visible: int,
    alphas: float | Sequence[float] = 1.0,
    sample_tasks_uniformly: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Visible tokens per sample and modality: [B, M] int64, each row summing to num_visible."""
    proportions = sample_proportions(
        batch_size, len(tokens_per_modality), alphas, sample_tasks_uniformly, generator
    )
    return round_to_budget(proportions, num_visible, tokens_per_modality)
