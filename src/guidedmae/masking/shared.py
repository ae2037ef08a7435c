"""The keys of the `masking` section every strategy shares (masking.config adds one section per strategy).

Apart from the strategies and their registry, so that the budget and the strategies can name the type of
the section they read.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

__all__ = ["AdaptiveBudgetOptions", "CurriculumConfig", "MaskingBase"]


@dataclass
class AdaptiveBudgetOptions:
    """masking.budget=adaptive: Dirichlet alphas that follow moving averages of the modalities' losses."""

    momentum: float = 0.99  # average = momentum * average + (1 - momentum) * this step's loss
    temperature: float = 1.0  # alpha_m ~ average_m ** (sign / temperature); large = symmetric
    sign: int = 1  # +1: harder modalities (higher loss) get more visible tokens; -1: fewer
    floor: float = 0.1  # no alpha below floor * masking.alphas[0], so no modality starves


@dataclass
class CurriculumConfig:
    """The share of each modality's masked tokens the guided strategy chooses, over the run's own part
    (a continuation starts at 0); the rest are masked at random. HPM: linear from 0 to 0.5."""

    shape: str = "none"  # none (always 1: fully guided) | linear | cosine | step
    start: float = 0.0  # the share at the run's start
    end: float = 1.0  # the share at its end
    at: float = 0.5  # step: the fraction of the run at which the share switches from start to end


@dataclass
class MaskingBase:
    """The keys every strategy shares: which strategy, how many tokens stay visible, and the wrappers
    (curriculum, per-image random masking, sampling) that apply to any guided strategy."""

    strategy: str = "random"  # a registered strategy: random | attention | ...
    num_visible: int = 98  # tokens the encoder sees, over all modalities (MultiMAE-B: 98 of 588)
    alphas: list[float] = field(default_factory=lambda: [1.0])  # Dirichlet: one value = symmetric
    sample_tasks_uniformly: bool = False  # MultiMAE's option: a random subset of modalities per sample
    budget: str = "dirichlet"  # dirichlet (alphas) | mixture (alpha_mixture) | adaptive (see adaptive)
    alpha_mixture: list[list[float]] = field(
        default_factory=list
    )  # mixture: alpha vectors, one drawn per sample
    adaptive: AdaptiveBudgetOptions = field(default_factory=AdaptiveBudgetOptions)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    random_images: float = 0.0  # AttMask: this share of the images of a batch is masked at random
    sampling: str = "topk"  # topk (with the strategy's Gaussian noise) | gumbel: Gumbel-top-k on log scores
    temperature: float = 1.0  # gumbel: 0 -> top-k, large -> uniform


if TYPE_CHECKING:

    class MaskingConfig(MaskingBase):
        """The `masking` section of a pretraining config: MaskingBase's keys, then one section per
        registered strategy with options, `masking.<name>` (its options dataclass). The dataclass is made
        at import from the strategy registry (masking.config); this is what a type checker sees of it."""

        def __getattr__(self, name: str) -> Any: ...
