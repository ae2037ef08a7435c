"""Masking: Dirichlet budgets, priority functions (strategies), and the one selection routine."""

from guidedmae.masking.budget import sample_visible_counts
from guidedmae.masking.priority import attention_priorities, random_priorities, reveal_hints
from guidedmae.masking.select import Selection, from_masks, from_priorities
from guidedmae.masking.strategy import MaskChoice, MaskingConfig, choose_masks, validate_masking

__all__ = [
    "MaskChoice",
    "MaskingConfig",
    "Selection",
    "attention_priorities",
    "choose_masks",
    "from_masks",
    "from_priorities",
    "random_priorities",
    "reveal_hints",
    "sample_visible_counts",
    "validate_masking",
]
