"""Masking: Dirichlet budgets, priority functions, strategies (modules in a registry) and the one
selection routine (guidedmae.models.selection, re-exported here).

Layer: may import guidedmae.infra, data, models and losses (the per-patch losses some strategies read).
"""

from guidedmae.masking.budget import sample_visible_counts
from guidedmae.masking.config import (
    BASELINE,
    MaskingConfig,
    build_strategy,
    strategy_variants,
    validate_masking,
)
from guidedmae.masking.priority import (
    attention_priorities,
    gumbel_priorities,
    mix_with_random,
    random_priorities,
    reveal_hints,
)
from guidedmae.masking.strategy import (
    STRATEGIES,
    MaskChoice,
    MaskingContext,
    MaskingStrategy,
    Proposal,
    register,
)
from guidedmae.models.selection import Selection, from_masks, from_priorities

__all__ = [
    "BASELINE",
    "STRATEGIES",
    "MaskChoice",
    "MaskingConfig",
    "MaskingContext",
    "MaskingStrategy",
    "Proposal",
    "Selection",
    "attention_priorities",
    "build_strategy",
    "from_masks",
    "from_priorities",
    "gumbel_priorities",
    "mix_with_random",
    "random_priorities",
    "register",
    "reveal_hints",
    "sample_visible_counts",
    "strategy_variants",
    "validate_masking",
]
