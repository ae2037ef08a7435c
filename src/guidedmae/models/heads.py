"""Fine-tuning heads on the encoder's tokens: a linear classifier, and ConvNeXt- and DPT-style dense heads.

Every head takes the encoder outputs of the blocks it names in `layers` ([B, N + G, D] each: the
patch tokens of every input modality, in input order, then the G global tokens) and returns
logits [B, K] (classification) or a map [B, C, H, W] at the input resolution (dense tasks). The
designs follow MultiMAE's output adapters for fine-tuning:
- LinearHead: LayerNorm + Linear on the mean of all encoder tokens (MultiViT passes its global
  token along with the patch tokens, so the official mean includes it) or on the global token; with
  norm="batchnorm", MAE's linear probe: BatchNorm without affine parameters before the Linear.
- LinearDenseHead: DINOv2's linear protocol for dense probes: BatchNorm over the patch tokens of the
  chosen modalities, a linear layer per token (a 1x1 conv), bilinear upsampling to the input size.
- ConvNeXtHead: the patch tokens of the chosen modalities, concatenated along channels, are
  projected to `dim` features, each token unfolded into a sqrt(p) x sqrt(p) block of dim / p
  channels (p predictions per patch), refined by ConvNeXt blocks, classified by a 1x1 conv and
  upsampled bilinearly. MultiMAE's semseg recipe: dim 6144, 16 preds per patch, depth 4.
- DPTHead: four encoder depths reassembled into a pyramid at 4x, 2x, 1x and 1/2x the token grid,
  projected to `feature_dim` channels, fused top-down by residual conv units, then a small
  convolutional head (regression for depth, classification for semseg).
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from guidedmae.models.vit import DropPath, LayerNorm

POOLS = ("mean", "global")
NORMS = ("layernorm", "batchnorm")


def spread_layers(depth: int, count: int = 4) -> tuple[int, ...]:
    """`count` block indices spread evenly over an encoder of `depth` blocks, ending at the last one.

    For ViT-B (12 blocks) this gives DPT's hooks (2, 5, 8, 11).
    """
    return tuple(math.ceil((k + 1) * depth / count) - 1 for k in range(count))


def token_map(
    encoded: torch.Tensor,
    modalities: Sequence[str],
    grid: tuple[int, int],
    readout: Sequence[str],
) -> torch.Tensor:
    """The patch tokens of the `readout` modalities as a feature map, concatenated along channels.

    encoded: [B, M * gh * gw + G, D], modalities in `modalities` order -> [B, len(readout) * D, gh, gw]
    """
    missing = [name for name in readout if name not in modalities]
    if missing:
        raise ValueError(f"head reads tokens of {missing}, but the inputs are only {list(modalities)}")
    per_modality = grid[0] * grid[1]
    maps = []
    for name in readout:
        start = list(modalities).index(name) * per_modality
        tokens = encoded[:, start : start + per_modality]  # [B, gh * gw, D]
        maps.append(tokens.transpose(1, 2).reshape(encoded.shape[0], -1, *grid))
    return torch.cat(maps, dim=1)


def unfold_predictions(x: torch.Tensor, side: int) -> torch.Tensor:
    """Each token's features as a side x side block of pixels: [B, gh, gw, side * side * C] -> [B, C, gh * side, gw * side].

    A token's features are laid out (row in block, column in block, channel), MultiMAE's ConvNeXt
    adapter's order, so that its fine-tuned weights mean the same here.
    """
    batch, grid_h, grid_w, features = x.shape
    channels = features // (side * side)
    x = x.view(batch, grid_h, grid_w, side, side, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid_h * side, grid_w * side)


def _trunc_normal_linears(module: nn.Module) -> None:
    """MultiMAE's head initialisation: linears ~ N(0, 0.02) truncated at +-2, zero biases."""
    for child in module.modules():
        if isinstance(child, nn.Linear):
            nn.init.trunc_normal_(child.weight, std=0.02, a=-2.0, b=2.0)
            if child.bias is not None:
                nn.init.zeros_(child.bias)


class TaskHead(nn.Module, ABC):
    """What the fine-tuning model drives: the encoder blocks whose outputs the head reads (`layers`, 0-based)
    and `forward` from those outputs, the token modalities and grid to logits or a map."""

    layers: tuple[int, ...]

    @abstractmethod
    def forward(
        self,
        features: list[torch.Tensor],
        modalities: Sequence[str],
        grid: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """features: one [B, N + G, D] per entry of `layers` -> [B, K] or [B, C, *output_size]"""


class LinearHead(TaskHead):
    """BatchNorm-free linear classifier: LayerNorm, then Linear, on a pooled token.

    pool: 'mean' averages every encoder token (patch and global tokens, as the official MultiViT);
    'global' takes the last global token. init_scale shrinks the initial classifier (MultiMAE's IN1K
    recipe: 0.001), so that fine-tuning starts from near-uniform predictions.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        depth: int,
        pool: str = "mean",
        init_scale: float = 1.0,
        norm: str = "layernorm",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"head.pool={pool!r}; expected one of {POOLS}")
        if norm not in NORMS:
            raise ValueError(f"head.norm={norm!r}; expected one of {NORMS}")
        if num_classes < 1:
            raise ValueError(f"head.num_classes={num_classes}; expected at least 1")
        self.pool = pool
        self.layers = (depth - 1,)
        # MAE's probe normalizes the frozen features with batch statistics, no affine parameters.
        self.norm = LayerNorm(dim) if norm == "layernorm" else nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        _trunc_normal_linears(self)
        with torch.no_grad():
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    def pooled(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The pooled token the classifier reads: features [[B, N + G, D]] -> [B, D]"""
        encoded = features[0]
        return encoded.mean(dim=1) if self.pool == "mean" else encoded[:, -1]

    def forward(
        self,
        features: list[torch.Tensor],
        modalities: Sequence[str],
        grid: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """features: [[B, N + G, D]] (the last block) -> logits [B, num_classes]"""
        return self.head(self.norm(self.pooled(features)))


class LinearDenseHead(TaskHead):
    """A linear map of every patch token to the output channels, upsampled bilinearly (DINOv2's linear
    semantic-segmentation protocol; for depth a linear regression of metres per pixel)."""

    def __init__(self, dim: int, out_channels: int, readout: Sequence[str], depth_of_encoder: int):
        super().__init__()
        self.readout = tuple(readout)
        self.layers = (depth_of_encoder - 1,)
        features = dim * len(self.readout)
        self.norm = nn.BatchNorm2d(features)
        self.classifier = nn.Conv2d(features, out_channels, kernel_size=1)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.classifier.bias)  # type: ignore[arg-type]  # a Conv2d built with its bias

    def forward(
        self,
        features: list[torch.Tensor],
        modalities: Sequence[str],
        grid: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """features: [[B, N + G, D]] (the last block) -> [B, out_channels, *output_size]"""
        tokens = token_map(features[0], modalities, grid, self.readout)  # [B, M * D, gh, gw]
        logits = self.classifier(self.norm(tokens))
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)


class ConvNeXtBlock(nn.Module):
    """Isotropic ConvNeXt block: 7x7 depthwise conv, LayerNorm, 4x MLP (as 1x1 convs), residual."""

    def __init__(self, dim: int, drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]"""
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last for the norm and the MLP
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class ConvNeXtHead(TaskHead):
    """MultiMAE's ConvNeXt output adapter: tokens unfolded into a finer map, ConvNeXt blocks, 1x1 conv."""

    def __init__(
        self,
        encoder_dim: int,
        out_channels: int,
        readout: Sequence[str],
        depth_of_encoder: int,
        dim: int = 6144,
        preds_per_patch: int = 16,
        depth: int = 4,
        interpolate: str = "bilinear",
    ):
        super().__init__()
        side = math.isqrt(preds_per_patch)
        if side * side != preds_per_patch or dim % preds_per_patch:
            raise ValueError(
                f"head.preds_per_patch={preds_per_patch} must be a square number dividing head.dim={dim}"
            )
        self.readout = tuple(readout)
        self.layers = (depth_of_encoder - 1,)
        self.side = side
        self.class_dim = dim // preds_per_patch
        self.interpolate = interpolate
        self.proj_dec = nn.Linear(encoder_dim * len(self.readout), dim)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(self.class_dim) for _ in range(depth)])
        self.final_layer = nn.Conv2d(self.class_dim, out_channels, kernel_size=1)
        _trunc_normal_linears(self)

    def forward(
        self,
        features: list[torch.Tensor],
        modalities: Sequence[str],
        grid: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """features: [[B, N + G, D]] -> [B, out_channels, *output_size]"""
        x = token_map(features[0], modalities, grid, self.readout)  # [B, M * D, gh, gw]
        x = unfold_predictions(
            self.proj_dec(x.permute(0, 2, 3, 1)), self.side
        )  # [B, dim / p, gh * s, gw * s]
        x = self.final_layer(self.blocks(x))
        return F.interpolate(x, size=output_size, mode=self.interpolate)


class ResidualConvUnit(nn.Module):
    """DPT's pre-activation residual unit: x + conv(relu(conv(relu(x)))), no normalization."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT's feature fusion: add the refined skip feature (if any), refine, upsample, 1x1 conv.

    The coarsest block has no skip input, hence no unit to refine one (DPT builds it and leaves it
    unused, which distributed training would have to search for every step).
    """

    def __init__(self, features: int, with_skip: bool = True):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features) if with_skip else None
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        """x (and skip): [B, F, h, w] -> [B, F, *size]. DPT doubles the size; naming the size keeps odd
        token grids aligned with the next skip connection."""
        if self.resConfUnit1 is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def _reassemble(encoder_dim: int, out_dim: int, scale: float) -> nn.Sequential:
    """DPT's reassembly of one depth: 1x1 projection, then resampling of the token map by `scale`."""
    project = nn.Conv2d(encoder_dim, out_dim, kernel_size=1)
    if scale > 1:
        factor = int(scale)
        return nn.Sequential(project, nn.ConvTranspose2d(out_dim, out_dim, kernel_size=factor, stride=factor))
    if scale < 1:
        return nn.Sequential(project, nn.Conv2d(out_dim, out_dim, kernel_size=3, stride=2, padding=1))
    return nn.Sequential(project)


class DPTHead(TaskHead):
    """MultiMAE's DPT output adapter for dense prediction from four encoder depths.

    kind: 'regression' (DPT's depth head: conv, upsample, conv, ReLU, 1x1 conv; no final activation, as
    MultiMAE) or 'semseg' (conv, ReLU, dropout 0.1, 1x1 conv to the classes, upsample).
    """

    SCALES = (4.0, 2.0, 1.0, 0.5)  # reassembled maps relative to the token grid

    def __init__(
        self,
        encoder_dim: int,
        out_channels: int,
        readout: Sequence[str],
        layers: Sequence[int],
        layer_dims: Sequence[int] = (96, 192, 384, 768),
        feature_dim: int = 256,
        kind: str = "regression",
    ):
        super().__init__()
        if len(layers) != 4 or len(layer_dims) != 4:
            raise ValueError(
                f"DPT needs 4 layers and 4 layer_dims, got {list(layers)} and {list(layer_dims)}"
            )
        if kind not in ("regression", "semseg"):
            raise ValueError(f"DPT head kind={kind!r}; expected 'regression' or 'semseg'")
        self.readout = tuple(readout)
        self.layers = tuple(layers)
        in_dim = encoder_dim * len(self.readout)
        self.act_postprocess = nn.ModuleList(
            [_reassemble(in_dim, out_dim, scale) for out_dim, scale in zip(layer_dims, self.SCALES)]
        )
        self.layer_rn = nn.ModuleList(
            [nn.Conv2d(out_dim, feature_dim, kernel_size=3, padding=1, bias=False) for out_dim in layer_dims]
        )
        self.refinenet = nn.ModuleList([FusionBlock(feature_dim, with_skip=index < 3) for index in range(4)])
        if kind == "regression":
            self.head = nn.Sequential(
                nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1),
                nn.Conv2d(feature_dim // 2, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, out_channels, kernel_size=1),
            )
        else:
            self.head = nn.Sequential(
                nn.Conv2d(feature_dim, feature_dim, kernel_size=3, padding=1, bias=False),
                nn.ReLU(),
                nn.Dropout(0.1),
                nn.Conv2d(feature_dim, out_channels, kernel_size=1),
            )
        self.kind = kind

    def forward(
        self,
        features: list[torch.Tensor],
        modalities: Sequence[str],
        grid: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """features: four [B, N + G, D] -> [B, out_channels, *output_size]"""
        maps = [token_map(encoded, modalities, grid, self.readout) for encoded in features]
        pyramid = [rn(post(x)) for x, post, rn in zip(maps, self.act_postprocess, self.layer_rn)]
        # Top-down: the coarsest map (1/2 grid) is fused into the next finer one until 4x the grid.
        fine = pyramid[0].shape[-2:]
        path = self.refinenet[3](pyramid[3], None, tuple(pyramid[2].shape[-2:]))
        path = self.refinenet[2](path, pyramid[2], tuple(pyramid[1].shape[-2:]))
        path = self.refinenet[1](path, pyramid[1], tuple(fine))
        path = self.refinenet[0](path, pyramid[0], (2 * fine[0], 2 * fine[1]))
        if self.kind == "regression":
            # DPT upsamples between the first two convs of its depth head.
            path = self.head[0](path)
            path = F.interpolate(path, size=output_size, mode="bilinear", align_corners=True)
            return self.head[1:](path)
        logits = self.head(path)
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=True)
