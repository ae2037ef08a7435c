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

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TextIO

import torch
from torch import nn

from guidedmae.engine.fit import apply_gradients, forward_backward
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.optim import OptimConfig, build_optimizer, param_groups, set_lr
from guidedmae.infra.schedule import START
from guidedmae.losses import LossConfig
from guidedmae.masking import BASELINE, MaskingConfig, build_strategy
from guidedmae.masking.strategies import AttentionOptions
from guidedmae.models.multimae import MultiMAE


@dataclass
class Measurement:
    seconds: list[float]
    peak_bytes: list[int | None]  # None where this torch build cannot measure it

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


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
    exact_config = replace(  # type: ignore[call-arg]  # strategy sections are fields made at import
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
            model,
            tokens,
            torch.Generator().manual_seed(seed),
            START,
            batch["index"],
            batch["view"],
            batch.get("semseg"),
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
    """One optimizer step of masked reconstruction: the loop's own forward_backward and apply_gradients."""
    optimizer.zero_grad(set_to_none=True)
    forward_backward(step, batch, generator, START, precision)
    apply_gradients(optimizer, None, 0.0)


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
