"""Per-sample memories in source-image coordinates: which cell of a sample's source image each token of a
random crop covers, and per-cell means of per-token values.

A memory keyed by cells survives random crops and flips: a token's cell is where its centre falls in the
source image, the crop box and flip of the sample's view (data.transforms) mapped back. Strategies that
remember something per sample (losses, attention scores) write and read through these two functions.
"""

from collections.abc import Callable

import torch

from guidedmae.infra.distributed import DistributedContext, all_gather_tensors

__all__ = ["cell_means", "empty_memory", "token_cells", "update_from_every_rank", "view_cells"]


def token_cells(views: torch.Tensor, grid: tuple[int, int], memory_grid: int) -> torch.Tensor:
    """The memory cell of every token of every sample: [B, rows * cols] indices into memory_grid ** 2.

    views: [B, 5] (top, left, height, width as fractions of the source image, flipped); a token's centre
    (row + 0.5, col + 0.5) / grid of the crop lies at top + height * y, left + width * x of the source,
    with x mirrored (1 - x) when the sample was flipped after cropping.
    """
    rows, cols = grid
    device = views.device
    y = (torch.arange(rows, device=device, dtype=torch.float64) + 0.5) / rows  # [rows]
    x = (torch.arange(cols, device=device, dtype=torch.float64) + 0.5) / cols  # [cols]
    views = views.double()
    top, left, height, width, flipped = views.unbind(dim=1)
    x = torch.where(flipped[:, None] > 0.5, 1 - x, x)  # [B, cols]
    source_y = top[:, None] + height[:, None] * y  # [B, rows]
    source_x = left[:, None] + width[:, None] * x  # [B, cols]
    cell_y = (source_y * memory_grid).floor().long().clamp(0, memory_grid - 1)
    cell_x = (source_x * memory_grid).floor().long().clamp(0, memory_grid - 1)
    return (cell_y[:, :, None] * memory_grid + cell_x[:, None, :]).flatten(1)


def view_cells(
    strategy: str, views: torch.Tensor | None, grid: tuple[int, int], memory_grid: int
) -> torch.Tensor:
    """`token_cells` of a batch for `strategy`, whose memory needs every sample's view (None: a batch
    without them, e.g. from a data set that gives no 'view')."""
    if views is None:
        raise ValueError(f"masking.strategy={strategy} needs each sample's view (the data sets give 'view')")
    return token_cells(views, grid, memory_grid)


def cell_means(
    values: torch.Tensor, cells: torch.Tensor, num_cells: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The (weighted) mean of the token values falling in each cell: [B, N] values and cells (and
    optional [B, N] weights, e.g. 1 for the masked tokens only) -> [B, num_cells] float64, NaN where no
    token (of positive weight) fell."""
    weights = torch.ones_like(values, dtype=torch.float64) if weights is None else weights.double()
    totals = torch.zeros(len(cells), num_cells, dtype=torch.float64, device=cells.device)
    counts = torch.zeros_like(totals)
    totals.scatter_add_(1, cells, values.double() * weights)
    counts.scatter_add_(1, cells, weights)
    return torch.where(counts > 0, totals / counts.clamp_min(1e-12), torch.nan)


def empty_memory(strategy: str, num_samples: int, num_modalities: int, grid: int) -> torch.Tensor:
    """A per-sample memory of `strategy` with nothing in it: float16 [samples, modalities, grid * grid],
    NaN = never stored (float16 halves what ImageNet-scale memories hold on every process)."""
    if num_samples < 1:
        raise ValueError(f"masking.strategy={strategy} remembers training samples: it needs their number")
    return torch.full((num_samples, num_modalities, grid * grid), torch.nan, dtype=torch.float16)


def update_from_every_rank(
    context: DistributedContext,
    indices: torch.Tensor,
    observed: torch.Tensor,
    update: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    """Apply every process's observations of this step (sample indices [B], observed [B, ...]) with
    `update(indices, observed)`, in rank order: every process applies the same updates in the same
    order, so the per-sample memories stay identical under DDP without ever being broadcast."""
    for rank_indices, rank_observed in zip(
        all_gather_tensors(context, indices), all_gather_tensors(context, observed.to(indices.device))
    ):
        update(rank_indices, rank_observed)
