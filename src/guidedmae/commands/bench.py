"""`guidedmae bench`: time a full training step of each masking strategy, side by side (see
guidedmae.engine.bench for what is timed and how).

    guidedmae bench --preset base --batch-size 8 --precision fp32 --rounds 3 [--device cuda]
    guidedmae bench --config configs/pretrain/demo.yaml        # the model of a pretraining config
    guidedmae bench --checkpoint runs/demo/checkpoint-last.pt  # a trained model (its attention means something)
"""

import argparse
import sys

import torch

from guidedmae.engine.bench import format_table, mask_agreement, time_strategies
from guidedmae.engine.bench_setup import BenchSettings, bench_model, synthetic_batch
from guidedmae.infra.distributed import resolve_device
from guidedmae.infra.machine import describe_machine
from guidedmae.infra.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
from guidedmae.infra.options import add_options, settings_from
from guidedmae.masking import strategy_variants

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    settings = settings_from(args, BenchSettings)
    device = resolve_device(settings.device, key="--device")
    keep_freed_memory(TRAINING_TRIM_THRESHOLD)  # steps as a training process runs them
    model, masking, name = bench_model(settings)
    model = model.to(device).train()
    architecture = model.config
    variants = strategy_variants(masking, architecture)
    chosen = args.strategies or list(variants)
    unknown = [strategy for strategy in chosen if strategy not in variants]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {list(variants)}")
    strategies = {strategy: variants[strategy] for strategy in chosen}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_machine()
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    print(  # before the batches are rendered, which takes a while for large ones
        f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{architecture.image_size}px, {architecture.num_input_tokens} tokens ({masking.num_visible} visible), "
        f"batch {settings.batch_size}, {settings.precision}, {device}{threads}; {where}; "
        f"{settings.warmup} warm-up + {settings.rounds} timed rounds, strategies alternating\n",
        flush=True,
    )
    batch, earlier = (
        {
            key: value.to(device)
            for key, value in synthetic_batch(
                settings.batch_size, architecture.image_size, settings.seed, epoch
            ).items()
        }
        for epoch in (0, 1)
    )
    # Masks first: timing trains the model (and fills memories with the timed batch's own views).
    agreement = mask_agreement(model, strategies, batch, earlier, settings.seed)
    results = time_strategies(
        model,
        batch,
        strategies,
        settings.rounds,
        settings.warmup,
        settings.precision,
        settings.seed,
        sys.stderr,
    )
    print(format_table(results, agreement))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `bench` under the main command's sub-commands."""
    parser = subparsers.add_parser(
        "bench", help="time a full training step of each masking strategy, side by side"
    )
    add_options(parser, BenchSettings)
    parser.add_argument("--strategies", nargs="+", help="a subset of the table's rows (default: all)")
    parser.set_defaults(func=_run)
