"""One pretraining forward pass as a module, so that DistributedDataParallel can wrap all of it.

tokens    = model.tokenize(inputs)                                  once, with gradients
choice    = strategy(model, tokens, generator, progress, ...)     reads the tokens detached
encoded   = model.encode(tokens.embeddings, ids_keep)               visible tokens from the same tensor
preds     = model.decode(encoded, tokens, selection)
losses    = reconstruction_losses(preds, batch, masks)                also per patch
losses   += strategy.observe(choice, per-patch losses)               what loss-guided strategies learn from
"""

from dataclasses import dataclass

import torch
from torch import nn

from guidedmae.infra.schedule import START, Progress
from guidedmae.losses import LossConfig, PatchLosses, modality_patch_losses, reconstruction_losses
from guidedmae.masking.strategy import MaskChoice, MaskingStrategy
from guidedmae.models.multimae import MultiMAE, Tokens

__all__ = ["MaskedAutoencoderStep", "StepOutput"]

STRATEGY_LOSS = "masking"  # the name of a strategy's own loss among the step's losses


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]  # per output, 'masking' if the strategy has a loss, and 'total'
    choice: MaskChoice  # the masks (and scores, for guided strategies)
    preds: dict[str, torch.Tensor]
    patch_losses: dict[str, PatchLosses]  # per output, detached
    scalars: dict[str, float]  # values to log beside the losses (e.g. the adaptive budget's alphas)


class MaskedAutoencoderStep(nn.Module):
    """Masked reconstruction of a batch: {modality: tensor} -> losses, masks, predictions."""

    def __init__(self, model: MultiMAE, strategy: MaskingStrategy, loss: LossConfig):
        super().__init__()
        self.model = model
        self.strategy = strategy
        self.loss = loss

    def reconstruct(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, progress: Progress = START
    ) -> tuple[Tokens, MaskChoice, dict[str, torch.Tensor]]:
        """The forward pass without the losses: the tokens of the model's inputs the batch holds, the
        masks the strategy chooses and every output's reconstruction (the `ui` page also shows images
        given without some modality, which have no target for every output)."""
        inputs = {name: batch[name] for name in self.model.config.inputs if name in batch}
        tokens = self.model.tokenize(inputs)
        choice = self.strategy(
            self.model,
            tokens,
            generator,
            progress,
            batch.get("index"),
            batch.get("view"),
            batch.get("semseg"),
        )
        encoded = self.model.encode(tokens.embeddings, choice.selection.ids_keep)
        return tokens, choice, self.model.decode(encoded, tokens, choice.selection)

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, progress: Progress = START
    ) -> StepOutput:
        """batch: model-ready tensors (rgb normalized, depth standardized, semseg ids at 1/4), which are
        both the inputs and the targets, and the samples' "index" where the loader gives it;
        generator: CPU generator for the masking randomness; progress: where the run is."""
        tokens, choice, preds = self.reconstruct(batch, generator, progress)
        losses, patch_losses = reconstruction_losses(
            preds,
            batch,
            choice.selection.masks,
            self.model.config.patch_size,
            self.loss.weights,
            self.loss.on_unmasked,
            per_patch=True,
            modalities=self.model.modalities,
        )
        if self.training:  # pictures in eval mode teach the strategy nothing
            per_modality = modality_patch_losses(patch_losses, tokens.modalities, self.loss.weights)
            strategy_loss = self.strategy.observe(choice, per_modality)
            if strategy_loss is not None:
                losses[STRATEGY_LOSS] = strategy_loss
                losses["total"] = losses["total"] + strategy_loss
        return StepOutput(losses, choice, preds, patch_losses, self.strategy.scalars())
