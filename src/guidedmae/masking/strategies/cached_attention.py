"""Attention-guided masking at nearly the cost of random masking: each sample's attention map is scored by
an exact pass only every `refresh`-th time the sample is seen (once per epoch: every `refresh` epochs,
AMT's 40-epoch refresh), kept in source-image coordinates and warped to every new crop in between.

A memory holds, per training sample and input modality, the last exact scores on a grid of cells of the
source image (masking.source_cells; several tokens of one cell averaged). When a sample is due, the
exact pass scores it (only the due rows of the batch run it) and its cells covered by this view are
overwritten; cells outside every view scored so far take the mean of the sample's known cells. A sample
not due is masked from its remembered scores, read at the cells under its tokens. Amortised over an
epoch the extra cost is the exact pass's divided by `refresh`; the masks differ from exact guidance by
the warp (cells are coarser than a zoomed crop's tokens) and by how far the model moved since the
sample's last refresh (`guidedmae bench --checkpoint` measures the agreement).

Storage as the loss memory's: float16 [samples, modalities, grid * grid] (ImageNet-1K at 14 x 14 cells:
1.51 GB) and an int32 visit count per sample, on every process and in checkpoints; under DDP every
process applies every process's refreshes, in rank order, so the memories agree.
"""

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from guidedmae.infra.distributed import DistributedContext
from guidedmae.losses import PatchLosses
from guidedmae.masking.source_cells import cell_means, empty_memory, update_from_every_rank, view_cells
from guidedmae.masking.strategy import (
    MaskChoice,
    MaskingContext,
    MaskingStrategy,
    Proposal,
    check_selection,
    describe_selection,
    register,
)
from guidedmae.models.architecture import MultiMAEConfig

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


@dataclass
class CachedAttentionOptions:
    refresh: int = 10  # score a sample exactly every `refresh`-th visit (every `refresh` epochs); 1 = always
    grid: int = 0  # memory cells per side of the source image; 0 = the model's token grid
    select: str = "high"  # high: mask the most attended patches (the method); low: the least
    noise: float = 0.0  # s + noise * std(s) * eps on the scores, as attention's noise


@register("cached_attention", CachedAttentionOptions)
class CachedAttentionMasking(MaskingStrategy):
    """Priorities from remembered attention scores, refreshed by an exact pass (see the module docstring)."""

    options: CachedAttentionOptions
    memory: torch.Tensor  # [num_samples, M, cells] float16 scores, NaN = never scored (buffers)
    visits: torch.Tensor  # [num_samples] int32

    score_label = "attention (cached)"

    def __init__(
        self,
        masking: "MaskingConfig",
        model: MultiMAEConfig,
        num_samples: int = 0,
        context: DistributedContext | None = None,
    ) -> None:
        super().__init__(masking, model, num_samples, context)
        self.grid = self.options.grid or model.grid_side
        self.modalities = tuple(model.inputs)
        self.register_buffer(
            "memory", empty_memory("cached_attention", num_samples, len(self.modalities), self.grid)
        )
        self.register_buffer("visits", torch.zeros(num_samples, dtype=torch.int32))

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: CachedAttentionOptions = masking.cached_attention
        check_selection("cached_attention", options, masking)
        if options.refresh < 1:
            raise ValueError(f"masking.cached_attention.refresh={options.refresh}; expected >= 1 (visits)")
        if options.grid < 0:
            raise ValueError(f"masking.cached_attention.grid={options.grid}; expected >= 0 (0 = token grid)")

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {"cached-10": {"refresh": 10}}

    def describe(self) -> str:
        return f"{describe_selection(self.name, self.options)}-refresh{self.options.refresh}"

    def due(self, indices: torch.Tensor) -> torch.Tensor:
        """[B] bool: which samples the exact pass scores this time (first visit, then every refresh-th)."""
        return self.visits[indices.to(self.visits.device)] % self.options.refresh == 0

    def recall(self, indices: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """The remembered score under every token, unknown cells at the sample's mean: {modality: [B, N]}."""
        rows = self.memory[indices.to(self.memory.device)].float()  # [B, M, cells]
        recalled = {}
        for column, name in enumerate(self.modalities):
            memory = rows[:, column]
            known = ~memory.isnan()
            mean = memory.nan_to_num().sum(dim=1, keepdim=True) / known.sum(dim=1, keepdim=True).clamp_min(1)
            values = memory.gather(1, cells.to(memory.device))
            recalled[name] = torch.where(values.isnan(), mean, values)
        return recalled

    def propose(self, context: MaskingContext) -> Proposal:
        tokens, model = context.tokens, context.model
        if context.indices is None:  # samples the memory cannot know (a held-out split): exact guidance
            scores = model.attention_scores(tokens)
        else:
            due = self.due(context.indices).to(tokens.embeddings.device)
            cells = view_cells(self.name, context.views, tokens.grid, self.grid)
            scores = {
                name: value.to(tokens.embeddings.device)
                for name, value in self.recall(context.indices, cells).items()
            }
            if due.any():
                fresh = model.attention_scores(replace(tokens, embeddings=tokens.embeddings[due]))
                for name in scores:
                    scores[name][due] = fresh[name].to(scores[name].dtype)
        priorities = self.score_priorities(scores, self.options.select, self.options.noise, context.generator)
        return Proposal(priorities, scores)

    @torch.no_grad()
    def learn(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> None:
        """After a training step: remember the due samples' fresh scores, count every sample's visit."""
        context = choice.context
        if context is None or choice.scores is None:
            raise ValueError("cached_attention learns from its own choices' context and scores")
        if context.indices is None:
            return None
        indices = context.indices.to(self.memory.device)
        cells = view_cells(self.name, context.views, context.tokens.grid, self.grid)
        due = self.due(indices).to(cells.device)
        num_cells = self.grid * self.grid
        observed = torch.stack(
            [
                cell_means(choice.scores[name], cells, num_cells, due[:, None].expand_as(cells))
                for name in self.modalities
            ],
            dim=1,
        )  # [B, M, cells], NaN where not refreshed
        update_from_every_rank(self.context, indices, observed, self._refresh)
        return None

    def _refresh(self, indices: torch.Tensor, observed: torch.Tensor) -> None:
        """memory[indices] <- observed [B, M, cells] where observed (NaN = not refreshed); one more visit."""
        current = self.memory[indices].double()
        self.memory[indices] = torch.where(observed.isnan(), current, observed).to(torch.float16)
        self.visits[indices] += 1
