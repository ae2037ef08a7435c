"""Input adapters (modality -> tokens) and MultiMAE's spatial output adapter (tokens -> modality).

Parameter names follow the official MultiMAE code (`proj`, `pos_emb`, `class_emb`, `mask_token`,
`task_embeddings`, `decoder`, `decoder_transformer`, `out_proj`, `proj_context`) so that released checkpoints
load strictly.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from guidedmae.models.vit import Block, CrossAttention, LayerNorm, Mlp


def sincos_pos_emb(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding of MoCo-v3 / MultiMAE: [1, dim, grid_h, grid_w].

    Reproduces the official table bit for bit, including its axis order: the first half of the channels
    encodes the slower-varying index of the flattened grid, the second half the faster one.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    slow, fast = torch.meshgrid(
        torch.arange(grid_w, dtype=torch.float32), torch.arange(grid_h, dtype=torch.float32), indexing="ij"
    )
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # [dim / 4]
    angle_slow = slow.flatten()[:, None] * omega[None]  # [h * w, dim / 4]
    angle_fast = fast.flatten()[:, None] * omega[None]
    table = torch.cat([angle_slow.sin(), angle_slow.cos(), angle_fast.sin(), angle_fast.cos()], dim=1)
    return table.T.reshape(1, dim, grid_h, grid_w)


def resize_pos_emb(pos_emb: torch.Tensor, grid: tuple[int, int], mode: str) -> torch.Tensor:
    """[1, D, h, w] position table resized to `grid` and flattened to tokens: [1, gh * gw, D]."""
    if tuple(pos_emb.shape[-2:]) != grid:
        pos_emb = F.interpolate(pos_emb, size=grid, mode=mode, align_corners=False)
    return pos_emb.flatten(2).transpose(1, 2)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """An image as per-token vectors, channel-major within a patch (the order of a patch Conv2d's weight,
    and of `unpatchify`): [B, C, gh * p, gw * p] -> [B, gh * gw, C * p * p]"""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * patch * patch)


class PatchInputAdapter(nn.Module):
    """Image-like modality -> tokens: linear patch projection plus a fixed sin-cos position embedding.

    `stride` is the modality's resolution divisor (1 for rgb/depth); its patch is patch_size // stride
    pixels, so every modality lands on the same token grid. The projection keeps the official Conv2d
    (its names and shapes) but runs as one matrix product over the patches: the same values to float
    rounding, and faster than the convolution on a CPU in bf16 (docs/results/2026-12-02-train-step.md).
    """

    # The official adapters resize their position table bicubically (images) or bilinearly (class maps).
    resize_mode = "bicubic"

    def __init__(self, num_channels: int, patch_size: int, dim: int, image_size: int, stride: int = 1):
        super().__init__()
        self.patch = max(1, patch_size // stride)
        grid = image_size // patch_size
        self.pos_emb = nn.Parameter(sincos_pos_emb(grid, grid, dim), requires_grad=False)
        self.proj = nn.Conv2d(num_channels, dim, kernel_size=self.patch, stride=self.patch)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings before position: [B, C, H, W] -> [B, (H / p) * (W / p), D]"""
        return F.linear(patchify(x, self.patch), self.proj.weight.flatten(1), self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, (H / p) * (W / p), D]"""
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        return self.embed(x) + resize_pos_emb(self.pos_emb, grid, self.resize_mode)


class SemSegInputAdapter(PatchInputAdapter):
    """Class map -> tokens: a learned class embedding, then the patch projection of its channels."""

    resize_mode = "bilinear"

    def __init__(
        self, num_classes: int, class_dim: int, patch_size: int, dim: int, image_size: int, stride: int = 4
    ):
        super().__init__(class_dim, patch_size, dim, image_size, stride)
        self.class_emb = nn.Embedding(num_classes, class_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W] integer class ids -> [B, (H / p) * (W / p), D]

        The ids are cut into patches first, so that the embedding lookup writes each patch's vector in
        place (pixel-major, class channels last) and the projection's weight is reordered to match, rather
        than the [B, class_dim, H, W] embedding map being transposed.
        """
        patches = patchify(x[:, None], self.patch)  # [B, N, p * p]
        weight = self.proj.weight.permute(0, 2, 3, 1).flatten(1)  # [D, p * p * class_dim]
        return F.linear(self.class_emb(patches).flatten(2), weight, self.proj.bias)


def unpatchify(x: torch.Tensor, grid: tuple[int, int], patch: int, channels: int) -> torch.Tensor:
    """Per-token predictions back to an image, channel-major within a patch as MultiMAE's `out_proj`.

    [B, gh * gw, C * p * p] -> [B, C, gh * p, gw * p]
    """
    batch = x.shape[0]
    grid_h, grid_w = grid
    x = x.reshape(batch, grid_h, grid_w, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, grid_h * patch, grid_w * patch)


class SpatialOutputAdapter(nn.Module):
    """MultiMAE's decoder for one output: cross-attention from queries to the visible encoded tokens,
    an MLP, `depth` transformer blocks, and a per-token linear projection to pixels (or class logits).

    With task queries (the default) the queries of output `query_task` are that modality's own tokens:
    the encoded ones where visible, the mask token where masked, plus task and position embeddings.
    """

    def __init__(
        self,
        num_channels: int,
        patch_size: int,
        encoder_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        context_modalities: Sequence[str],
        query_task: str,
        image_size: int,
        stride: int = 1,
        mlp_ratio: float = 4.0,
        task_queries: bool = True,
    ):
        super().__init__()
        self.num_channels = num_channels
        self.patch = max(1, patch_size // stride)
        self.query_task = query_task
        self.task_queries = task_queries
        grid = image_size // patch_size
        self.task_embeddings = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(1, 1, dim)) for name in context_modalities}
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_emb = nn.Parameter(sincos_pos_emb(grid, grid, dim), requires_grad=False)
        self.decoder = CrossAttention(dim, num_heads)
        self.context_norm = LayerNorm(dim)
        self.query_norm = LayerNorm(dim)
        self.out_norm = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        blocks = [Block(dim, num_heads, mlp_ratio) for _ in range(depth)]
        self.decoder_transformer = nn.Sequential(*blocks) if blocks else nn.Identity()
        self.out_proj = nn.Linear(dim, num_channels * self.patch * self.patch)
        self.proj_context = nn.Linear(encoder_dim, dim)

    def context_embeddings(self, modalities: Sequence[str], grid: tuple[int, int]) -> torch.Tensor:
        """Task + position embedding of every token position: [1, len(modalities) * gh * gw, dim]"""
        pos_emb = resize_pos_emb(self.pos_emb, grid, "bilinear")
        per_modality = [
            pos_emb + self.task_embeddings[m] if m in self.task_embeddings else pos_emb for m in modalities
        ]
        return torch.cat(per_modality, dim=1)

    def forward(
        self,
        encoded: torch.Tensor,
        modalities: Sequence[str],
        grid: tuple[int, int],
        ids_keep: torch.Tensor,
        ids_restore: torch.Tensor,
    ) -> torch.Tensor:
        """Reconstruct this output from the encoder's visible tokens.

        encoded: [B, K + G, D_enc], the K visible tokens in `ids_keep` order, then G global tokens.
        ids_keep: [B, K] positions of the visible tokens among all N tokens (modalities concatenated).
        ids_restore: [B, N] for each token, its position in [visible..., masked...].
        Returns [B, C, gh * p, gw * p].
        """
        context = self.proj_context(encoded)  # [B, K + G, d]
        batch, num_visible = ids_keep.shape
        visible, global_tokens = context[:, :num_visible], context[:, num_visible:]
        dim = context.shape[-1]
        num_tokens = ids_restore.shape[1]

        # Every token position: the encoded token where visible, the mask token where masked.
        mask_tokens = self.mask_token.expand(batch, num_tokens - num_visible, dim).to(visible.dtype)
        tokens = torch.cat([visible, mask_tokens], dim=1)
        tokens = tokens.gather(1, ids_restore[..., None].expand(-1, -1, dim))  # [B, N, d]
        tokens = tokens + self.context_embeddings(modalities, grid)

        tokens_per_modality = grid[0] * grid[1]
        if self.task_queries and self.query_task in modalities:
            start = list(modalities).index(self.query_task) * tokens_per_modality
            queries = tokens[:, start : start + tokens_per_modality]
        else:
            queries = self.mask_token + resize_pos_emb(self.pos_emb, grid, "bilinear")
            if self.query_task in self.task_embeddings:
                queries = queries + self.task_embeddings[self.query_task]
            queries = queries.expand(batch, -1, -1)

        context = torch.cat([tokens.gather(1, ids_keep[..., None].expand(-1, -1, dim)), global_tokens], dim=1)
        x = self.decoder(self.query_norm(queries), self.context_norm(context))  # no residual, as official
        x = x + self.mlp(self.out_norm(x))
        x = self.out_proj(self.decoder_transformer(x))  # [B, gh * gw, C * p * p]
        return unpatchify(x, grid, self.patch, self.num_channels)
