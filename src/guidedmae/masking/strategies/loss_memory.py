"""Loss-guided masking, remembered: mask the patches whose reconstruction loss was highest when this
sample was last seen. No extra pass at all.

A memory holds, per training sample and input modality, a grid of the per-patch losses observed so far,
in the coordinates of the source image (so it survives random crops and flips: masking.source_cells).
After each step the masked patches' losses update their cells (an exponential moving average; several
tokens of one cell are averaged first). Cells never observed get a prior: the mean of the sample's observed cells (or
of every loss observed so far, `prior: dataset`), plus optional Gaussian noise so that they get explored.

Storage: float16, NaN = never observed; [samples, modalities, grid * grid]. ImageNet-1K at 224 with a
14 x 14 grid: 1,281,167 x 3 x 196 x 2 bytes = 1.51 GB, in memory on every process and in checkpoints.
Under DDP every process applies every process's observations (all-gathered, in rank order), so the
memories stay identical.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from guidedmae.infra.distributed import DistributedContext
from guidedmae.losses import PatchLosses
from guidedmae.masking.priority import random_priorities
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


PRIORS = ("sample", "dataset")


@dataclass
class LossMemoryOptions:
    momentum: float = 0.5  # cell = momentum * cell + (1 - momentum) * observed loss
    prior: str = "sample"  # unseen cells: the mean of the sample's seen cells | of all losses so far
    explore: float = 0.0  # noise on unseen cells: prior + explore * std(seen cells of the sample) * eps
    select: str = "high"  # high: mask the patches remembered hardest; low: the easiest
    noise: float = 0.0  # s + noise * std(s) * eps on the remembered losses, as attention's noise


@register("loss_memory", LossMemoryOptions)
class LossMemoryMasking(MaskingStrategy):
    """Priorities from remembered per-patch losses (see the module docstring)."""

    options: LossMemoryOptions
    memory: torch.Tensor  # [num_samples, M, cells] float16, NaN = never observed (buffers)
    observed_sum: torch.Tensor  # [M] float64
    observed_count: torch.Tensor  # [M] float64

    score_label = "remembered loss"

    def __init__(
        self,
        masking: "MaskingConfig",
        model: MultiMAEConfig,
        num_samples: int = 0,
        context: DistributedContext | None = None,
    ) -> None:
        super().__init__(masking, model, num_samples, context)
        self.grid = model.grid_side
        self.modalities = tuple(model.inputs)
        self.register_buffer(
            "memory", empty_memory("loss_memory", num_samples, len(self.modalities), self.grid)
        )
        # Sum and count of every loss observed (per modality): the data set's prior.
        self.register_buffer("observed_sum", torch.zeros(len(self.modalities), dtype=torch.float64))
        self.register_buffer("observed_count", torch.zeros(len(self.modalities), dtype=torch.float64))

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: LossMemoryOptions = masking.loss_memory
        check_selection("loss_memory", options, masking)
        if not 0 <= options.momentum < 1:
            raise ValueError(f"masking.loss_memory.momentum={options.momentum}; expected a value in [0, 1)")
        if options.prior not in PRIORS:
            raise ValueError(f"masking.loss_memory.prior={options.prior!r}; expected one of {PRIORS}")
        if options.explore < 0:
            raise ValueError(f"masking.loss_memory.explore={options.explore}; expected >= 0")

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {"loss-memory": {}}

    def describe(self) -> str:
        return describe_selection(self.name, self.options)

    def _cells(self, context: MaskingContext) -> torch.Tensor:
        return view_cells(self.name, context.views, context.tokens.grid, self.grid)

    def recall(
        self, indices: torch.Tensor, cells: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The remembered loss of every token, unseen cells filled with the prior: {modality: [B, N_m]}."""
        rows = self.memory[indices.to(self.memory.device)].float()  # [B, M, cells]
        recalled = {}
        for column, name in enumerate(self.modalities):
            memory = rows[:, column]  # [B, cells]
            seen = ~memory.isnan()
            values = memory.gather(1, cells.to(memory.device))  # [B, N]
            seen_count = seen.sum(dim=1, keepdim=True)
            sample_mean = memory.nan_to_num().sum(dim=1, keepdim=True) / seen_count.clamp_min(1)
            dataset_mean = (self.observed_sum[column] / self.observed_count[column].clamp_min(1)).float()
            prior = sample_mean if self.options.prior == "sample" else dataset_mean.expand_as(sample_mean)
            prior = torch.where(seen_count > 0, prior, dataset_mean)
            if self.options.explore:
                spread = (
                    torch.where(seen, (memory - sample_mean).nan_to_num(), 0.0).square().sum(1, keepdim=True)
                )
                spread = (spread / seen_count.clamp_min(1)).sqrt()
                noise = torch.randn(values.shape, generator=generator).to(values.device)
                prior = prior + self.options.explore * spread * noise
            recalled[name] = torch.where(values.isnan(), prior, values)
        return recalled

    def propose(self, context: MaskingContext) -> Proposal:
        if context.indices is None:  # samples the memory cannot know (a held-out split): random masking
            tokens = context.tokens
            per_modality = dict.fromkeys(tokens.modalities, tokens.tokens_per_modality)
            priorities = random_priorities(tokens.embeddings.shape[0], per_modality, context.generator)
            return Proposal({name: value.to(tokens.embeddings.device) for name, value in priorities.items()})
        recalled = self.recall(context.indices, self._cells(context), context.generator)
        # Losses are non-negative; Gumbel sampling takes logs of positive scores.
        scores = {name: value.clamp_min(1e-8) for name, value in recalled.items()}
        priorities = self.score_priorities(scores, self.options.select, self.options.noise, context.generator)
        return Proposal(priorities, scores)

    @torch.no_grad()
    def learn(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> None:
        context = choice.context
        if context is None:
            raise ValueError("loss_memory learns from its own choices' context (the samples and their views)")
        if context.indices is None:
            return None
        cells = self._cells(context)
        num_cells = self.grid * self.grid
        # per modality: [B, cells] mean masked loss per cell, NaN where none; stacked [B, M, cells]
        observed = torch.stack(
            [
                cell_means(patch_losses[name].values, cells, num_cells, patch_losses[name].masked)
                for name in self.modalities
            ],
            dim=1,
        )
        indices = context.indices.to(cells.device)
        update_from_every_rank(self.context, indices, observed, self._remember)
        return None

    def _remember(self, indices: torch.Tensor, observed: torch.Tensor) -> None:
        """memory[indices] <- EMA with `observed` [B, M, cells] where observed (NaN = not observed)."""
        indices = indices.to(self.memory.device)
        observed = observed.to(self.memory.device)
        current = self.memory[indices].double()
        momentum = self.options.momentum
        updated = torch.where(current.isnan(), observed, momentum * current + (1 - momentum) * observed)
        self.memory[indices] = torch.where(observed.isnan(), current, updated).to(torch.float16)
        seen = ~observed.isnan()
        self.observed_sum += observed.nan_to_num().sum(dim=(0, 2))
        self.observed_count += seen.sum(dim=(0, 2)).double()
