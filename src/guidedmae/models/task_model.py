"""A pretrained MultiMAE encoder (no decoders, no masking) with a task head: the fine-tuning model.

    model = FineTuneModel(MultiMAE(replace(config, outputs=())), head)   # a head of guidedmae.tasks
    logits = model({"rgb": images})          # [B, K], or [B, C, H, W] for dense tasks

Linear probing freezes the encoder: its parameters stop requiring gradients, it stays in eval mode
(no drop path) whatever `model.train()` says, and it runs without building a graph.
"""

import torch
from torch import nn

from guidedmae.models.heads import TaskHead
from guidedmae.models.multimae import MultiMAE


def encoder_layer_id(name: str, depth: int) -> int:
    """MultiMAE's layer index of a MultiMAE parameter for layer-wise lr decay (its optim_factory):
    0 = input adapters and global tokens, i + 1 = encoder block i, depth + 1 = anything else."""
    if name.startswith(("input_adapters.", "global_tokens")):
        return 0
    if name.startswith("encoder."):
        return int(name.split(".")[1]) + 1
    return depth + 1


class FineTuneModel(nn.Module):
    """MultiMAE encoder + task head. forward(inputs) -> logits [B, K] or a map [B, C, H, W]."""

    def __init__(self, encoder: MultiMAE, head: TaskHead, freeze_encoder: bool = False):
        super().__init__()
        if len(encoder.output_adapters):
            raise ValueError(
                f"the fine-tuning encoder must have no decoders (outputs=()), has {list(encoder.output_adapters)}"
            )
        self.encoder = encoder
        self.head = head
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "FineTuneModel":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a probed encoder is a fixed feature extractor: no drop path
        return self

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """inputs: {modality: tensor} as MultiMAE.tokenize takes them (any subset of model.inputs)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            tokens = self.encoder.tokenize(inputs)
            features = self.encoder.encode_layers(tokens.embeddings, self.head.layers)
        patch = self.encoder.config.patch_size
        output_size = (tokens.grid[0] * patch, tokens.grid[1] * patch)
        return self.head(features, tokens.modalities, tokens.grid, output_size)

    @property
    def num_layers(self) -> int:
        """Encoder blocks: layer ids run from 0 (input adapters) to num_layers + 1 (the head)."""
        return len(self.encoder.encoder)

    def layer_id(self, name: str) -> int:
        """Layer index of a parameter name of this model, for layer-wise lr decay."""
        if name.startswith("encoder."):
            return encoder_layer_id(name.removeprefix("encoder."), self.num_layers)
        return self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        """The encoder's exempt names (tokens, embeddings, norms, biases) under this model's prefix."""
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()}
