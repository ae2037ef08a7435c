"""Weights that travel: the encoder as a timm ViT, the whole MultiMAE as safetensors or a
save_pretrained-style folder, and back.

    timm_weights = encoder_to_timm(model.state_dict())               # {cls_token, pos_embed, blocks.0...}
    model.save_pretrained("out/multimae")                            # config.json + model.safetensors
    model = MultiMAE.from_pretrained("out/multimae")

The timm mapping is MultiMAE's own converter's: the global token -> `cls_token`; the rgb position table
[1, D, h, w] -> `pos_embed` [1, 1 + h * w, D] with a zero slot for the class token (MultiMAE adds no
position to its global token); the rgb patch projection -> `patch_embed.proj`; `encoder.<i>.*` ->
`blocks.<i>.*` (the same names inside a block). MultiMAE's encoder ends without a norm while timm's ends
with `norm`: it is exported with weight 1 and bias 0, so timm's features are ours layer-normalized (a
MultiMAE fine-tuning head normalizes too). Token order differs (timm's class token comes first,
MultiMAE's global token last); attention does not care, so the tokens are the same, reordered.
"""

from collections.abc import Mapping
from dataclasses import asdict

import torch

from guidedmae.infra.checkpoints import CheckpointError, build_to_fit, read_checkpoint, state_dict_of
from guidedmae.models.architecture import MultiMAEConfig, config_from_values
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.official import official_architecture

__all__ = ["encoder_to_timm", "is_timm_vit", "multimae_of", "timm_to_encoder"]


def encoder_to_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MultiMAE weights (with an rgb input adapter) -> a timm `vision_transformer` state dict (no head)."""
    if "input_adapters.rgb.proj.weight" not in state_dict:
        raise CheckpointError("a timm ViT takes rgb: these MultiMAE weights have no rgb input adapter")
    global_tokens = state_dict["global_tokens"]
    if global_tokens.shape[1] != 1:
        raise CheckpointError(
            f"a timm ViT has one class token; these weights have {global_tokens.shape[1]} global tokens"
        )
    table = state_dict["input_adapters.rgb.pos_emb"]  # [1, D, h, w]
    dim = table.shape[1]
    pos_embed = torch.cat(
        [torch.zeros(1, 1, dim, dtype=table.dtype), table.flatten(2).transpose(1, 2)], dim=1
    )
    timm = {
        "cls_token": global_tokens.clone(),
        "pos_embed": pos_embed,
        "patch_embed.proj.weight": state_dict["input_adapters.rgb.proj.weight"].clone(),
        "patch_embed.proj.bias": state_dict["input_adapters.rgb.proj.bias"].clone(),
        "norm.weight": torch.ones(dim),
        "norm.bias": torch.zeros(dim),
    }
    for key, value in state_dict.items():
        if key.startswith("encoder."):
            timm["blocks." + key.removeprefix("encoder.")] = value.clone()
    return timm


def is_timm_vit(state_dict: Mapping) -> bool:
    """Whether a state dict has timm / MAE ViT names (cls_token, pos_embed, blocks.<i>...)."""
    return (
        "cls_token" in state_dict
        and "pos_embed" in state_dict
        and any(k.startswith("blocks.") for k in state_dict)
    )


def timm_to_encoder(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm or MAE ViT state dict -> MultiMAE names for what it holds: the global token, the rgb input
    adapter and the encoder blocks. Its position table is MultiMAE's fixed sin-cos one, not the file's
    (a MultiMAE's own is kept); a final norm other than the identity, and a head, have no MultiMAE
    counterpart and are left out."""
    if not is_timm_vit(state_dict):
        raise CheckpointError(
            "not a timm / MAE ViT state dict (expected cls_token, pos_embed, blocks.<i>...)"
        )
    mapped = {
        "global_tokens": state_dict["cls_token"],
        "input_adapters.rgb.proj.weight": state_dict["patch_embed.proj.weight"],
        "input_adapters.rgb.proj.bias": state_dict["patch_embed.proj.bias"],
    }
    for key, value in state_dict.items():
        if key.startswith("blocks."):
            mapped["encoder." + key.removeprefix("blocks.")] = value
    return mapped


def multimae_of(path: str) -> MultiMAE:
    """The MultiMAE (or, from a fine-tuning checkpoint, its encoder) a checkpoint holds."""
    checkpoint = read_checkpoint(path)
    weights = state_dict_of(checkpoint, path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict):  # an official MultiMAE file: its tensors and arguments say what it is
        config = official_architecture(checkpoint, path)
    else:
        # Declared modalities live beside the model section (the data reads them too).
        model_section = {**saved.get("model", {}), "modalities": saved.get("modalities", {})}
        config = config_from_values(model_section, path)
        if "head" in saved:  # a fine-tuning checkpoint: the encoder, without the head
            weights = {
                key.removeprefix("encoder."): value
                for key, value in weights.items()
                if key.startswith("encoder.")
            }
            config = MultiMAEConfig(**{**asdict(config), "outputs": ()})
    return build_to_fit(lambda: MultiMAE(config), weights, path)
