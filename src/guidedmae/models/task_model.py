"""A pretrained MultiMAE encoder (no decoders, no masking) with a task head: the fine-tuning model.

    model = FineTuneModel(MultiMAE(replace(config, outputs=())), build_head(head_config, config))
    logits = model({"rgb": images})          # [B, K], or [B, C, H, W] for dense tasks

Linear probing freezes the encoder: its parameters stop requiring gradients, it stays in eval mode
(no drop path) whatever `model.train()` says, and it runs without building a graph.
"""

from dataclasses import dataclass

import torch
from torch import nn

from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.heads import ConvNeXtHead, DPTHead, LinearDenseHead, LinearHead, spread_layers
from guidedmae.models.multimae import MultiMAE

TASKS = ("classification", "semseg", "depth")
# The head kinds each task accepts; the first is its default (MultiMAE's choice). "linear" on dense tasks
# is DINOv2's linear probe; "knn" a k-nearest-neighbour classifier on frozen features (nothing trained).
HEAD_KINDS = {
    "classification": ("linear", "knn"),
    "semseg": ("convnext", "dpt", "linear"),
    "depth": ("dpt", "convnext", "linear"),
}


@dataclass
class HeadConfig:
    """The task and its head. Defaults: MultiMAE's IN1K classifier; see each field for the dense heads."""

    task: str = "classification"  # classification | semseg | depth
    kind: str = ""  # "" = the task's default: linear (classification), convnext (semseg), dpt (depth)
    num_classes: int = 1000  # classification and semseg; depth predicts 1 channel (metres)
    pool: str = "mean"  # linear, knn: mean of all encoder tokens (official MultiViT) | global token
    norm: str = "layernorm"  # linear classification: layernorm | batchnorm (MAE's probe: no affine)
    init_scale: float = 0.001  # linear: initial classifier scale (MultiMAE's IN1K recipe)
    knn_k: int = 20  # knn: neighbours that vote (DINO's k-NN protocol)
    knn_temperature: float = 0.07  # knn: votes weigh exp(cosine similarity / temperature)
    readout: tuple[str, ...] = ()  # dense: input modalities whose tokens feed the head; () = every input
    dim: int = 6144  # convnext: features per token after projection
    preds_per_patch: int = 16  # convnext: each token unfolds into a sqrt x sqrt block
    depth: int = 4  # convnext: ConvNeXt blocks
    layers: tuple[int, ...] = ()  # dpt: 4 encoder blocks read (0-based); () = spread evenly, ending last
    layer_dims: tuple[int, ...] = (96, 192, 384, 768)  # dpt: channels of the 4 reassembled maps
    feature_dim: int = 256  # dpt: fusion channels

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"head.task={self.task!r}; expected one of {TASKS}")
        if self.kind and self.kind not in HEAD_KINDS[self.task]:
            raise ValueError(
                f"head.kind={self.kind!r} for task {self.task}; expected one of {HEAD_KINDS[self.task]}"
            )
        if self.task != "depth" and self.num_classes < 1:
            raise ValueError(f"head.num_classes={self.num_classes}; expected at least 1")
        if self.knn_k < 1 or not self.knn_temperature > 0:
            raise ValueError(
                f"head.knn_k={self.knn_k}, head.knn_temperature={self.knn_temperature}; expected k >= 1 and a "
                "positive temperature"
            )

    @property
    def head_kind(self) -> str:
        return self.kind or HEAD_KINDS[self.task][0]

    @property
    def out_channels(self) -> int:
        return 1 if self.task == "depth" else self.num_classes


def build_head(config: HeadConfig, encoder: MultiMAEConfig) -> nn.Module:
    """The head of `config` for an encoder of architecture `encoder`."""
    readout = tuple(config.readout) or tuple(encoder.inputs)
    unknown = [name for name in readout if name not in encoder.inputs]
    if unknown:
        raise ValueError(
            f"head.readout {list(readout)} names {unknown}, not among model.inputs {list(encoder.inputs)}"
        )
    kind = config.head_kind
    if kind in ("linear", "knn") and config.task == "classification":  # knn: the pooled features' layers
        return LinearHead(
            encoder.dim, config.num_classes, encoder.depth, config.pool, config.init_scale, config.norm
        )
    if kind == "linear":
        return LinearDenseHead(encoder.dim, config.out_channels, readout, encoder.depth)
    if kind == "convnext":
        return ConvNeXtHead(
            encoder.dim,
            config.out_channels,
            readout,
            encoder.depth,
            dim=config.dim,
            preds_per_patch=config.preds_per_patch,
            depth=config.depth,
        )
    layers = tuple(config.layers) or spread_layers(encoder.depth)
    if not all(0 <= index < encoder.depth for index in layers):
        raise ValueError(f"head.layers {list(layers)} must be block indices in [0, {encoder.depth})")
    return DPTHead(
        encoder.dim,
        config.out_channels,
        readout,
        layers,
        layer_dims=config.layer_dims,
        feature_dim=config.feature_dim,
        kind="semseg" if config.task == "semseg" else "regression",
    )


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

    def __init__(self, encoder: MultiMAE, head: nn.Module, freeze_encoder: bool = False):
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
