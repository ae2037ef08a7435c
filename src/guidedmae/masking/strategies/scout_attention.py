"""Attention guidance predicted by a scout: a small encoder, trained online, that reads the batch's token
embeddings and predicts the scores of the exact attention pass.

Every step, the first `exact_share` of the batch is scored by the exact pass over all its tokens (as
attention-guided masking scores every sample): those samples are masked exactly, and the scout learns from
them. The rest of the batch is masked by the scout's predictions. The scout is `depth` narrow pre-norm
blocks over the tokens (a learned embedding per modality added, since every modality shares the scout)
and one score per token; its loss, per sample and modality, is the cross-entropy of the softmax of its
scores against the exact scores normalized to sum to one. It is trained by the run's optimizer, like the
loss predictor (at `lr_scale` times the run's lr), and saved in checkpoints beside the model; in fp32, as
its scores are ranked (bf16 would tie them). A step costs the scout's pass plus the exact pass over the
share; by default the scout is 2 blocks a quarter as wide as the encoder, with heads of 64 or more
channels (MultiMAE-B: 2 blocks of 192 against 12 of 768, ~1/100 of the encoder's products per token).
"""

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from guidedmae.infra.distributed import DistributedContext
from guidedmae.losses import PatchLosses
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
from guidedmae.models.vit import Block, LayerNorm

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


@dataclass
class ScoutAttentionOptions:
    exact_share: float = 0.125  # share of each batch scored by the exact pass (masked exactly, taught from)
    lr_scale: float = 1.0  # the scout's lr: the run's times this (a continuation's tail lr barely teaches it)
    depth: int = 2  # the scout's blocks
    dim: int = 0  # the scout's width; 0 = a quarter of the encoder's
    heads: int = 0  # the scout's heads; 0 = the most that divide its width, each at least 64 wide
    loss_weight: float = 1.0  # weight of the scout's loss in the step's total loss
    select: str = "high"  # high: mask the patches predicted most attended (the method); low: the least
    noise: float = 0.0  # s + noise * std(s) * eps on the scores, as attention's noise


def scout_shape(options: ScoutAttentionOptions, model_dim: int) -> tuple[int, int]:
    """(width, heads) of the scout: the options, or the defaults they leave to the encoder's width."""
    dim = options.dim or max(1, model_dim // 4)
    heads = options.heads or max(h for h in range(1, max(1, dim // 64) + 1) if dim % h == 0)
    return dim, heads


class Scout(nn.Module):
    """Token embeddings [B, N, model_dim] of `num_modalities` modalities -> a score logit per token [B, N]."""

    def __init__(self, model_dim: int, num_modalities: int, depth: int, dim: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(model_dim, dim)
        self.modality_embeddings = nn.Parameter(torch.zeros(num_modalities, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        # No biases after the last block: the head's bias, and the norm's through the head, add the same
        # constant to every token's logit, which the softmax over tokens cancels: they could never learn
        # (their exact gradient is zero).
        self.norm = LayerNorm(dim, bias=False)
        self.head = nn.Linear(dim, 1, bias=False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        per_modality = embeddings.shape[1] // len(self.modality_embeddings)
        x = self.embed(embeddings) + self.modality_embeddings.repeat_interleave(per_modality, dim=0)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).squeeze(-1)


def imitation_loss(logits: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(logits) against the exact scores as a distribution, per sample, averaged.
    logits, exact: [B, N] of one modality."""
    target = exact / exact.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@register("scout_attention", ScoutAttentionOptions)
class ScoutAttentionMasking(MaskingStrategy):
    """Priorities from a scout's predicted attention, taught by the exact pass on a share of each batch
    (see the module docstring)."""

    options: ScoutAttentionOptions

    score_label = "attention (scout)"

    def __init__(
        self,
        masking: "MaskingConfig",
        model: MultiMAEConfig,
        num_samples: int = 0,
        context: DistributedContext | None = None,
    ) -> None:
        super().__init__(masking, model, num_samples, context)
        dim, heads = scout_shape(self.options, model.dim)
        self.scout = Scout(model.dim, len(model.inputs), self.options.depth, dim, heads)

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: ScoutAttentionOptions = masking.scout_attention
        check_selection("scout_attention", options, masking)
        if not 0.0 <= options.exact_share <= 1.0:
            raise ValueError(
                f"masking.scout_attention.exact_share={options.exact_share}; expected a value in [0, 1]"
            )
        dim, heads = scout_shape(options, model.dim) if options.dim >= 0 and options.heads >= 0 else (0, 0)
        if options.depth < 1 or heads < 1 or dim < 1 or dim % heads:
            raise ValueError(
                f"masking.scout_attention.depth={options.depth}, dim={options.dim}, heads={options.heads}; "
                "expected depth >= 1 and dim (0 = a quarter of the encoder's) a multiple of heads (0 = auto)"
            )
        if not options.loss_weight >= 0 or not options.lr_scale > 0:
            raise ValueError(
                f"masking.scout_attention.loss_weight={options.loss_weight}, lr_scale={options.lr_scale}; "
                "expected loss_weight >= 0 and lr_scale > 0"
            )

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {"scout": {}}

    def describe(self) -> str:
        return describe_selection(self.name, self.options)

    def no_weight_decay(self) -> set[str]:
        return {"scout.modality_embeddings"}  # as the encoder's own embeddings

    def propose(self, context: MaskingContext) -> Proposal:
        tokens = context.tokens
        embeddings = tokens.embeddings.float()
        # round: 0.07 * 100 is 7.000000000000001, which must not teach 8 samples
        taught = math.ceil(round(self.options.exact_share * len(embeddings), 9))
        with torch.autocast(embeddings.device.type, enabled=False):
            # Gradients only where the scout learns: the taught rows (at least one row runs with them,
            # sliced away when none is taught, so that the loss still reaches every parameter, as DDP
            # expects); an empty batch never reaches the scout (some fused attention kernels refuse one).
            taught_logits = self.scout(embeddings[: max(taught, 1)])[:taught]
            logits = taught_logits.detach()  # [B, N] once the rest is predicted
            if taught < len(embeddings):
                with torch.no_grad():
                    logits = torch.cat([logits, self.scout(embeddings[taught:])])
        scores = {name: value.softmax(dim=-1) for name, value in tokens.split(logits).items()}
        if taught:
            exact = context.model.attention_scores(replace(tokens, embeddings=tokens.embeddings[:taught]))
            scores = {name: torch.cat([exact[name], value[taught:]]) for name, value in scores.items()}
        priorities = self.score_priorities(scores, self.options.select, self.options.noise, context.generator)
        # The taught rows' predictions, scored against the exact rows of `scores` in `learn`.
        return Proposal(priorities, scores, predictions=tokens.split(taught_logits))

    def learn(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> torch.Tensor:
        if choice.predictions is None or choice.scores is None:
            raise ValueError("scout_attention learns from its own choices' predictions and scores")
        losses = []
        for name, logits in choice.predictions.items():
            if len(logits):
                losses.append(imitation_loss(logits, choice.scores[name][: len(logits)]))
            else:  # nothing taught this step: a zero that still reaches every parameter
                losses.append(logits.sum() * 0.0)
        return self.options.loss_weight * torch.stack(losses).mean()
