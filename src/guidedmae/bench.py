"""`guidedmae bench`: what each masking strategy costs, as full training steps timed side by side, and how
far its masks are from exact attention guidance.

    guidedmae bench --preset base --batch-size 8 --precision fp32 --rounds 3 [--device cuda]
    guidedmae bench --config configs/pretrain/demo.yaml        # the model of a pretraining config
    guidedmae bench --checkpoint runs/demo/checkpoint-last.pt  # a trained model (its attention means something)

One model, one batch of synthetic scenes, one AdamW optimizer; every strategy runs the whole step
(tokenize, masks, encoder on the visible tokens, decoders, losses, backward, optimizer step). After a
warm-up the strategies alternate round-robin, so that drifts of the machine (clock, caches, other load)
hit all of them alike. The table gives the median and the fastest step time, their ratios to random
masking, and the peak memory of a step: the most memory its tensors held at once, weights, gradients and
optimizer state included, from CUDA's allocator statistics on a GPU and from the profiler's allocation
events on a CPU.

Agreement with exact guidance, per input modality: |V ∩ V_exact| / |V_exact|, V the tokens a strategy
leaves visible and V_exact those attention-high (the method, every token scored by the exact pass) leaves
visible, on the same batch with the same visible counts; random masking gives about the visible fraction.
Strategies that remember samples are first shown the same samples under other crops (the next epoch's
augmentation), so their agreement includes the warp from one view to the next; on an untrained model the
attention maps, and the agreements, mean little. Learned strategies are measured as built: the scout's
agreement here is an untaught one (benchmarks/cheap_guidance.py teaches it first).
"""

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TextIO

import torch
from torch import nn
from torch.utils.data import default_collate

from guidedmae.config import PretrainConfig, load_config
from guidedmae.data.datasets import SyntheticScenes
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.distributed import resolve_device
from guidedmae.engine.optim import OptimConfig, build_optimizer, param_groups, set_lr
from guidedmae.engine.precision import autocast
from guidedmae.engine.schedule import START
from guidedmae.engine.step import MaskedAutoencoderStep
from guidedmae.losses import LossConfig
from guidedmae.masking import STRATEGIES, MaskingConfig, build_strategy
from guidedmae.masking.strategies import AttentionOptions
from guidedmae.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
from guidedmae.models.multimae import PRESETS, MultiMAE, MultiMAEConfig, preset_config
from guidedmae.visualize import load_model

MODALITIES = ("rgb", "depth", "semseg")
BASELINE = "random"  # the strategy every row is compared with


def strategy_variants(base: MaskingConfig, model: MultiMAEConfig) -> dict[str, MaskingConfig]:
    """Every registered strategy's variants (random masking, the baseline, first), by table name, each
    with the budget (visible tokens, Dirichlet alphas) of `base` and its options over their defaults."""
    variants = {}
    for name in sorted(STRATEGIES, key=lambda name: name != BASELINE):
        cls = STRATEGIES[name]
        for row, options in cls.variants(model).items():
            sections = {name: replace(cls.options_class(), **options)} if hasattr(base, name) else {}
            variants[row] = replace(base, strategy=name, **sections)
    return variants


@dataclass
class Measurement:
    seconds: list[float]
    peak_bytes: list[int | None]  # None where this torch build cannot measure it

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def synthetic_batch(
    batch_size: int, image_size: int, seed: int = 0, epoch: int = 0
) -> dict[str, torch.Tensor]:
    """The first `batch_size` synthetic scenes, augmented as for pretraining in `epoch`: {modality:
    [B, ...]}, and the samples' "index" and "view" (what strategies that remember samples read)."""
    scenes = SyntheticScenes(batch_size, image_size, seed, MODALITIES, AugmentConfig(image_size))
    scenes.set_epoch(epoch)
    return default_collate([scenes[index] for index in range(batch_size)])


@torch.no_grad()
def mask_agreement(
    model: MultiMAE,
    strategies: dict[str, MaskingConfig],
    batch: dict[str, torch.Tensor],
    earlier: dict[str, torch.Tensor],
    seed: int = 0,
    earlier_model: MultiMAE | None = None,
    states: Mapping[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """{strategy: {modality: |V ∩ V_exact| / |V_exact|}} on `batch`, V_exact from attention-high with the
    same visible counts (the budget draws first from the same seed). Each strategy is first trained on
    `earlier` (the same samples under other crops), so that one that remembers samples has seen them,
    by `earlier_model` if given (an earlier checkpoint of the run: what a memory refreshed then holds).
    states: trained weights of some rows' strategies (a taught scout), loaded before that."""
    exact_config = replace(
        next(iter(strategies.values())), strategy="attention", attention=AttentionOptions()
    )
    tokens = model.tokenize({name: batch[name] for name in model.config.inputs})

    def visible(masking: MaskingConfig, prime: bool, state: dict | None = None) -> dict[str, torch.Tensor]:
        strategy = build_strategy(masking, model.config, len(batch["rgb"])).to(batch["rgb"].device)
        if state is not None:
            strategy.load_state_dict(state)
        if prime:
            primer = MaskedAutoencoderStep(earlier_model or model, strategy, LossConfig()).train()
            primer(earlier, torch.Generator().manual_seed(seed))
        choice = strategy(
            model, tokens, torch.Generator().manual_seed(seed), START, batch["index"], batch["view"]
        )
        return {name: ~mask for name, mask in choice.selection.masks.items()}

    reference = visible(exact_config, prime=False)
    agreement = {}
    for row, masking in strategies.items():
        kept = visible(masking, prime=True, state=(states or {}).get(row))
        agreement[row] = {
            name: ((kept[name] & reference[name]).sum() / reference[name].sum().clamp_min(1)).item()
            for name in reference
        }
    return agreement


def _cuda_peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    """The most CUDA memory allocated at once while `run` runs (everything held included)."""
    torch.cuda.reset_peak_memory_stats(device)
    run()
    return torch.cuda.max_memory_allocated(device)


def _held_bytes(step: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> int:
    """Memory of what a training step starts from: weights and buffers (the model's and the strategy's),
    gradients, optimizer state and the batch."""
    tensors = [*step.parameters(), *step.buffers(), *batch.values()]
    tensors += [p.grad for p in step.parameters() if p.grad is not None]
    tensors += [
        t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors)


def _cpu_peak_bytes(run: Callable[[], None], held: int) -> int | None:
    """The most CPU memory allocated at once while `run` runs: `held` bytes at its start plus the peak of
    the profiler's allocation events (None where this torch build does not expose them)."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as profiler:
        run()
    try:
        events = profiler.profiler.kineto_results.events()
        changes = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    except AttributeError:
        return None
    live = peak = held
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak


def train_step(
    step: MaskedAutoencoderStep,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    precision: str,
) -> None:
    """One optimizer step of masked reconstruction, as the pretraining loop runs it."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(batch["rgb"].device, precision):
        output = step(batch, generator)
    output.losses["total"].backward()
    optimizer.step()


def cpu_name() -> str:
    """The CPU's model name (what every throughput figure must say it comes from)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_strategies(
    model: MultiMAE,
    batch: dict[str, torch.Tensor],
    strategies: dict[str, MaskingConfig],
    rounds: int,
    warmup: int,
    precision: str,
    seed: int = 0,
    progress: TextIO | None = None,
) -> dict[str, Measurement]:
    """Step times and peak memory of every strategy over `rounds` rounds, strategies alternating.

    On CUDA the peak memory is read in every timed step; on a CPU it is read from the profiler in the
    last warm-up round (profiling slows a step down), so it needs warmup >= 1. Each round's times go to
    `progress` (e.g. sys.stderr) as they come, if given.
    """
    device = batch["rgb"].device
    steps = {
        name: MaskedAutoencoderStep(
            model, build_strategy(masking, model.config, len(batch["rgb"])), LossConfig()
        )
        for name, masking in strategies.items()
    }
    for step in steps.values():
        step.strategy.to(device)
    # One AdamW over the model and every strategy's own parameters (a loss predictor), as a run has.
    groups = param_groups(model, OptimConfig().weight_decay)
    groups += [
        group for step in steps.values() for group in param_groups(step.strategy, 0.0) if group["params"]
    ]
    optimizer = build_optimizer(model, OptimConfig(), groups)
    # A step at lr 0 on zero gradients allocates the optimizer state without changing the weights, so
    # that no strategy's first step pays for it.
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    set_lr(optimizer, 1e-4)
    generator = torch.Generator().manual_seed(seed)
    results = {name: Measurement([], []) for name in strategies}
    for round_index in range(warmup + rounds):
        times = []
        for name, step in steps.items():
            run = partial(train_step, step, optimizer, batch, generator, precision)
            if round_index < warmup:
                if round_index == warmup - 1 and device.type == "cpu":
                    # The profiler misses frees of blocks allocated before it started: drop the gradients first.
                    optimizer.zero_grad(set_to_none=True)
                    results[name].peak_bytes.append(_cpu_peak_bytes(run, _held_bytes(step, optimizer, batch)))
                else:
                    run()
                continue
            synchronize(device)
            start = time.perf_counter()
            if device.type == "cuda":
                results[name].peak_bytes.append(_cuda_peak_bytes(run, device))
            else:
                run()
            synchronize(device)
            results[name].seconds.append(time.perf_counter() - start)
            times.append(f"{name} {results[name].seconds[-1]:.2f}s")
        if progress is not None:
            print(
                f"  round {round_index + 1}/{warmup + rounds}: {', '.join(times) or 'warm-up'}",
                file=progress,
                flush=True,
            )
    return results


def format_table(
    results: dict[str, Measurement],
    agreement: dict[str, dict[str, float]] | None = None,
    baseline: str = BASELINE,
) -> str:
    """Markdown table per strategy: median and fastest step, their ratios to random masking, peak memory,
    and (when given) the agreement with exact guidance per modality (min over modalities, then each).

    The fastest step is the one least disturbed by other work on the machine; on a busy machine its
    ratio is the steadier of the two.
    """
    header = "| strategy | median step (s) | × random | fastest step (s) | × random | peak memory (MiB) |"
    if agreement:
        modalities = "/".join(next(iter(agreement.values())))
        header += f" agreement, min | agreement {modalities} |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for name, measurement in results.items():
        fastest = min(measurement.seconds)
        ratios = ["-", "-"]
        if baseline in results:
            reference = results[baseline]
            ratios = [
                f"{measurement.median / reference.median:.2f}",
                f"{fastest / min(reference.seconds):.2f}",
            ]
        peaks = [peak for peak in measurement.peak_bytes if peak is not None]
        memory = f"{max(peaks) / 2**20:.0f}" if peaks else "n/a"
        line = f"| {name} | {measurement.median:.3f} | {ratios[0]} | {fastest:.3f} | {ratios[1]} | {memory} |"
        if agreement:
            values = agreement[name].values()
            line += f" {min(values):.2f} | {' / '.join(f'{value:.2f}' for value in values)} |"
        lines.append(line)
    return "\n".join(lines)


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


def run(args: argparse.Namespace) -> int:
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
    parser.set_defaults(func=run)
