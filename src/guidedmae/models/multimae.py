"""MultiMAE: input adapters -> one shared ViT encoder over the visible tokens -> one decoder per output.

The forward pass is split into its steps so that guided masking can reuse the token embeddings:

    tokens = model.tokenize(inputs)                      # once, with gradients
    scores = model.attention_scores(tokens.detach())     # no-grad pass over every token (guided masking)
    scan = model.scan(tokens.detach())                   # the same pass: scores and the tokens' features
    selection = masking.from_priorities(priorities, visible_counts)
    encoded = model.encode(tokens.embeddings, selection.ids_keep)
    preds = model.decode(encoded, tokens, selection)

`model(inputs, masks)` runs the same steps for given boolean masks. The token order is that of the
official code: modalities concatenated in `config.inputs` order, the global token(s) appended last.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from guidedmae.data.modalities import Modality
from guidedmae.infra.checkpoints import build_to_fit
from guidedmae.models.adapters import PatchInputAdapter, SemSegInputAdapter, SpatialOutputAdapter
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.hf_folder import read_pretrained_folder, write_pretrained_folder
from guidedmae.models.selection import Selection, from_masks
from guidedmae.models.vit import Block


@dataclass
class Tokens:
    """Token embeddings of every input modality, concatenated in `modalities` order."""

    embeddings: torch.Tensor  # [B, N, D], N = len(modalities) * grid_h * grid_w
    modalities: tuple[str, ...]
    grid: tuple[int, int]  # token grid shared by every modality

    @property
    def tokens_per_modality(self) -> int:
        return self.grid[0] * self.grid[1]

    def detach(self) -> "Tokens":
        return replace(self, embeddings=self.embeddings.detach())

    def split(self, per_token: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a [B, N, ...] tensor along the token dimension into {modality: [B, N_m, ...]}."""
        return dict(zip(self.modalities, per_token.split(self.tokens_per_modality, dim=1)))


@dataclass
class Scan:
    """What one no-grad pass over every token gives guided masking."""

    scores: dict[str, torch.Tensor]  # {modality: [B, N_m] float32} last-block attention scores
    features: torch.Tensor  # [B, N, D] the patch tokens entering the last block, layer-normalized


def _classes(modality: Modality, config: MultiMAEConfig) -> int:
    return config.semseg_classes if modality.name == "semseg" else modality.classes


def _build_input_adapter(name: str, config: MultiMAEConfig) -> PatchInputAdapter:
    modality = config.modality(name)
    if modality.is_class_map:
        return SemSegInputAdapter(
            _classes(modality, config),
            config.semseg_class_dim,
            config.patch_size,
            config.dim,
            config.image_size,
            modality.stride,
        )
    return PatchInputAdapter(
        modality.channels, config.patch_size, config.dim, config.image_size, modality.stride
    )


def _build_output_adapter(name: str, config: MultiMAEConfig) -> SpatialOutputAdapter:
    modality = config.modality(name)
    return SpatialOutputAdapter(
        num_channels=_classes(modality, config) if modality.is_class_map else modality.channels,
        patch_size=config.patch_size,
        encoder_dim=config.dim,
        dim=config.decoder_dim,
        depth=config.decoder_depth,
        num_heads=config.decoder_heads,
        context_modalities=config.inputs,
        query_task=modality.name,  # norm_rgb queries with the rgb tokens, as in MultiMAE
        image_size=config.image_size,
        stride=modality.stride,
        mlp_ratio=config.mlp_ratio,
        task_queries=config.decoder_task_queries,
    )


class MultiMAE(nn.Module):
    """Multi-modal masked autoencoder with parameter names of the official MultiMAE."""

    def __init__(self, config: MultiMAEConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        self.config = config
        # Recompute the encoder blocks' activations in the backward instead of keeping them (run setting).
        self.activation_checkpointing = False
        # The record of every input and output (norm_rgb: rgb's), resolved once.
        self.modalities = {name: config.modality(name) for name in (*config.inputs, *config.outputs)}
        self.input_adapters = nn.ModuleDict(
            {name: _build_input_adapter(name, config) for name in config.inputs}
        )
        self.output_adapters = nn.ModuleDict(
            {name: _build_output_adapter(name, config) for name in config.outputs}
        )
        self.global_tokens = nn.Parameter(torch.zeros(1, config.num_global_tokens, config.dim))
        # Stochastic depth rises with depth. Rates on the CPU: a model built on the meta device (to check
        # a file's shapes before allocating anything) has no values to read.
        drop_path = torch.linspace(0, config.drop_path, config.depth, device="cpu").tolist()
        self.encoder = nn.Sequential(
            *[Block(config.dim, config.num_heads, config.mlp_ratio, config.qkv_bias, p) for p in drop_path]
        )
        _init_weights(self)

    def input_adapter(self, name: str) -> PatchInputAdapter:
        """The input adapter of modality `name` (what _build_input_adapter built: a ModuleDict gives its
        entries as plain Modules)."""
        return cast(PatchInputAdapter, self.input_adapters[name])

    # -- the steps of a forward pass ----------------------------------------------------------------------

    def tokenize(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        """Input tensors -> token embeddings with position (no masking, no global token).

        inputs: {'rgb': [B, 3, H, W], 'depth': [B, 1, H, W], 'semseg': [B, H/4, W/4] int}; any subset of
        the model's inputs. Returns Tokens with embeddings [B, N, D] in `config.inputs` order.
        """
        unknown = set(inputs) - set(self.input_adapters)
        if unknown or not inputs:
            raise ValueError(
                f"inputs {sorted(inputs)} do not fit this model; expected a non-empty subset of {list(self.config.inputs)}"
            )
        modalities = tuple(name for name in self.config.inputs if name in inputs)
        per_modality, grids = [], {}
        for name in modalities:
            adapter = self.input_adapter(name)
            _check_input(inputs[name], self.modalities[name], adapter.patch)
            tokens = adapter(inputs[name])  # [B, N_m, D]
            per_modality.append(tokens)
            size = inputs[name].shape[-2:]
            grids[name] = (size[0] // adapter.patch, size[1] // adapter.patch)
        if len(set(grids.values())) > 1:
            raise ValueError(f"inputs give different token grids (modality: (rows, cols)): {grids}")
        return Tokens(torch.cat(per_modality, dim=1), modalities, next(iter(grids.values())))

    def encode(self, embeddings: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Run the encoder on the visible tokens plus the global token(s).

        embeddings: [B, N, D]; ids_keep: [B, K] visible positions (None = all N).
        Returns [B, K + G, D]: the visible tokens in ids_keep order, then the global tokens.
        """
        if ids_keep is not None:
            embeddings = embeddings.gather(1, ids_keep[..., None].expand(-1, -1, embeddings.shape[-1]))
        global_tokens = self.global_tokens.expand(embeddings.shape[0], -1, -1)
        x = torch.cat([embeddings, global_tokens], dim=1)
        for block in self.encoder:
            x = self._run_block(block, x)
        return x

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One encoder block; with activation checkpointing (and gradients), its activations are recomputed
        in the backward instead of kept (the same drop-path draws: checkpoint replays the RNG)."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def decode(self, encoded: torch.Tensor, tokens: Tokens, selection: Selection) -> dict[str, torch.Tensor]:
        """Every output adapter's reconstruction: {name: [B, C, H', W']} (semseg: logits at 1/4 size)."""
        preds = {}
        for name, adapter in self.output_adapters.items():
            if name in self.config.fp32_outputs:
                with torch.autocast(encoded.device.type, enabled=False):
                    preds[name] = adapter(
                        encoded.float(),
                        tokens.modalities,
                        tokens.grid,
                        selection.ids_keep,
                        selection.ids_restore,
                    )
            else:
                preds[name] = adapter(
                    encoded, tokens.modalities, tokens.grid, selection.ids_keep, selection.ids_restore
                )
        return preds

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Reconstruct every output from the inputs with the given token masks.

        inputs: as `tokenize`; masks: {modality: [B, N_m] bool}, True = masked, one per input given.
        Returns {output: prediction}, e.g. 'rgb' [B, 3, H, W], 'semseg' [B, classes, H/4, W/4].
        """
        tokens = self.tokenize(inputs)
        if set(masks) != set(tokens.modalities):
            raise ValueError(
                f"masks given for {sorted(masks)}, expected one per input: {list(tokens.modalities)}"
            )
        selection = from_masks({name: masks[name] for name in tokens.modalities})
        return self.decode(self.encode(tokens.embeddings, selection.ids_keep), tokens, selection)

    def forward_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode every token of the inputs, unmasked (fine-tuning): [B, N + G, D]."""
        return self.encode(self.tokenize(inputs).embeddings)

    def encode_layers(self, embeddings: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Encode every token plus the global token(s), keeping the outputs of the blocks in `layers`.

        embeddings: [B, N, D]; layers: 0-based block indices (depth - 1 is the encoder's output).
        Returns one [B, N + G, D] tensor per entry of `layers`, in that order; blocks after the last
        wanted one are not run. Dense fine-tuning heads read several depths (DPT reads four).
        """
        if not layers or not all(0 <= index < len(self.encoder) for index in layers):
            raise ValueError(f"layers {list(layers)} must be block indices in [0, {len(self.encoder)})")
        x = torch.cat([embeddings, self.global_tokens.expand(embeddings.shape[0], -1, -1)], dim=1)
        outputs = {}
        for index, block in enumerate(islice(self.encoder, max(layers) + 1)):
            x = self._run_block(block, x)
            if index in layers:
                outputs[index] = x
        return [outputs[index] for index in layers]

    @torch.no_grad()
    def scan(self, tokens: Tokens, score: str = "global", head_weights: torch.Tensor | None = None) -> "Scan":
        """One encoder pass over every token, without gradients: what guided masking reads.

        Every block but the last runs in full (fused attention); in the last block only what the score
        needs is formed: for 'global', the keys and the global token's query, giving its attention row
        (never the [N, N] map, no values, projection or MLP); for 'received', the column means of the
        attention map, accumulated over query chunks. The last block's normalized input is kept as the
        tokens' features (what a loss predictor reads).
        head_weights: [B, H] weights over heads (rows sum to 1); None = mean over all heads.
        """
        embeddings = tokens.embeddings
        batch_size, num_tokens = embeddings.shape[:2]
        if score not in ("global", "received"):
            raise ValueError(f"unknown attention score {score!r}; expected 'global' or 'received'")
        if head_weights is not None and head_weights.shape != (batch_size, self.config.num_heads):
            raise ValueError(
                f"head_weights of shape {tuple(head_weights.shape)}; expected [{batch_size}, "
                f"{self.config.num_heads}] (batch, heads)"
            )
        x = torch.cat([embeddings, self.global_tokens.expand(batch_size, -1, -1)], dim=1)
        for block in islice(self.encoder, len(self.encoder) - 1):
            x = block(x, stochastic_depth=False)  # score with the whole model, not a random sub-network
        last = cast(Block, self.encoder[-1])  # nn.Sequential gives its blocks as plain Modules
        normed = last.norm1(x)
        if score == "global":
            per_head = last.attn.query_attention(normed, query_index=num_tokens)  # [B, H, N + G]
        else:
            per_head = last.attn.received_attention(normed)
        per_head = per_head[..., :num_tokens]
        if head_weights is None:
            scores = per_head.mean(dim=1)
        else:
            scores = torch.einsum("bhn,bh->bn", per_head, head_weights.to(per_head))
        return Scan(tokens.split(scores), normed[:, :num_tokens])

    def attention_scores(
        self, tokens: Tokens, score: str = "global", head_weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-token attention scores from the last encoder block, over all tokens, without gradients
        (see `scan`). Returns {modality: [B, N_m] float32}."""
        return self.scan(tokens, score, head_weights).scores

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MultiMAE":
        """The MultiMAE of a save_pretrained folder (config.json + model.safetensors, see
        guidedmae.models.hf_folder), loaded strictly."""
        config, weights, source = read_pretrained_folder(folder)
        return build_to_fit(lambda: cls(config), weights, source)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json and model.safetensors into `folder` (atomically, file by file)."""
        return write_pretrained_folder(folder, self.config, self.state_dict())

    def no_weight_decay(self) -> set[str]:
        """Names of parameters exempt from weight decay: tokens, embeddings, norms and biases."""
        exempt: set[str] = set()
        for name, param in self.named_parameters():
            is_embedding = name.rsplit(".", 1)[-1] in ("global_tokens", "mask_token", "pos_emb")
            is_embedding |= ".task_embeddings." in name or ".class_emb." in name
            if param.ndim <= 1 or is_embedding:
                exempt.add(name)
        return exempt


def _check_input(x: torch.Tensor, modality: Modality, patch: int) -> None:
    """Validate one input tensor at the model boundary, naming what was expected."""
    name = modality.name
    if modality.is_class_map:
        if x.ndim != 3 or x.is_floating_point():
            raise ValueError(
                f"input {name!r} must be integer class ids [B, H, W]; got {x.dtype} {tuple(x.shape)}"
            )
    elif x.ndim != 4 or x.shape[1] != modality.channels:
        raise ValueError(f"input {name!r} must be [B, {modality.channels}, H, W]; got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(
            f"input {name!r} of size {height}x{width} is not divisible by its patch size {patch}"
        )


def _init_weights(model: MultiMAE) -> None:
    """MultiMAE's initialisation: xavier-uniform linears (q, k, v treated as separate matrices), patch
    projections initialised like linears (from MAE), truncated-normal tokens and embeddings."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            fan_out = module.weight.shape[0]
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("qkv", "kv"):
                fan_out //= 3 if leaf == "qkv" else 2
            bound = math.sqrt(6.0 / (fan_out + module.weight.shape[1]))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
    nn.init.trunc_normal_(model.global_tokens, std=0.02, a=-2.0, b=2.0)
    for adapter in model.output_adapters.values():  # SpatialOutputAdapters, as plain Modules
        for embedding in cast(SpatialOutputAdapter, adapter).task_embeddings.values():
            nn.init.trunc_normal_(embedding, std=0.02, a=-2.0, b=2.0)
