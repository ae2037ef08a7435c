"""Building a MultiMAE from an official MultiMAE `.pth` file.

Official files are `{"model": state_dict, "epoch": int, "args": argparse.Namespace, ...}` (or a bare state
dict). They are read with `torch.load(weights_only=True)`: nothing pickled is executed, and the only
non-tensor class admitted is `argparse.Namespace` (the training script's arguments).
"""

import argparse
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from guidedmae.infra.checkpoints import (
    CheckpointError,
    build_to_fit,
    module_names,
    read_checkpoint,
    state_dict_of,
)
from guidedmae.models.architecture import PRESETS, MultiMAEConfig
from guidedmae.models.multimae import MultiMAE


def _count_blocks(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return max(indices) + 1 if indices else 0


def config_from_official(
    state_dict: Mapping[str, torch.Tensor], args: Mapping | None = None, **overrides: Any
) -> MultiMAEConfig:
    """Architecture of an official checkpoint, from its tensor shapes and training arguments.

    What neither holds (attention head counts) comes from `overrides`, else from the ViT preset of the
    same width (head dim 64), else MultiMAE's default of 8 decoder heads.
    """
    args = dict(args or {})
    if "global_tokens" not in state_dict:
        raise CheckpointError("not a MultiMAE state dict: it has no 'global_tokens' entry")
    num_global_tokens, dim = state_dict["global_tokens"].shape[1:]
    inputs = tuple(module_names(state_dict, "input_adapters"))
    outputs = tuple(module_names(state_dict, "output_adapters"))
    found: dict[str, Any] = {
        "inputs": inputs,
        "outputs": outputs,
        "dim": dim,
        "num_global_tokens": num_global_tokens,
        "depth": _count_blocks(state_dict, r"encoder\.(\d+)\."),
        "mlp_ratio": state_dict["encoder.0.mlp.fc1.weight"].shape[0] / dim,
        "qkv_bias": "encoder.0.attn.qkv.bias" in state_dict,
    }
    if "semseg" in inputs:
        found["semseg_classes"], found["semseg_class_dim"] = state_dict[
            "input_adapters.semseg.class_emb.weight"
        ].shape
    image_adapters = [name for name in inputs if name != "semseg"]
    if image_adapters:
        name = image_adapters[0]
        found["patch_size"] = state_dict[f"input_adapters.{name}.proj.weight"].shape[-1]
        found["image_size"] = state_dict[f"input_adapters.{name}.pos_emb"].shape[-1] * found["patch_size"]
    if "input_size" in args:
        found["image_size"] = int(args["input_size"])
    if "patch_size" in args:
        found["patch_size"] = int(args["patch_size"])
    if outputs:
        first = f"output_adapters.{outputs[0]}"
        found["decoder_dim"] = state_dict[f"{first}.mask_token"].shape[-1]
        found["decoder_depth"] = _count_blocks(
            state_dict, rf"{re.escape(first)}\.decoder_transformer\.(\d+)\."
        )
        if "semseg" in outputs and "semseg" not in inputs:
            patch = found.get("patch_size", 16) // 4
            found["semseg_classes"] = (
                state_dict["output_adapters.semseg.out_proj.weight"].shape[0] // patch**2
            )
    if "decoder_num_heads" in args:
        found["decoder_heads"] = int(args["decoder_num_heads"])
    if "decoder_use_task_queries" in args:
        found["decoder_task_queries"] = bool(args["decoder_use_task_queries"])
    presets_by_dim = {preset["dim"]: preset["num_heads"] for preset in PRESETS.values()}
    found["num_heads"] = presets_by_dim.get(dim, max(1, dim // 64))

    known = {f.name for f in fields(MultiMAEConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown model settings {sorted(unknown)}; expected some of {sorted(known)}")
    return MultiMAEConfig(**{**found, **overrides})


def official_args(checkpoint: Mapping) -> dict:
    """The training arguments an official checkpoint stores (an argparse.Namespace), as a dict."""
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, Mapping) else {}


def official_architecture(checkpoint: Mapping, source: str, **overrides: Any) -> MultiMAEConfig:
    """The architecture an official checkpoint's tensors and stored arguments describe (see
    config_from_official); a file they do not describe is a CheckpointError naming it."""
    try:
        return config_from_official(state_dict_of(checkpoint, source), official_args(checkpoint), **overrides)
    except CheckpointError as error:
        if source in str(error):
            raise
        raise CheckpointError(f"{source}: {error}") from error
    except (KeyError, IndexError, TypeError) as error:  # tensors missing or of unexpected rank
        raise CheckpointError(
            f"{source}: not the weights of a MultiMAE ({type(error).__name__}: {error})"
        ) from error
    except ValueError as error:  # what it declares is out of range (MultiMAEConfig's limits)
        raise CheckpointError(f"{source}: {error}") from error


def load_official_checkpoint(path: str | Path, **overrides: Any) -> MultiMAE:
    """Build a MultiMAE from an official MultiMAE checkpoint and load its weights strictly.

    overrides: MultiMAEConfig fields the file does not determine, e.g. num_heads=6, decoder_heads=8,
    drop_path=0.1; `outputs=()` (or a subset) drops the other decoders' weights.
    """
    checkpoint = read_checkpoint(path)
    state_dict = state_dict_of(checkpoint, str(path))
    config = official_architecture(checkpoint, str(path), **overrides)
    if "outputs" in overrides:
        kept = tuple(f"output_adapters.{name}." for name in config.outputs)
        state_dict = {
            key: value
            for key, value in state_dict.items()
            if not key.startswith("output_adapters.") or key.startswith(kept)
        }
    return build_to_fit(lambda: MultiMAE(config), state_dict, str(path))
