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
    device = generator.device if generator is not None else None
    return {
        name: torch.rand(batch_size, count, generator=generator, device=device)
        for name, count in tokens_per_modality.items()
    }
