"""How many visible tokens each modality gets: MultiMAE's Dirichlet budget, and two alternatives.

Per sample, proportions lambda ~ Dirichlet(alpha_1..alpha_M) over the M input modalities; modality m gets
round(lambda_m * K) of the K visible tokens, corrected so that the counts sum to K exactly and no modality
exceeds its token count. The alphas are fixed (symmetric or per modality), drawn per sample from a list
(4M's mixture of Dirichlets), or adaptive: they follow moving averages of the modalities' losses.
"""

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
import torch
from torch import nn

from guidedmae.infra.distributed import DistributedContext, all_reduce_mean
from guidedmae.masking.shared import MaskingBase

# MultiMAE adds this to the {0, 1} task choices of `sample_tasks_uniformly` (Dirichlet needs alpha > 0).
UNCHOSEN_ALPHA = 1e-5


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded from the torch one: torch's Dirichlet cannot take a generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
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


def mixture_visible_counts(
    batch_size: int,
    tokens_per_modality: Sequence[int],
    num_visible: int,
    alpha_mixture: Sequence[Sequence[float]],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """4M's mixture of Dirichlets: each sample draws one of the alpha vectors uniformly, then its
    proportions from that Dirichlet. [B, M] int64, each row summing to num_visible."""
    alphas = np.asarray(alpha_mixture, dtype=np.float64)  # [K, M]
    if alphas.ndim != 2 or alphas.shape[1] != len(tokens_per_modality) or (alphas <= 0).any():
        raise ValueError(
            f"alpha_mixture must hold positive vectors of {len(tokens_per_modality)} values; got {alpha_mixture!r}"
        )
    rng = _numpy_rng(generator)
    chosen = alphas[rng.integers(len(alphas), size=batch_size)]
    proportions = torch.from_numpy(np.stack([rng.dirichlet(row) for row in chosen]))
    return round_to_budget(proportions, num_visible, tokens_per_modality)


def adaptive_alphas(
    loss_averages: torch.Tensor, concentration: float, temperature: float, sign: float, floor: float
) -> torch.Tensor:
    """Dirichlet alphas [M] that follow the modalities' loss averages [M] (all positive).

    alpha_m = concentration * M * r_m / sum(r), r_m = loss_m ** (sign / temperature): with sign +1 the
    harder modality (higher loss) gets the larger share of visible tokens, with -1 the smaller; a large
    temperature flattens the shares to the symmetric Dirichlet. No alpha falls below floor * concentration,
    so no modality starves.
    """
    ratios = loss_averages.double().clamp_min(1e-12).log() * (sign / temperature)
    shares = ratios.softmax(dim=0)
    return (concentration * len(shares) * shares).clamp_min(floor * concentration)


class VisibleBudget(nn.Module):
    """The visible counts of a batch, as `masking` configures them (see the module docstring).

    The adaptive budget keeps one buffer: the moving average of each modality's loss, updated by
    `observe` from the step's losses averaged over processes (every rank holds the same averages).
    """

    loss_averages: torch.Tensor  # [M] float64, a buffer of the adaptive budget only

    def __init__(
        self, masking: MaskingBase, modalities: Sequence[str], context: DistributedContext | None = None
    ) -> None:
        super().__init__()
        self.masking, self.modalities = masking, tuple(modalities)
        self.context = context or DistributedContext()
        if masking.budget == "adaptive":
            # NaN until the first observation: the budget starts symmetric.
            self.register_buffer(
                "loss_averages", torch.full((len(modalities),), math.nan, dtype=torch.float64)
            )

    def alphas(self) -> list[float]:
        """The Dirichlet alphas of the next draw (adaptive; the configured ones otherwise)."""
        masking = self.masking
        if masking.budget != "adaptive" or self.loss_averages.isnan().any():
            return list(masking.alphas) * (len(self.modalities) if len(masking.alphas) == 1 else 1)
        options = masking.adaptive
        return adaptive_alphas(
            self.loss_averages, masking.alphas[0], options.temperature, options.sign, options.floor
        ).tolist()

    def forward(
        self, batch_size: int, tokens_per_modality: Sequence[int], generator: torch.Generator
    ) -> torch.Tensor:
        """[B, M] visible counts per sample and modality, each row summing to masking.num_visible."""
        masking = self.masking
        if masking.budget == "mixture":
            return mixture_visible_counts(
                batch_size, tokens_per_modality, masking.num_visible, masking.alpha_mixture, generator
            )
        return sample_visible_counts(
            batch_size,
            tokens_per_modality,
            masking.num_visible,
            self.alphas(),
            masking.sample_tasks_uniformly,
            generator,
        )

    @torch.no_grad()
    def observe(self, modality_losses: torch.Tensor) -> None:
        """Update the loss averages with this step's loss per modality ([M], this process's batch)."""
        if self.masking.budget != "adaptive":
            return
        losses = all_reduce_mean(self.context, modality_losses.double())
        momentum = self.masking.adaptive.momentum
        averages = self.loss_averages
        averages.copy_(torch.where(averages.isnan(), losses, momentum * averages + (1 - momentum) * losses))

    def scalars(self) -> dict[str, float]:
        """What to log each step: the adaptive alphas per modality."""
        if self.masking.budget != "adaptive":
            return {}
        return {f"alpha_{name}": alpha for name, alpha in zip(self.modalities, self.alphas())}


class FixedBudget(VisibleBudget):
    """Visible counts chosen rather than drawn: the `ui` page shows strategies side by side on one split of
    the budget (a Dirichlet draw made once, or the user's counts), for one image or a batch of scenes."""

    def __init__(
        self, masking: MaskingBase, modalities: Sequence[str], counts: Sequence[int] | torch.Tensor
    ) -> None:
        """counts: [M] the same for every sample, or [B, M] one row per sample."""
        super().__init__(masking, modalities)
        self.counts = torch.as_tensor(counts, dtype=torch.long)

    def forward(
        self, batch_size: int, tokens_per_modality: Sequence[int], generator: torch.Generator
    ) -> torch.Tensor:
        """[B, M] the fixed counts of each sample; generator unused (nothing is drawn)."""
        counts = self.counts.expand(batch_size, -1) if self.counts.ndim == 1 else self.counts
        if (
            counts.shape != (batch_size, len(tokens_per_modality))
            or (counts < 0).any()
            or (counts > torch.tensor(tokens_per_modality)).any()
        ):
            raise ValueError(
                f"visible counts of shape {list(counts.shape)} for {batch_size} samples of modalities of "
                f"{list(tokens_per_modality)} tokens; expected one count per modality, each at most its tokens"
            )
        return counts.clone()
