"""One pretraining forward pass as a module, so that DistributedDataParallel can wrap all of it.

tokens    = model.tokenize(inputs)                                  once, with gradients
choice    = strategy(model, tokens, generator, progress, indices)   reads the tokens detached
encoded   = model.encode(tokens.embeddings, ids_keep)               visible tokens from the same tensor
preds     = model.decode(encoded, tokens, selection)
losses    = reconstruction_losses(preds, batch, masks) (+ the strategy's own loss)
strategy.observe(choice, per-patch losses, indices)                 what loss-guided strategies learn from
"""

from dataclasses import dataclass

import torch
from torch import nn

from guidedmae.engine.schedule import START, Progress
from guidedmae.losses import LossConfig, PatchLosses, reconstruction_losses
from guidedmae.masking.strategy import MaskChoice, MaskingStrategy
from guidedmae.models.multimae import MultiMAE

__all__ = ["MaskedAutoencoderStep", "StepOutput"]

STRATEGY_LOSS = "masking"  # the name of a strategy's own loss among the step's losses


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]  # per output, 'masking' if the strategy has a loss, and 'total'
    choice: MaskChoice  # the masks (and scores, for guided strategies)
    preds: dict[str, torch.Tensor]
    patch_losses: dict[str, PatchLosses]  # per output, detached


class MaskedAutoencoderStep(nn.Module):
    """Masked reconstruction of a batch: {modality: tensor} -> losses, masks, predictions."""

    def __init__(self, model: MultiMAE, strategy: MaskingStrategy, loss: LossConfig):
        super().__init__()
        self.model = model
        self.strategy = strategy
        self.loss = loss

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, progress: Progress = START
    ) -> StepOutput:
        """batch: model-ready tensors (rgb normalized, depth standardized, semseg ids at 1/4), which are
        both the inputs and the targets, and the samples' "index" where the loader gives it;
        generator: CPU generator for the masking randomness; progress: where the run is."""
        inputs = {name: batch[name] for name in self.model.config.inputs}
        indices = batch.get("index")
        tokens = self.model.tokenize(inputs)
        choice = self.strategy(self.model, tokens, generator, progress, indices)
        encoded = self.model.encode(tokens.embeddings, choice.selection.ids_keep)
        preds = self.model.decode(encoded, tokens, choice.selection)
        losses, patch_losses = reconstruction_losses(
            preds,
            batch,
            choice.selection.masks,
            self.model.config.patch_size,
            self.loss.weights,
            self.loss.on_unmasked,
            per_patch=True,
        )
        if choice.aux_loss is not None:
            losses[STRATEGY_LOSS] = choice.aux_loss
            losses["total"] = losses["total"] + choice.aux_loss
        if self.training:  # pictures and benchmarks in eval mode teach the strategy nothing
            with torch.no_grad():
                self.strategy.observe(choice, patch_losses, indices)
        return StepOutput(losses, choice, preds, patch_losses)
