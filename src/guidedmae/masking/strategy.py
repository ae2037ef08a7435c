"""Masking strategies as small modules, found by name in a registry.

    strategy = build_strategy(config.masking, model.config)     # config.masking.strategy names the class
    choice = strategy(model, tokens, generator, progress, indices, views, class_map)
    strategy.observe(choice, patch_losses)                       # after the step's forward pass

Every strategy shares one mechanism (`MaskingStrategy.forward`): the Dirichlet budget draws how many
tokens of each modality stay visible, the strategy ranks the tokens (`propose`: a priority per token,
higher = masked first) and `models.selection.from_priorities` turns ranks and counts into masks. A strategy sees
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

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from guidedmae.infra.distributed import DistributedContext
from guidedmae.infra.schedule import START, Progress
from guidedmae.losses import PatchLosses, masked_patch_mean
from guidedmae.masking.budget import VisibleBudget
from guidedmae.masking.priority import (
    attention_priorities,
    generator_device,
    gumbel_priorities,
    mix_with_random,
)
from guidedmae.masking.shared import CurriculumConfig
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import MultiMAE, Tokens
from guidedmae.models.selection import Selection, from_priorities

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig

__all__ = [
    "STRATEGIES",
    "MaskChoice",
    "MaskingContext",
    "MaskingStrategy",
    "NoOptions",
    "Proposal",
    "check_selection",
    "curriculum_share",
    "describe_selection",
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
    views: torch.Tensor | None  # [B, 5] each sample's crop box in its source image and flip (data.transforms)
    # [B, h, w] the batch's semseg class ids, where it holds them: what an oracle that knows where the
    # objects are reads (masking.strategy=objects); no other strategy looks at labels
    class_map: torch.Tensor | None = None


@dataclass
class Proposal:
    """A strategy's answer for one batch."""

    priorities: dict[str, torch.Tensor]  # {modality: [B, N_m]}, higher = masked first
    scores: dict[str, torch.Tensor] | None = None  # {modality: [B, N_m]} a map worth showing (attention)
    predictions: dict[str, torch.Tensor] | None = None  # what the strategy learns from in `learn` (with grad)


@dataclass
class MaskChoice:
    """The masks of one batch and what they were chosen from."""

    selection: Selection
    scores: dict[str, torch.Tensor] | None  # {modality: [B, N_m]} when the strategy computed them
    predictions: dict[str, torch.Tensor] | None = None  # the proposal's predictions, for `learn`
    context: MaskingContext | None = None  # what the strategy saw, handed back to `observe`


class MaskingStrategy(nn.Module):
    """Which tokens to hide first. Subclasses implement `propose` (and `learn`, if they learn).

    Its entry points run eagerly under torch.compile (`run.compile`): a strategy draws from generators
    (torch's and numpy's) and keeps Python state, and traced, every draw's seed became a guard that
    recompiled the step at every step until dynamo's recompile limit.
    """

    name: ClassVar[str]  # set by @register
    options_class: ClassVar[type] = NoOptions  # the dataclass of masking.<name>
    guided: ClassVar[bool] = True  # False: curricula, per-image random masking and sampling do not apply
    score_label: ClassVar[str] = "scores"  # what Proposal.scores are, as pictures title them

    def __init__(
        self,
        masking: MaskingConfig,
        model: MultiMAEConfig,
        num_samples: int = 0,
        context: DistributedContext | None = None,
    ) -> None:
        """masking: the run's MaskingConfig (shared keys and every strategy's section); num_samples: the
        training set's size; context: the run's processes."""
        super().__init__()
        self.masking = masking
        # masking.<name>, an options_class; subclasses declare its type
        self.options: Any = getattr(masking, self.name, NoOptions())
        self.context = context or DistributedContext()
        self.budget = VisibleBudget(masking, model.inputs, self.context)

    @classmethod
    def check(cls, masking: MaskingConfig, model: MultiMAEConfig) -> None:
        """Raise ValueError naming `masking.<name>.<key>` if the options do not fit the model."""

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict[str, Any]]:
        """Named settings worth comparing (bench rows): {row name: option values over the defaults}."""
        return {cls.name.replace("_", "-"): {}}

    def describe(self) -> str:
        """A short name of this strategy with its options, for file names: attention-low-noise0.5."""
        return self.name.replace("_", "-")

    @property
    def lr_scale(self) -> float:
        """What the run's lr is multiplied by for this strategy's own parameters: `masking.<name>.lr_scale`
        where the strategy has that key, else 1."""
        return getattr(self.options, "lr_scale", 1.0)

    @abstractmethod
    def propose(self, context: MaskingContext) -> Proposal:
        """Priorities per modality for the batch in `context`."""

    def learn(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> torch.Tensor | None:
        """Learn from the step's per-patch losses of each input modality (detached); return a loss to
        train the strategy's parameters with, or None. Most strategies learn nothing."""
        return None

    def score_priorities(
        self, scores: dict[str, torch.Tensor], select: str, noise: float, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Priorities from positive scores, as masking.sampling says: top-k with the original report's Gaussian
        noise, or Gumbel-top-k (sampling without replacement) at masking.temperature."""
        if self.masking.sampling == "gumbel":
            return gumbel_priorities(scores, select, self.masking.temperature, generator)
        return attention_priorities(scores, select, noise, generator)

    def guided_share(
        self, batch_size: int, progress: Progress, generator: torch.Generator
    ) -> torch.Tensor | None:
        """[B] share of each sample's masked tokens the strategy chooses (the rest are random), or None
        when it chooses all: the curriculum's value at the run's progress, 0 for masking.random_images
        of the images."""
        masking, curriculum = self.masking, self.masking.curriculum
        if not self.guided or (curriculum.shape == "none" and masking.random_images == 0):
            return None
        share = torch.full(
            (batch_size,), curriculum_share(curriculum, progress.fraction), dtype=torch.float64
        )
        if masking.random_images > 0:
            draws = torch.rand(batch_size, generator=generator, device=generator_device(generator)).cpu()
            share = torch.where(draws < masking.random_images, 0.0, share)
        return share

    @torch.compiler.disable
    def forward(
        self,
        model: MultiMAE,
        tokens: Tokens,
        generator: torch.Generator,
        progress: Progress = START,
        indices: torch.Tensor | None = None,
        views: torch.Tensor | None = None,
        class_map: torch.Tensor | None = None,
    ) -> MaskChoice:
        """Masks for one batch: budget -> priorities (-> curriculum) -> selection. tokens: the batch's
        Tokens; indices: [B] sample indices; views: [B, 5] crop boxes and flips (data.transforms);
        class_map: [B, h, w] the batch's semseg, if it has one (see MaskingContext)."""
        batch_size = tokens.embeddings.shape[0]
        visible_counts = self.budget(
            batch_size, [tokens.tokens_per_modality] * len(tokens.modalities), generator
        )
        context = MaskingContext(
            tokens.detach(), model, visible_counts, generator, progress, indices, views, class_map
        )
        proposal = self.propose(context)
        priorities = proposal.priorities
        share = self.guided_share(batch_size, progress, generator)
        if share is not None:
            priorities = mix_with_random(priorities, visible_counts, share, generator)
        selection = from_priorities(priorities, visible_counts)
        return MaskChoice(selection, proposal.scores, proposal.predictions, context)

    @torch.compiler.disable
    def observe(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> torch.Tensor | None:
        """After the step's forward pass: the budget and the strategy learn from the per-patch losses of
        each input modality (losses.modality_patch_losses, detached). Returns the strategy's own loss, or None."""
        with torch.no_grad():
            self.budget.observe(torch.stack([masked_patch_mean(patch_losses[name]) for name in patch_losses]))
        return self.learn(choice, patch_losses)

    @torch.compiler.disable
    def scalars(self) -> dict[str, float]:
        """Values to log every step (the adaptive budget's alphas)."""
        return self.budget.scalars()


def check_selection(name: str, options: Any, masking: MaskingConfig) -> None:
    """The `select` and `noise` options of a score-based strategy (masking.<name>.select / .noise)."""
    if options.select not in ("high", "low"):
        raise ValueError(f"masking.{name}.select={options.select!r}; expected 'high' or 'low'")
    if not 0.0 <= options.noise <= 1.0:
        raise ValueError(f"masking.{name}.noise={options.noise}; expected a value in [0, 1]")
    if options.noise and masking.sampling == "gumbel" and masking.strategy == name:
        raise ValueError(
            f"masking.{name}.noise={options.noise} with masking.sampling=gumbel: choose one kind of "
            "randomness (noise for the original report's Gaussian scores, gumbel for sampling without replacement)"
        )


def describe_selection(name: str, options: Any) -> str:
    """A score-based strategy's short name: predicted-loss-high, loss-memory-low-noise0.5."""
    noise = f"-noise{options.noise:g}" if options.noise else ""
    return f"{name.replace('_', '-')}-{options.select}{noise}"


def curriculum_share(curriculum: CurriculumConfig, fraction: float) -> float:
    """The guided share at `fraction` of the run (see masking.shared.CurriculumConfig)."""
    start, end = curriculum.start, curriculum.end
    if curriculum.shape == "none":
        return 1.0
    if curriculum.shape == "linear":
        return start + (end - start) * fraction
    if curriculum.shape == "cosine":
        return start + (end - start) * (1 - math.cos(math.pi * fraction)) / 2
    return start if fraction < curriculum.at else end


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
