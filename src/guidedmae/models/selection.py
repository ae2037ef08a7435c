"""Priorities + visible budget -> masks, `ids_keep`, `ids_restore`: the one selection routine.

Every masking strategy ends here. A strategy only says which tokens to hide first (a priority per token,
higher = masked first); this module turns priorities and per-modality visible counts into the index
tensors the encoder and decoders use.
"""

from dataclasses import dataclass

import torch


@dataclass
class Selection:
    """Which tokens the encoder sees.

    Tokens are numbered over all modalities concatenated in `masks` order (N in all).
    """

    masks: dict[str, torch.Tensor]  # {modality: [B, N_m] bool}, True = masked (hidden from the encoder)
    ids_keep: torch.Tensor  # [B, K] positions of the visible tokens, ascending
    ids_restore: torch.Tensor  # [B, N] position of each token in [visible..., masked...]

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]


def from_masks(masks: dict[str, torch.Tensor]) -> Selection:
    """Selection from boolean token masks {modality: [B, N_m]} (True = masked).

    Every sample must keep the same number of visible tokens (the encoder runs on a [B, K, D] batch).
    """
    if not masks:
        raise ValueError("no token masks given: expected {modality: [B, N_m] bool tensor}")
    mask_all = torch.cat([m.bool() for m in masks.values()], dim=1)  # [B, N]
    visible_per_sample = (~mask_all).sum(dim=1)
    if (visible_per_sample != visible_per_sample[0]).any():
        raise ValueError(
            "every sample must keep the same number of visible tokens; "
            f"visible counts per sample: {visible_per_sample.tolist()}"
        )
    # A stable sort of 0 (visible) / 1 (masked) lists the visible tokens first, in token order.
    ids_shuffle = torch.argsort(mask_all.to(torch.uint8), dim=1, stable=True)
    ids_restore = torch.empty_like(ids_shuffle)
    positions = torch.arange(mask_all.shape[1], device=mask_all.device).expand_as(ids_shuffle)
    ids_restore.scatter_(1, ids_shuffle, positions)
    return Selection(dict(masks), ids_shuffle[:, : int(visible_per_sample[0])], ids_restore)


def from_priorities(priorities: dict[str, torch.Tensor], visible_counts: torch.Tensor) -> Selection:
    """Keep the `visible_counts[:, m]` lowest-priority tokens of each modality m, mask the rest.

    priorities: {modality: [B, N_m] float}, higher = masked first.
    visible_counts: [B, M] integers, M = len(priorities), each row summing to the same total.
    """
    if visible_counts.shape != (next(iter(priorities.values())).shape[0], len(priorities)):
        raise ValueError(
            f"visible_counts has shape {tuple(visible_counts.shape)}, expected [batch, {len(priorities)}] "
            f"for modalities {list(priorities)}"
        )
    masks = {}
    for column, (name, priority) in enumerate(priorities.items()):
        counts = visible_counts[:, column : column + 1].to(priority.device)
        if (counts > priority.shape[1]).any() or (counts < 0).any():
            raise ValueError(
                f"visible count for {name!r} outside [0, {priority.shape[1]}]: {counts.flatten()}"
            )
        rank = priority.argsort(dim=1, stable=True).argsort(dim=1)  # 0 = lowest priority
        masks[name] = rank >= counts
    return from_masks(masks)
