"""`guidedmae visualize CHECKPOINT`: inputs, attention maps, masks and reconstructions of a model, as a PNG.

    guidedmae visualize runs/demo/checkpoint-last.pt                    # the run's own masking strategy
    guidedmae visualize runs/demo/checkpoint-last.pt --strategy attention --select low --noise 0.5
    guidedmae visualize multimae-b_98_rgb+-depth-semseg_1600e.pth --strategy attention --out b.png

CHECKPOINT is a guidedmae checkpoint (its stored config gives the model, the data and the masking) or an
official MultiMAE .pth (shown on synthetic scenes, with MultiMAE-B's budget of 1/6 of the tokens visible).
The flags change the masking; the batch and the masking seed are those of the run's own pictures, so a
picture made here sits beside the training pictures. Computed in fp32.
"""

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from guidedmae.config import ConfigError, DataConfig, ModelSettings, PretrainConfig
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.distributed import resolve_device
from guidedmae.engine.pretrain import build_dataset, picture_batch, save_reconstruction
from guidedmae.engine.step import MaskedAutoencoderStep
from guidedmae.masking.strategy import STRATEGIES, MaskingConfig
from guidedmae.models.checkpoints import config_from_official, load_weights, read_checkpoint, state_dict_of
from guidedmae.models.multimae import MultiMAE, MultiMAEConfig

# Masking settings the command line can change: flag name -> MaskingConfig field.
MASKING_FLAGS = ("strategy", "score", "select", "noise", "heads", "hint", "num_visible")


def stored_config(checkpoint: dict, source: str) -> PretrainConfig:
    """The pretraining config a guidedmae checkpoint was written with."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PretrainConfig), checkpoint["config"])
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError) as error:
        raise ConfigError(
            f"{source}: its stored config does not fit this version of guidedmae ({error})"
        ) from error


def official_config(architecture: MultiMAEConfig) -> PretrainConfig:
    """Settings to picture an official model: synthetic scenes at its size, MultiMAE's visible budget."""
    num_tokens = len(architecture.inputs) * (architecture.image_size // architecture.patch_size) ** 2
    return PretrainConfig(
        model=ModelSettings(**{f.name: getattr(architecture, f.name) for f in fields(MultiMAEConfig)}),
        masking=MaskingConfig(num_visible=num_tokens // 6),
        data=DataConfig(augment=AugmentConfig(size=architecture.image_size)),
    )


def load_model_and_config(path: str | Path) -> tuple[MultiMAE, PretrainConfig]:
    """A MultiMAE with the checkpoint's weights, and the config to picture it with."""
    checkpoint = read_checkpoint(path)
    weights = state_dict_of(checkpoint, str(path))
    if isinstance(checkpoint.get("config"), dict):
        config = stored_config(checkpoint, str(path))
    else:
        args = checkpoint.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        config = official_config(config_from_official(weights, args))
    model = MultiMAE(config.model.architecture())
    load_weights(model, weights, str(path))
    return model, config


def masking_name(masking: MaskingConfig) -> str:
    """A file-name description of a masking: random, attention-high, attention-low-received-noise0.5, ..."""
    if masking.strategy != "attention":
        return masking.strategy
    parts = ["attention", masking.select] + (["received"] if masking.score == "received" else [])
    parts += [
        f"{key}{getattr(masking, key):g}" for key in ("noise", "heads", "hint") if getattr(masking, key)
    ]
    return "-".join(parts)


def run(args: argparse.Namespace) -> int:
    try:
        model, config = load_model_and_config(args.checkpoint)
        changes = {key: getattr(args, key) for key in MASKING_FLAGS if getattr(args, key) is not None}
        masking = replace(config.masking, **changes)
        device = resolve_device(args.device)
        config = replace(
            config,
            masking=masking,
            log=replace(config.log, picture_samples=args.samples),
            run=replace(config.run, precision="fp32"),
        )
        step = MaskedAutoencoderStep(model.to(device), masking, config.loss)
        batch = picture_batch(build_dataset(config), args.samples)
        out = Path(args.out or Path(args.checkpoint).parent / f"visualize-{masking_name(masking)}.png")
        save_reconstruction(step, batch, config, out)
    except (ValueError, FileNotFoundError) as error:
        print(f"guidedmae visualize: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({masking_name(masking)}, {len(batch['rgb'])} samples)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `visualize` under the main command's sub-commands."""
    parser = subparsers.add_parser(
        "visualize", help="PNG grid of inputs, attention maps, masks and reconstructions of a checkpoint"
    )
    parser.add_argument("checkpoint", help="a guidedmae checkpoint or an official MultiMAE .pth")
    parser.add_argument("--strategy", choices=STRATEGIES, help="masking strategy (default: the run's own)")
    parser.add_argument("--score", choices=("global", "received"), help="attention score (attention only)")
    parser.add_argument(
        "--select", choices=("high", "low"), help="mask the most or the least attended tokens"
    )
    parser.add_argument("--noise", type=float, help="stochastic masking: s + noise * std(s) * eps, in [0, 1]")
    parser.add_argument("--heads", type=int, help="average a random subset of this many heads (0 = all)")
    parser.add_argument("--hint", type=float, help="fraction of the masked count revealed from the top 10%%")
    parser.add_argument("--num-visible", type=int, help="tokens the encoder sees, over all modalities")
    parser.add_argument("--samples", type=int, default=4, help="samples in the picture (default 4)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", help="PNG to write (default: visualize-<masking>.png beside the checkpoint)")
    parser.set_defaults(func=run)
