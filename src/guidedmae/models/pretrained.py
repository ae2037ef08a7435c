"""Starting a MultiMAE from saved weights: ours or an official MultiMAE file, for every job.

    report = load_pretrained(model, "multimae-b_98_rgb+-depth-semseg_1600e.pth")
    print(report.describe())

Continued pretraining (every decoder wanted) and fine-tuning (an encoder without decoders, maybe a
subset of the inputs, maybe another image size) take the same path:
- our checkpoints store the model config: its encoder-shaping fields must equal the model's (named);
- every input of the model needs its adapter in the file; adapters of other modalities are dropped;
- a timm or MAE ViT state dict (cls_token, pos_embed, blocks.<i>) is mapped to MultiMAE names (see
  guidedmae.models.export): its encoder and rgb patch projection load, the other input adapters and the
  decoders start from their initialization;
- position tables are resized to the model's token grid, as the official fine-tuning scripts do;
- the global tokens and the encoder blocks load strictly (one error lists every mismatching key);
- decoders: those in both load, the model's others keep their random initialization, the file's
  others are dropped.
Nothing is silent: the report lists what was loaded, started fresh and dropped.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from guidedmae.infra.checkpoints import (
    CheckpointError,
    load_weights,
    module_names,
    read_checkpoint,
    state_dict_of,
)
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.export import is_timm_vit, timm_to_encoder
from guidedmae.models.multimae import MultiMAE

__all__ = ["SHAPING_FIELDS", "InitReport", "load_pretrained", "resized_position_table"]

# Architecture fields that must agree between a checkpoint and the model it initializes (image_size may
# differ: position tables are resized; inputs may be a subset; drop_path and decoders are free).
SHAPING_FIELDS = ("dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "patch_size", "num_global_tokens")


@dataclass
class InitReport:
    """What `load_pretrained` did."""

    source: str
    inputs: list[str]  # input adapters loaded
    unused_inputs: list[str]  # input adapters in the file, not in the model: dropped
    fresh_inputs: list[str]  # input adapters the file lacks (a timm / MAE ViT: rgb only): random init
    loaded_decoders: list[str]
    fresh_decoders: list[str]  # in the model, not in the file: random initialization
    ignored_decoders: list[str]  # in the file, not in the model: dropped

    def describe(self) -> str:
        lines = [
            f"initialized from {self.source}: input adapters {', '.join(self.inputs)}, global token(s), encoder"
        ]
        notes = (
            ("input adapters not in the file, starting from random init", self.fresh_inputs),
            ("input adapters not in the model, dropped", self.unused_inputs),
            ("decoders loaded", self.loaded_decoders),
            ("decoders not in the file, starting from random init", self.fresh_decoders),
            ("decoders not in the model, dropped", self.ignored_decoders),
        )
        lines += [f"  {title}: {', '.join(names)}" for title, names in notes if names]
        return "\n".join(lines)


def resized_position_table(table: torch.Tensor, grid: tuple[int, int], mode: str) -> torch.Tensor:
    """A [1, D, h, w] position table resized to `grid` (bicubic for image patches, bilinear for class
    maps), as the official fine-tuning scripts do when the input size changes."""
    if tuple(table.shape[-2:]) == tuple(grid):
        return table
    return F.interpolate(table.float(), size=grid, mode=mode, align_corners=False).to(table.dtype)


def _check_architecture(saved: Mapping, config: MultiMAEConfig, source: str) -> None:
    """The saved model config of one of our checkpoints must shape the encoder as `config` does."""
    differences = [
        f"model.{name}: checkpoint {saved[name]!r}, config {getattr(config, name)!r}"
        for name in SHAPING_FIELDS
        if name in saved and saved[name] != getattr(config, name)
    ]
    if differences:
        raise CheckpointError(f"{source} was trained with another encoder: {'; '.join(differences)}")


def load_pretrained(model: MultiMAE, path: str | Path) -> InitReport:
    """Load the weights of `path` into `model` as the module docstring says; returns what was done.

    Raises CheckpointError naming the file and every mismatch.
    """
    source = str(path)
    checkpoint = read_checkpoint(path)
    weights = state_dict_of(checkpoint, source)
    saved_config = checkpoint.get("config")
    if isinstance(saved_config, Mapping) and isinstance(saved_config.get("model"), Mapping):
        _check_architecture(saved_config["model"], model.config, source)
    from_vit = is_timm_vit(weights)  # MAE's or timm's ViT: the rgb encoder of the MAE-B baseline rows
    if from_vit:
        weights = timm_to_encoder(weights)
    file_inputs, file_decoders = (
        module_names(weights, "input_adapters"),
        module_names(weights, "output_adapters"),
    )
    inputs, decoders = list(model.config.inputs), list(model.config.outputs)
    missing_inputs = [name for name in inputs if name not in file_inputs]
    if missing_inputs and not (from_vit and "rgb" in inputs):
        raise CheckpointError(
            f"{source} has no input adapter for {missing_inputs} (it has {file_inputs}); "
            "choose model.inputs among those, or start that modality from scratch with model.init=null"
        )
    own = model.state_dict()
    kept: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        kind, _, rest = key.partition(".")
        name = rest.split(".", 1)[0]
        if (kind == "input_adapters" and name not in inputs) or (
            kind == "output_adapters" and name not in decoders
        ):
            continue
        if kind == "input_adapters" and key.endswith(".pos_emb"):
            adapter = model.input_adapter(name)
            rows, columns = adapter.pos_emb.shape[-2:]
            value = resized_position_table(value, (rows, columns), adapter.resize_mode)
        kept[key] = value
    fresh = [name for name in decoders if name not in file_decoders]
    # What the file lacks keeps its initialization: decoders, and for a ViT the other input adapters and
    # the rgb position table (MultiMAE's is fixed sin-cos; a ViT's may be learnt for another layout).
    fresh_prefixes = tuple(f"output_adapters.{name}." for name in fresh)
    fresh_prefixes += tuple(f"input_adapters.{name}." for name in missing_inputs)
    own_keys = [key for key in own if key.startswith(fresh_prefixes)]
    own_keys += ["input_adapters.rgb.pos_emb"] if from_vit else []
    kept.update({key: own[key] for key in own_keys})
    load_weights(model, kept, source)
    return InitReport(
        source=source,
        inputs=inputs,
        unused_inputs=[name for name in file_inputs if name not in inputs],
        fresh_inputs=missing_inputs,
        loaded_decoders=[name for name in decoders if name in file_decoders],
        fresh_decoders=fresh,
        ignored_decoders=[name for name in file_decoders if name not in decoders],
    )
