"""Transformer pieces shared by the encoder and the decoders.

Parameter names (`qkv`, `proj`, `norm1`, `mlp.fc1`, ...) are those of timm / the official MultiMAE code, so
that released checkpoints load without renaming. Attention runs through `attend`: a fused kernel
(`torch.nn.functional.scaled_dot_product_attention`) everywhere but where it is slow (see there).
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# MultiMAE, like MAE and BEiT, uses LayerNorm with eps 1e-6 everywhere.
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole residual branches per sample, rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * keep / keep_prob


def keep_path(x: torch.Tensor) -> torch.Tensor:
    """The residual branch as it is (stochastic depth switched off)."""
    return x


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, H * Dh] -> [B, H, N, Dh]"""
    batch, num_tokens, dim = x.shape
    return x.view(batch, num_tokens, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, Dh] -> [B, N, H * Dh]"""
    batch, num_heads, num_tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, num_tokens, num_heads * head_dim)


# Attention maps up to this many entries per head go through explicit products on a CPU in bf16 when trained.
SMALL_ATTENTION_MAP = 256 * 256


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v for q [B, H, N, Dh], k and v [B, H, M, Dh] -> [B, H, N, Dh].

    On a CPU in bf16, when gradients flow and the map has at most 256 x 256 entries, as explicit matrix
    products: the CPU flash kernel's backward is much slower there at MultiMAE's lengths (99-token encoder,
    196-token decoders). The softmax then runs in bf16, as in the official code under autocast. Elsewhere
    the fused kernel: in fp32 the explicit products made MultiMAE-B's step slower (fp16 would overflow in
    them), without gradients and for longer sequences it is faster, and it stores no N x M map. Measured:
    docs/results/2026-12-02-train-step.md.
    """
    trained = any(t.requires_grad for t in (q, k, v))
    small = q.shape[-2] * k.shape[-2] <= SMALL_ATTENTION_MAP
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and trained and small:
        weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return weights.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]"""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge_heads(attend(q, k, v)))

    def query_attention(self, x: torch.Tensor, query_index: int) -> torch.Tensor:
        """Attention weights (after softmax) of one query token over all tokens, per head.

        Forms only the needed row: the keys of every token and the query of one, never the
        [N, N] map, and skips values and the output projection (guided masking needs nothing else).
        x: [B, N, D] -> [B, H, N]
        """
        dim = x.shape[-1]
        weight_q, weight_k = self.qkv.weight[:dim], self.qkv.weight[dim : 2 * dim]
        bias_q = bias_k = None
        if self.qkv.bias is not None:
            bias_q, bias_k = self.qkv.bias[:dim], self.qkv.bias[dim : 2 * dim]
        q = F.linear(x[:, [query_index]], weight_q, bias_q)
        k = F.linear(x, weight_k, bias_k)
        q, k = split_heads(q, self.num_heads), split_heads(k, self.num_heads)  # [B, H, 1, Dh], [B, H, N, Dh]
        logits = (q @ k.transpose(-2, -1)).squeeze(-2) * q.shape[-1] ** -0.5  # [B, H, N]
        return logits.float().softmax(dim=-1)

    def received_attention(self, x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
        """Mean attention each token receives over all queries, per head, without storing [N, N].

        Queries are processed in chunks of `chunk_size` rows; only the column sums are kept.
        x: [B, N, D] -> [B, H, N]
        """
        dim = x.shape[-1]
        qk = F.linear(
            x, self.qkv.weight[: 2 * dim], None if self.qkv.bias is None else self.qkv.bias[: 2 * dim]
        )
        q, k = (split_heads(t, self.num_heads) for t in qk.chunk(2, dim=-1))
        scale = q.shape[-1] ** -0.5
        received = torch.zeros(q.shape[:2] + (k.shape[2],), dtype=torch.float32, device=x.device)
        for start in range(0, q.shape[2], chunk_size):
            rows = (q[:, :, start : start + chunk_size] @ k.transpose(-2, -1)) * scale  # [B, H, c, N]
            received += rows.float().softmax(dim=-1).sum(dim=-2)
        return received / q.shape[2]


class CrossAttention(nn.Module):
    """Multi-head attention of queries to a separate context (MultiMAE's decoder entry)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """queries: [B, N, D], context: [B, M, D] -> [B, N, D]"""
        q = split_heads(self.q(queries), self.num_heads)
        k, v = (split_heads(t, self.num_heads) for t in self.kv(context).chunk(2, dim=-1))
        return self.proj(merge_heads(attend(q, k, v)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0
    ):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, stochastic_depth: bool = True) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]. stochastic_depth=False keeps every branch even in training: the
        guided-masking attention pass scores tokens with the whole model, not a random sub-network."""
        drop = self.drop_path if stochastic_depth else keep_path
        x = x + drop(self.attn(self.norm1(x)))
        return x + drop(self.mlp(self.norm2(x)))
