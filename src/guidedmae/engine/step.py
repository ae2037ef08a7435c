"""One pretraining forward pass as a module, so that DistributedDataParallel can wrap all of it.

tokens    = model.tokenize(inputs)                            once, with gradients
choice    = choose_masks(masking, model, tokens, generator)   attention pass reads tokens detached
encoded   = model.encode(tokens.embeddings, ids_keep)         visible tokens gathered from the same tensor
preds     = model.decode(encoded, tokens, selection)
losses    = reconstruction_losses(preds, batch, masks)
"""

from dataclasses import dataclass

import torch
from torch import nn

from guidedmae.losses import LossConfig, reconstruction_losses
from guidedmae.masking.strategy import MaskChoice, MaskingConfig, choose_masks, validate_masking
from guidedmae.models.multimae import MultiMAE


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]  # per output and 'total'
    choice: MaskChoice  # the masks (and attention scores, for guided strategies)
    preds: dict[str, torch.Tensor]


class MaskedAutoencoderStep(nn.Module):
    """Masked reconstruction of a batch: {modality: tensor} -> losses, masks, predictions."""

    def __init__(self, model: MultiMAE, masking: MaskingConfig, loss: LossConfig):
        super().__init__()
        num_tokens = len(model.config.inputs) * (model.config.image_size // model.config.patch_size) ** 2
        validate_masking(masking, num_tokens, model.config.num_heads)
        self.model = model
        self.masking = masking
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> StepOutput:
        """batch: model-ready tensors (rgb normalized, depth standardized, semseg ids at 1/4), which are
        both the inputs and the targets; generator: CPU generator for the masking randomness."""
        inputs = {name: batch[name] for name in self.model.config.inputs}
        tokens = self.model.tokenize(inputs)
        choice = choose_masks(self.masking, self.model, tokens, generator)
        encoded = self.model.encode(tokens.embeddings, choice.selection.ids_keep)
        preds = self.model.decode(encoded, tokens, choice.selection)
        losses = reconstruction_losses(
            preds,
            batch,
            choice.selection.masks,
            self.model.config.patch_size,
            self.loss.weights,
            self.loss.on_unmasked,
        )
        return StepOutput(losses, choice, preds)
