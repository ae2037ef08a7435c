"""Masking: Dirichlet budgets, priority functions (strategies), and the one selection routine."""

from guidedmae.masking.budget import sample_visible_counts
from guidedmae.masking.priority import random_priorities
from guidedmae.masking.select import Selection, from_masks, from_priorities

__all__ = ["Selection", "from_masks", "from_priorities", "random_priorities", "sample_visible_counts"]
