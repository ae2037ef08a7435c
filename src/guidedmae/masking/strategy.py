"""Masking strategies as small modules, found by name in a registry.

    strategy = build_strategy(config.masking, model.config)     # config.masking.strategy names the class
    choice = strategy(model, tokens, generator, progress, indices)
    strategy.observe(choice, patch_losses, indices)              # after the step's forward pass

Every strategy shares one mechanism (`MaskingStrategy.forward`): the Dirichlet budget draws how many
tokens of each modality stay visible, the strategy ranks the tokens (`propose`: a priority per token,
higher = masked first) and `select.from_priorities` turns ranks and counts into masks. A strategy sees
the detached token embeddings, the model (for an attention pass), the budget, a generator, the run's
progress and the batch's sample indices. It may return an auxiliary loss (added to the step's loss, so
the run's optimizer trains the strategy's own parameters), keep weights and buffers (saved in
checkpoints beside the model, never inside MultiMAE's state dict) and learn from each step's
per-patch losses (`observe`).

Adding a strategy is one module in `masking/strategies/`: a config dataclass of its own keys and a
MaskingStrategy subclass decorated with `@register("name", ItsConfig)`. Its keys appear in the
config as `masking.<name>.<key>`, and `bench` and `visualize` list its `variants`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from guidedmae.engine.schedule import START, Progress
from guidedmae.losses import PatchLosses
from guidedmae.masking.budget import sample_visible_counts
from guidedmae.masking.select import Selection, from_priorities

if TYPE_CHECKING:  # models import masking.select: a run-time import here would be circular
    from guidedmae.models.multimae import MultiMAE, MultiMAEConfig, Tokens

__all__ = [
    "STRATEGIES",
    "MaskChoice",
    "MaskingContext",
    "MaskingStrategy",
    "NoOptions",
    "Proposal",
    "register",
]


@dataclass
class NoOptions:
    """The config section of a strategy without keys of its own."""


@dataclass
class MaskingContext:
    """What a strategy may read to rank the tokens of one batch."""

    tokens: Tokens  # the batch's token embeddings, detached: [B, N, D] in modality order
    model: MultiMAE  # for passes over all tokens (attention scores); never trained through here
    visible_counts: torch.Tensor  # [B, M] visible tokens per sample and modality (the budget)
    generator: torch.Generator  # every random draw of the strategy comes from it
    progress: Progress  # where the run is
    indices: torch.Tensor | None  # [B] the samples' indices in the data set (None outside training)


@dataclass
class Proposal:
    """A strategy's answer for one batch."""

    priorities: dict[str, torch.Tensor]  # {modality: [B, N_m]}, higher = masked first
    scores: dict[str, torch.Tensor] | None = None  # {modality: [B, N_m]} a map worth showing (attention)
    aux_loss: torch.Tensor | None = None  # a scalar the step adds to its loss (trains the strategy)


@dataclass
class MaskChoice:
    """The masks of one batch and what they were chosen from."""

    selection: Selection
    scores: dict[str, torch.Tensor] | None  # {modality: [B, N_m]} when the strategy computed them
    aux_loss: torch.Tensor | None = None


class MaskingStrategy(nn.Module):
    """Which tokens to hide first. Subclasses implement `propose`; the rest is shared."""

    name: ClassVar[str]  # set by @register
    options_class: ClassVar[type] = NoOptions  # the dataclass of masking.<name>

    def __init__(self, masking, model: MultiMAEConfig) -> None:
        """masking: the run's MaskingConfig (budget keys and every strategy's section)."""
        super().__init__()
        self.masking = masking
        self.options = getattr(masking, self.name, NoOptions())

    @classmethod
    def check(cls, options, model: MultiMAEConfig) -> None:
        """Raise ValueError naming `masking.<name>.<key>` if the options do not fit the model."""

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict[str, Any]]:
        """Named settings worth comparing (bench rows): {row name: option values over the defaults}."""
        return {cls.name: {}}

    def describe(self) -> str:
        """A short name of this strategy with its options, for file names: attention-low-noise0.5."""
        return self.name

    @abstractmethod
    def propose(self, context: MaskingContext) -> Proposal:
        """Priorities per modality for the batch in `context`."""

    def observe(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses], indices) -> None:
        """Learn from the step's per-patch losses (detached); most strategies need not."""

    def forward(
        self,
        model: MultiMAE,
        tokens: Tokens,
        generator: torch.Generator,
        progress: Progress = START,
        indices: torch.Tensor | None = None,
    ) -> MaskChoice:
        """Masks for one batch: budget -> priorities -> selection. tokens: the batch's Tokens."""
        batch_size = tokens.embeddings.shape[0]
        visible_counts = sample_visible_counts(
            batch_size,
            [tokens.tokens_per_modality] * len(tokens.modalities),
            self.masking.num_visible,
            self.masking.alphas if len(self.masking.alphas) > 1 else self.masking.alphas[0],
            self.masking.sample_tasks_uniformly,
            generator,
        )
        context = MaskingContext(tokens.detach(), model, visible_counts, generator, progress, indices)
        proposal = self.propose(context)
        return MaskChoice(
            from_priorities(proposal.priorities, visible_counts), proposal.scores, proposal.aux_loss
        )


STRATEGIES: dict[str, type[MaskingStrategy]] = {}


def register(name: str, options_class: type = NoOptions) -> Callable[[type], type]:
    """Class decorator: make a MaskingStrategy available as `masking.strategy=name`, with its keys
    (the dataclass `options_class`) under `masking.<name>`."""

    def add(cls: type[MaskingStrategy]) -> type[MaskingStrategy]:
        if name in STRATEGIES:
            raise ValueError(f"a masking strategy named {name!r} is already registered")
        cls.name, cls.options_class = name, options_class
        STRATEGIES[name] = cls
        return cls

    return add
