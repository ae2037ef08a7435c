"""Loading checkpoints safely, and building a MultiMAE from an official MultiMAE `.pth` file.

Official files are `{"model": state_dict, "epoch": int, "args": argparse.Namespace, ...}` (or a bare state
dict). They are read with `torch.load(weights_only=True)`: nothing pickled is executed, and the only
non-tensor class admitted is `argparse.Namespace` (the training script's arguments).
"""

import argparse
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from guidedmae.models.multimae import PRESETS, MultiMAE, MultiMAEConfig

# Classes that official MultiMAE checkpoints pickle besides tensors and builtins.
OFFICIAL_SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


class UnreadableCheckpoint(CheckpointError):
    """A file that is not a complete, safe torch checkpoint (junk, truncated, empty, or pickling code)."""


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file without executing pickled code; returns the stored dict.

    Raises FileNotFoundError if there is no such file, UnreadableCheckpoint (one line naming the file)
    for anything that is not a complete, safe torch checkpoint holding a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(OFFICIAL_SAFE_GLOBALS) if allow else contextlib.nullcontext():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # junk makes the unpickler fail in every way (IndexError, struct.error, ...)
        # torch names the class it refused ("Unsupported global: ...", "unsupported GLOBAL os.system").
        detail = next((line for line in str(error).splitlines() if "global" in line.lower()), None)
        if detail is not None:
            raise UnreadableCheckpoint(
                f"{path}: refused to load, it pickles something beyond tensors and "
                f"{[cls.__name__ for cls in OFFICIAL_SAFE_GLOBALS]} (loading never executes pickled code; "
                f"{detail.strip()})"
            ) from error
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise UnreadableCheckpoint(
            f"{path}: not a readable torch checkpoint (empty, truncated, damaged or another kind of file: "
            f"{type(error).__name__}: {first_line})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise UnreadableCheckpoint(f"{path}: expected a checkpoint dict, found {type(checkpoint).__name__}")
    return checkpoint


def state_dict_of(checkpoint: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict: its 'model' entry, or the dict itself if it is one."""
    weights = checkpoint.get("model", checkpoint)
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source}: no state dict found (expected a 'model' entry of tensors)")
    return dict(weights)


SHOWN_KEYS = 12  # keys named per kind of mismatch; the rest are counted


def fit_problems(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state_dict` from loading strictly into a model whose state dict is `own`: one entry
    per kind of mismatch (missing, unexpected, mis-shaped keys), empty if it fits."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    ]
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{title} ({len(keys)}): {', '.join(keys[:SHOWN_KEYS])}{more}")
    return problems


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch is one error listing the missing, unexpected and mis-shaped keys."""
    problems = fit_problems(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{source} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


def build_to_fit(
    build: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], source: str
) -> nn.Module:
    """`build()` a model for the weights of `source`, with what the file declares about its architecture.

    The model is first built on the meta device, where nothing is allocated, and its parameter names
    and shapes are compared with the file's tensors: a file whose stored config or arguments declare a
    larger (or any other) model than its tensors hold is an error before a byte is allocated.
    """
    with torch.device("meta"):
        problems = fit_problems(build().state_dict(), state_dict)
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model it declares (its stored config or arguments): {'; '.join(problems)}"
        )
    model = build()
    load_weights(model, state_dict, source)
    return model


def module_names(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    """Child module names under `prefix.` in first-seen order (the official ModuleDict order), e.g. the
    modalities of "input_adapters" or "output_adapters"."""
    return list(dict.fromkeys(key.split(".")[1] for key in state_dict if key.startswith(prefix + ".")))


def _count_blocks(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return max(indices) + 1 if indices else 0


def config_from_official(
    state_dict: Mapping[str, torch.Tensor], args: Mapping | None = None, **overrides
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
    found = {
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


def official_architecture(checkpoint: Mapping, source: str, **overrides) -> MultiMAEConfig:
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


def load_official_checkpoint(path: str | Path, **overrides) -> MultiMAE:
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
