"""A save_pretrained-style folder: config.json (the architecture, with model_type) and model.safetensors.

write_pretrained_folder("out/multimae", model.config, model.state_dict())
config, weights, source = read_pretrained_folder("out/multimae")   # MultiMAE.from_pretrained builds on it
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.infra.files import atomic_write, read_json
from guidedmae.models.architecture import MultiMAEConfig, config_from_values

__all__ = [
    "CONFIG_JSON",
    "WEIGHTS_FILE",
    "read_pretrained_folder",
    "save_safetensors",
    "write_pretrained_folder",
]

CONFIG_JSON, WEIGHTS_FILE = "config.json", "model.safetensors"
MODEL_TYPE = "multimae"  # config.json's model_type, as transformers' folders name their architecture


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Tensors as a .safetensors file, atomically (contiguous copies: safetensors stores no views)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    return atomic_write(path, lambda file: file.write(save(tensors)))


def write_pretrained_folder(folder: str | Path, config: MultiMAEConfig, state_dict: Mapping) -> Path:
    """config.json (the architecture) and model.safetensors in `folder`, atomically, file by file."""
    folder = Path(folder)
    values = json.dumps({"model_type": MODEL_TYPE, **asdict(config)}, indent=2)
    atomic_write(folder / CONFIG_JSON, lambda file: file.write(values.encode()))
    save_safetensors(state_dict, folder / WEIGHTS_FILE)
    return folder


def read_pretrained_folder(folder: str | Path) -> tuple[MultiMAEConfig, dict[str, torch.Tensor], str]:
    """The architecture and weights a save_pretrained folder holds, and the weights file's name (for
    messages); MultiMAE.from_pretrained builds the model and loads them strictly."""
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
    config = config_from_values(saved, str(config_path))
    try:
        weights = load_file(str(weights_path))
    except Exception as error:  # safetensors reports a damaged file in several ways
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from error
    return config, weights, str(weights_path)
