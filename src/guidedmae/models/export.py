"""Weights that travel: the encoder as a timm ViT, the whole MultiMAE as safetensors or a
save_pretrained-style folder, and back.

    timm_weights = encoder_to_timm(model.state_dict())               # {cls_token, pos_embed, blocks.0...}
    save_pretrained(model, "out/multimae")                           # config.json + model.safetensors
    model = MultiMAE.from_pretrained("out/multimae")

The timm mapping is MultiMAE's own converter's: the global token -> `cls_token`; the rgb position table
[1, D, h, w] -> `pos_embed` [1, 1 + h * w, D] with a zero slot for the class token (MultiMAE adds no
position to its global token); the rgb patch projection -> `patch_embed.proj`; `encoder.<i>.*` ->
`blocks.<i>.*` (the same names inside a block). MultiMAE's encoder ends without a norm while timm's ends
with `norm`: it is exported with weight 1 and bias 0, so timm's features are ours layer-normalized (a
MultiMAE fine-tuning head normalizes too). Token order differs (timm's class token comes first,
MultiMAE's global token last); attention does not care, so the tokens are the same, reordered.
"""

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from guidedmae.files import atomic_write, check_output, read_json
from guidedmae.models.checkpoints import (
    CheckpointError,
    build_to_fit,
    official_architecture,
    read_checkpoint,
    state_dict_of,
)
from guidedmae.models.multimae import MultiMAE, MultiMAEConfig

__all__ = [
    "CONFIG_JSON",
    "add_parser",
    "WEIGHTS_FILE",
    "encoder_to_timm",
    "is_timm_vit",
    "load_pretrained_folder",
    "save_pretrained",
    "save_safetensors",
    "timm_to_encoder",
]

CONFIG_JSON, WEIGHTS_FILE = "config.json", "model.safetensors"
MODEL_TYPE = "multimae"  # config.json's model_type, as transformers' folders name their architecture


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


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Tensors as a .safetensors file, atomically (contiguous copies: safetensors stores no views)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    return atomic_write(path, lambda file: file.write(save(tensors)))


def save_pretrained(model: MultiMAE, folder: str | Path) -> Path:
    """A save_pretrained-style folder: config.json (the architecture) and model.safetensors."""
    folder = Path(folder)
    config = json.dumps({"model_type": MODEL_TYPE, **asdict(model.config)}, indent=2)
    atomic_write(folder / CONFIG_JSON, lambda file: file.write(config.encode()))
    save_safetensors(model.state_dict(), folder / WEIGHTS_FILE)
    return folder


def load_pretrained_folder(folder: str | Path) -> MultiMAE:
    """The MultiMAE a save_pretrained folder holds, loaded strictly (MultiMAE.from_pretrained)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_JSON, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a save_pretrained folder: no {path.name}")
    try:
        saved = read_json(config_path)
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    if not isinstance(saved, dict) or saved.get("model_type") != MODEL_TYPE:
        found = f"model_type={saved.get('model_type')!r}" if isinstance(saved, dict) else "not a JSON object"
        raise CheckpointError(
            f"{config_path}: {found}; expected a JSON object with model_type={MODEL_TYPE!r} (a folder guidedmae "
            "export --to hf wrote)"
        )
    unknown = sorted(set(saved) - {f.name for f in fields(MultiMAEConfig)} - {"model_type"})
    if unknown:
        raise CheckpointError(f"{config_path}: unknown keys {unknown}; expected MultiMAEConfig fields")
    config = _architecture_from(saved, str(config_path))
    try:
        weights = load_file(str(weights_path))
    except Exception as error:  # safetensors reports a damaged file in several ways
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from error
    return build_to_fit(lambda: MultiMAE(config), weights, str(weights_path))


def _architecture_from(values: Mapping, source: str) -> MultiMAEConfig:
    """A MultiMAEConfig from stored values (JSON / YAML lists as tuples; other keys, e.g. init, left out)."""
    names = {f.name for f in fields(MultiMAEConfig)}
    kept = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in values.items()
        if key in names
    }
    try:
        config = MultiMAEConfig(**kept)
        for name in (*config.inputs, *config.outputs):  # declared in the stored modalities, or built in
            config.modality(name)
        return config
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{source}: the stored model config does not describe a MultiMAE ({error})"
        ) from error


def _multimae_of(path: str) -> MultiMAE:
    """The MultiMAE (or, from a fine-tuning checkpoint, its encoder) a checkpoint holds."""
    checkpoint = read_checkpoint(path)
    weights = state_dict_of(checkpoint, path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict):  # an official MultiMAE file: its tensors and arguments say what it is
        config = official_architecture(checkpoint, path)
    else:
        # Declared modalities live beside the model section (the data reads them too).
        model_section = {**saved.get("model", {}), "modalities": saved.get("modalities", {})}
        config = _architecture_from(model_section, path)
        if "head" in saved:  # a fine-tuning checkpoint: the encoder, without the head
            weights = {
                key.removeprefix("encoder."): value
                for key, value in weights.items()
                if key.startswith("encoder.")
            }
            config = MultiMAEConfig(**{**asdict(config), "outputs": ()})
    return build_to_fit(lambda: MultiMAE(config), weights, path)


def _check_empty_folder(folder: Path) -> None:
    """A save_pretrained folder is written into a new or empty folder only: files already there (another
    model, a run) would be replaced or left beside the new ones."""
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"--out {folder} is a folder that already holds files; expected a new or empty folder for --to hf"
        )


def _run_export(args: argparse.Namespace) -> int:
    check_output(args.out, [args.checkpoint])
    if args.to == "hf":
        _check_empty_folder(Path(args.out))
    model = _multimae_of(args.checkpoint)
    if args.to == "timm":
        written = save_safetensors(encoder_to_timm(model.state_dict()), args.out)
    elif args.to == "safetensors":
        written = save_safetensors(model.state_dict(), args.out)
    else:
        written = save_pretrained(model, args.out)
    print(f"wrote {written} ({args.to}: {'the encoder' if args.to == 'timm' else 'the whole MultiMAE'})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `export`."""
    parser = subparsers.add_parser(
        "export",
        help="weights for other tools: the encoder as a timm ViT, or the MultiMAE as safetensors / a folder",
        description="timm: the encoder with timm's vision_transformer names (safetensors); safetensors: "
        "the MultiMAE state dict; hf: a save_pretrained folder (config.json + model.safetensors) that "
        "MultiMAE.from_pretrained loads. A fine-tuning checkpoint exports its encoder.",
    )
    parser.add_argument("checkpoint", help="a guidedmae checkpoint or an official MultiMAE .pth")
    parser.add_argument("--to", choices=("timm", "safetensors", "hf"), required=True)
    parser.add_argument(
        "--out", required=True, help="the .safetensors file (timm, safetensors) or a new or empty folder (hf)"
    )
    parser.set_defaults(func=_run_export)
