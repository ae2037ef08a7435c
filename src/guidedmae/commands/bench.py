"""`guidedmae bench`: time a full training step of each masking strategy, side by side (see
guidedmae.engine.bench for what is timed and how).

    guidedmae bench --preset base --batch-size 8 --precision fp32 --rounds 3 [--device cuda]
    guidedmae bench --config configs/pretrain/demo.yaml        # the model of a pretraining config
    guidedmae bench --checkpoint runs/demo/checkpoint-last.pt  # a trained model (its attention means something)
"""

import argparse
import os
import sys

import torch

from guidedmae.config import PretrainConfig, load_config
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES
from guidedmae.engine.bench import (
    format_table,
    mask_agreement,
    strategy_variants,
    synthetic_batch,
    time_strategies,
)
from guidedmae.engine.from_checkpoint import load_model
from guidedmae.infra.distributed import resolve_device
from guidedmae.infra.fields import check_seed
from guidedmae.infra.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
from guidedmae.masking import MaskingConfig
from guidedmae.models.architecture import PRESETS, preset_config
from guidedmae.models.multimae import MultiMAE

__all__ = ["add_parser"]


def _memory_bytes() -> int:
    """This machine's physical memory, where the synthetic batches are rendered."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_batch_size(batch_size: int, image_size: int) -> None:
    """Refuse a batch whose inputs (the timed batch and its earlier views, rendered before anything is
    timed) would not fit in memory: rendering it would take minutes, then fail."""
    sample = synthetic_batch(1, image_size)
    needed = 2 * batch_size * sum(value.numel() * value.element_size() for value in sample.values())
    memory = _memory_bytes()
    if needed > memory:
        raise ValueError(
            f"--batch-size {batch_size}: its inputs at {image_size}px would take {needed / 2**30:.1f} GiB, more "
            f"than this machine's {memory / 2**30:.1f} GiB of memory; choose a smaller --batch-size"
        )


def _check_options(args: argparse.Namespace) -> None:
    """The options that do not depend on the model."""
    if args.checkpoint and args.config:
        raise ValueError("--checkpoint brings its own config: give --checkpoint or --config, not both")
    if (args.checkpoint or args.config) and args.num_visible is not None:
        raise ValueError(
            "--num-visible sets the budget of a --preset model; --config and --checkpoint bring their own "
            "(masking.num_visible)"
        )
    if args.rounds < 1 or args.warmup < 0 or args.batch_size < 1:
        raise ValueError("--rounds and --batch-size must be >= 1 and --warmup >= 0")
    check_seed(args.seed, "--seed")
    if args.semseg_classes < NUM_SEMSEG_CLASSES:
        raise ValueError(
            f"--semseg-classes {args.semseg_classes}; expected at least {NUM_SEMSEG_CLASSES}, the classes of "
            "the synthetic scenes the steps are timed on"
        )


def bench_model(args: argparse.Namespace) -> tuple[MultiMAE, MaskingConfig, str]:
    """The model to time (fresh, or trained: --checkpoint), its base masking settings and a name, once the
    options are checked (a batch that fits in memory, a visible count the model has)."""
    _check_options(args)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        model, config, _ = load_model(args.checkpoint)
        name, masking = str(args.checkpoint), config.masking
    elif args.config:
        config = load_config(PretrainConfig, args.config)
        model, masking = MultiMAE(config.model.architecture(config.modalities)), config.masking
        name = str(args.config)
    else:
        architecture = preset_config(
            args.preset,
            image_size=args.image_size,
            patch_size=args.patch_size,
            semseg_classes=args.semseg_classes,
        )
        num_tokens = len(architecture.inputs) * (args.image_size // args.patch_size) ** 2
        if args.num_visible is not None and not 1 <= args.num_visible <= num_tokens:
            raise ValueError(f"--num-visible {args.num_visible}; expected 1..{num_tokens} (all input tokens)")
        # MultiMAE-B's encoder sees 98 of 588 tokens: 1/6 of them.
        masking = MaskingConfig(num_visible=args.num_visible or num_tokens // 6)
        model, name = MultiMAE(architecture), args.preset
    _check_batch_size(args.batch_size, model.config.image_size)
    return model, masking, name


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device, key="--device")
    keep_freed_memory(TRAINING_TRIM_THRESHOLD)  # steps as a training process runs them
    model, masking, name = bench_model(args)
    model = model.to(device).train()
    architecture = model.config
    variants = strategy_variants(masking, architecture)
    chosen = args.strategies or list(variants)
    unknown = [strategy for strategy in chosen if strategy not in variants]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {list(variants)}")
    strategies = {strategy: variants[strategy] for strategy in chosen}
    num_tokens = len(architecture.inputs) * (architecture.image_size // architecture.patch_size) ** 2
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    print(  # before the batches are rendered, which takes a while for large ones
        f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{architecture.image_size}px, {num_tokens} tokens ({masking.num_visible} visible), "
        f"batch {args.batch_size}, {args.precision}, {device}{threads}; "
        f"{args.warmup} warm-up + {args.rounds} timed rounds, strategies alternating\n",
        flush=True,
    )
    batch, earlier = (
        {
            key: value.to(device)
            for key, value in synthetic_batch(
                args.batch_size, architecture.image_size, args.seed, epoch
            ).items()
        }
        for epoch in (0, 1)
    )
    # Masks first: timing trains the model (and fills memories with the timed batch's own views).
    agreement = mask_agreement(model, strategies, batch, earlier, args.seed)
    results = time_strategies(
        model, batch, strategies, args.rounds, args.warmup, args.precision, args.seed, sys.stderr
    )
    print(format_table(results, agreement))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="time the model and budget of this pretraining config instead")
    parser.add_argument(
        "--checkpoint",
        help="time the trained model (and budget) of this pretraining checkpoint or official file",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="base", help="encoder size (default base: MultiMAE-B)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--patch-size", type=int, default=16, help="patch side in pixels (default 16)")
    parser.add_argument(
        "--semseg-classes",
        type=int,
        default=133,
        help=f"semseg classes of the model (default 133, MultiMAE's; at least the scenes' {NUM_SEMSEG_CLASSES})",
    )
    parser.add_argument("--num-visible", type=int, help="visible tokens (default: 1/6 of all, 98 of 588)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="samples per step (default 8; its inputs must fit in the machine's memory)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of every strategy (default 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed rounds first (default 1; CPU memory is read in the last)",
    )
    parser.add_argument("--strategies", nargs="+", help="a subset of the table's rows (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="model init, scenes and masks (default 0)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `bench` under the main command's sub-commands."""
    parser = subparsers.add_parser(
        "bench", help="time a full training step of each masking strategy, side by side"
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)
