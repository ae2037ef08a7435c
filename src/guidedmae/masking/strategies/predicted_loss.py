"""Loss-guided masking, learned (the original report's future work; HPM, CVPR 2023): mask the patches whose
reconstruction loss a small predictor expects to be highest.

The predictor reads every token's features from the no-grad pass over all tokens (`MultiMAE.scan`, the
pass attention-guided masking uses: the last block's normalized input) and maps each to a predicted
loss. It is trained jointly with the model, by the run's optimizer, on HPM's ranking objective: for
every pair of masked patches of one modality of one sample, binary cross-entropy on which of the two
had the higher reconstruction loss in this step (the per-patch losses, detached). Only the order
matters, so the losses of different outputs need no common scale.
"""

from dataclasses import dataclass
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

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


@dataclass
class PredictedLossOptions:
    hidden: int = 256  # width of the predictor's hidden layer
    loss_weight: float = 1.0  # weight of the ranking loss in the step's total loss
    select: str = "high"  # high: mask the patches predicted hardest; low: the easiest
    noise: float = 0.0  # s + noise * std(s) * eps on the predicted losses, as attention's noise


def ranking_loss(logits: torch.Tensor, losses: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """HPM's pairwise objective: BCE(sigmoid(l_i - l_j), [loss_i > loss_j]) over the pairs of masked
    patches of each sample whose losses differ, averaged. logits, losses: [B, N]; masked: [B, N] bool."""
    difference = logits[:, :, None] - logits[:, None, :]  # [B, N, N]
    higher = (losses[:, :, None] > losses[:, None, :]).to(logits.dtype)
    pairs = masked[:, :, None] & masked[:, None, :] & (losses[:, :, None] != losses[:, None, :])
    per_pair = F.binary_cross_entropy_with_logits(difference, higher, reduction="none")
    return (per_pair * pairs).sum() / pairs.sum().clamp_min(1)


@register("predicted_loss", PredictedLossOptions)
class PredictedLossMasking(MaskingStrategy):
    """Priorities from a learned per-token loss predictor (see the module docstring)."""

    options: PredictedLossOptions

    score_label = "predicted loss"

    def __init__(
        self,
        masking: "MaskingConfig",
        model: MultiMAEConfig,
        num_samples: int = 0,
        context: DistributedContext | None = None,
    ) -> None:
        super().__init__(masking, model, num_samples, context)
        self.predictor = nn.Sequential(
            nn.Linear(model.dim, self.options.hidden), nn.GELU(), nn.Linear(self.options.hidden, 1)
        )

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: PredictedLossOptions = masking.predicted_loss
        check_selection("predicted_loss", options, masking)
        if options.hidden < 1 or not options.loss_weight >= 0:
            raise ValueError(
                f"masking.predicted_loss.hidden={options.hidden}, loss_weight={options.loss_weight}; "
                "expected hidden >= 1 and loss_weight >= 0"
            )

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {"predicted-loss": {}}

    def describe(self) -> str:
        return describe_selection(self.name, self.options)

    def propose(self, context: MaskingContext) -> Proposal:
        features = context.model.scan(context.tokens).features  # [B, N, D], no grad
        logits = self.predictor(features.float()).squeeze(-1)  # [B, N]: a monotone stand-in for the loss
        per_modality = context.tokens.split(logits)
        # softplus: positive predicted losses with the logits' order (Gumbel sampling takes logs).
        scores = {name: F.softplus(value.detach()) for name, value in per_modality.items()}
        priorities = self.score_priorities(scores, self.options.select, self.options.noise, context.generator)
        return Proposal(priorities, scores, predictions=per_modality)

    def learn(self, choice: MaskChoice, patch_losses: dict[str, PatchLosses]) -> torch.Tensor:
        if choice.predictions is None:
            raise ValueError("predicted_loss learns from its own choices' predictions; this choice has none")
        losses = [
            ranking_loss(predicted, patch_losses[name].values, patch_losses[name].masked)
            for name, predicted in choice.predictions.items()
        ]
        return self.options.loss_weight * torch.stack(losses).mean()
