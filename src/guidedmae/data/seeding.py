"""Independent random streams from a run's integers (seed, rank, stream, epoch, index...)."""

import numpy as np
import torch

__all__ = ["derived_generator"]


def derived_generator(*keys: int) -> torch.Generator:
    """A torch.Generator seeded from several non-negative integers, well mixed (no seed + epoch clashes)."""
    if any(key < 0 for key in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    # The count goes in too: SeedSequence alone equates (a, b) with (a, b, 0).
    low, high = np.random.SeedSequence((len(keys), *keys)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))
