"""Everything a GPU changes, checked and measured by one command, in one table (under 8 minutes on one H100).

    python benchmarks/gpu_check.py --out gpu-check                     # a CUDA machine: MultiMAE-B, batch 64
    python benchmarks/gpu_check.py --out gpu-check --official ../MultiMAE   # the official step beside ours
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check    # the same code on a CPU, small

1. The test suite's `cuda` tests (tests/test_cuda.py: bf16 against fp32, every strategy on the card without a
   host sync, pinned loader batches, a killed run resumed bit-exactly, fine-tuning, DDP on nccl, the compiled
   step); on a CPU they skip, each saying why.
2. The random-masking pretraining step of MultiMAE-B (--quick: the demo model) at --batch (64; halved on
   out-of-memory, the row says so): fp32 with TF32, bf16 eager and bf16 compiled (--quick: dynamo's
   aot_eager backend, the graph capture without inductor's code generation); seconds per step,
   samples/s, peak memory, the attention kernel the step ran (from the profiler: flash, memory-efficient,
   cudnn, math, or explicit products), FLOPs counted by torch.utils.flop_counter and MFU (achieved FLOP/s
   over the card's dense bf16 peak; --peak-tflops for a card the table does not know). With --official, the
   official MultiMAE step at the same batch in bf16.
3. Exact attention guidance, the scout and the cache, as step-time ratios to random masking, and their
   peak memory (engine.bench: strategies alternating).
4. The loader's samples/s (synthetic scenes, the folder layout, its shards) with 4, 8 and 16 workers
   (--quick: 0, 1, 2) against the step's samples/s.

Beside each measured value, the goal it is held against. Written: OUT/gpu_check.md and OUT/gpu_check.json,
with the card, driver, torch and CUDA versions (or the CPU).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate
from torch.utils.flop_counter import FlopCounterMode

from guidedmae.data.datasets import FolderDataset, ShardDataset, SyntheticScenes
from guidedmae.data.shards import write_shards
from guidedmae.data.transforms import AugmentConfig
from guidedmae.data.writers import write_synthetic
from guidedmae.engine.bench import time_strategies
from guidedmae.engine.bench_setup import MODALITIES, synthetic_batch
from guidedmae.engine.fit import apply_gradients, forward_backward
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.backends import BackendSettings, apply_backend_settings
from guidedmae.infra.machine import describe_machine
from guidedmae.infra.optim import OptimConfig, build_optimizer
from guidedmae.infra.schedule import START
from guidedmae.losses import LossConfig
from guidedmae.masking import MaskingConfig, build_strategy
from guidedmae.masking.strategies import AttentionOptions, CachedAttentionOptions, ScoutAttentionOptions
from guidedmae.models import MultiMAE, MultiMAEConfig

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a name fragment, most specific first.
BF16_PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("GH200", 989.4),
    ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2),
)  # fmt: skip
GOALS = {
    "official / ours, bf16": ">= 1.3",
    "MFU, compiled bf16": ">= 45%",
    "exact guidance / random": "<= 1.5",
    "scout / random": "<= 1.15",
    "loader / step samples/s": ">= 1 with <= 8 workers",
}
DEMO = MultiMAEConfig(
    image_size=64, patch_size=8, dim=128, depth=4, num_heads=4, decoder_dim=64, decoder_depth=1, decoder_heads=4,
    semseg_classes=8, semseg_class_dim=32,
)  # fmt: skip


def machine(device: torch.device) -> dict:
    """What the numbers come from: the card (name, driver, memory, bf16), torch, CUDA; or the CPU."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": describe_machine()}
    if device.type != "cuda":
        return {**info, "device": "cpu"}
    properties = torch.cuda.get_device_properties(device)
    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return {
        **info,
        "device": properties.name,
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "driver": driver.stdout.strip() or "unknown",
        "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(),
    }


def cuda_tests(device: torch.device) -> dict:
    """tests/test_cuda.py in its own process: passed / failed / skipped and why."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", result.stdout)}
    reasons = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", result.stdout)))
    failures = re.findall(r"FAILED (\S+)", result.stdout)
    return {**counts, "skip_reasons": reasons, "failures": failures, "returncode": result.returncode}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in BF16_PEAK_TFLOPS if fragment in name), None)


def attention_kernel(run) -> str:
    """The attention kernel the step ran, read from the profiler's operator names."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        run()
    names = {event.name for event in profiler.events()}
    for fragment, kernel in (("flash_attention_for_cpu", "CPU flash"), ("flash", "flash"), ("efficient", "memory-efficient"),
                             ("cudnn_attention", "cudnn"), ("attention_math", "math")):  # fmt: skip
        if any(fragment in name and "scaled_dot_product" in name for name in names):
            return kernel
    return "explicit products" if "aten::softmax" in names or "aten::_softmax" in names else "none found"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(
    architecture: MultiMAEConfig, batch_size: int, precision: str, compiled: bool, device, steps: int
):
    """One row: the random-masking step of `architecture` at `batch_size` (halved on out-of-memory)."""
    while True:
        try:
            return _time_step(architecture, batch_size, precision, compiled, device, steps)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch_size == 1:
                return {"error": "out of memory at batch 1"}
            batch_size //= 2


def _time_step(architecture, batch_size, precision, compiled, device, steps) -> dict:
    torch.manual_seed(0)
    model = MultiMAE(architecture).to(device).train()
    strategy = build_strategy(
        MaskingConfig(num_visible=architecture.multimae_num_visible), architecture, batch_size
    )
    step = MaskedAutoencoderStep(model, strategy.to(device), LossConfig())
    runner = torch.compile(step, backend=compiled) if compiled else step
    optimizer = build_optimizer(model, OptimConfig())
    batch = {
        key: value.to(device) for key, value in synthetic_batch(batch_size, architecture.image_size).items()
    }
    generator = torch.Generator().manual_seed(0)

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward(runner, batch, generator, START, "fp32" if precision == "fp32" else "bf16")
        apply_gradients(optimizer, None, 0.0)

    for _ in range(3 if compiled else 2):  # optimizer state, compilation (and its recompilation once)
        one_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    with FlopCounterMode(display=False) as counter:  # eager: the counter sees the operators themselves
        optimizer.zero_grad(set_to_none=True)
        forward_backward(step, batch, generator, START, "fp32" if precision == "fp32" else "bf16")
    return {
        "batch": batch_size,
        "seconds": seconds,
        "samples_per_s": batch_size / seconds,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "tflop_per_step": counter.get_total_flops() / 1e12,
        "achieved_tflops": counter.get_total_flops() / seconds / 1e12,
        "attention": attention_kernel(one_step),
    }


def guidance(architecture: MultiMAEConfig, batch_size: int, precision: str, device, rounds: int) -> dict:
    """Exact guidance, the scout and the cache against random masking (engine.bench.time_strategies)."""
    torch.manual_seed(0)
    model = MultiMAE(architecture).to(device).train()
    base = MaskingConfig(num_visible=architecture.multimae_num_visible)
    strategies = {
        "random": base,
        "exact attention-high": replace(base, strategy="attention", attention=AttentionOptions()),
        "scout": replace(base, strategy="scout_attention", scout_attention=ScoutAttentionOptions()),
        "cached": replace(base, strategy="cached_attention", cached_attention=CachedAttentionOptions()),
    }
    batch = {
        key: value.to(device) for key, value in synthetic_batch(batch_size, architecture.image_size).items()
    }
    results = time_strategies(model, batch, strategies, rounds, 1, precision)
    random = results["random"].median
    return {
        name: {
            "seconds": measurement.median,
            "ratio": measurement.median / random,
            "peak_gib": max((p for p in measurement.peak_bytes if p is not None), default=0) / 2**30 or None,
        }
        for name, measurement in results.items()
    }


def loader_rates(image_size: int, samples: int, workers: tuple[int, ...], batch_size: int) -> dict:
    """Samples/s of a DataLoader over the synthetic scenes, the folder layout and its shards."""
    augment = AugmentConfig(size=image_size)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_synthetic(
            root / "folder", n=samples, size=image_size, workers=max(workers) or 1, progress=False
        )
        write_shards(
            root / "folder", "train", root / "shards", samples_per_shard=max(8, samples // 8), progress=False
        )
        datasets = {
            "synthetic": SyntheticScenes(samples, image_size, 0, MODALITIES, augment),
            "folder": FolderDataset(root / "folder", "train", MODALITIES, augment),
            "shards": ShardDataset(root / "shards", "train", MODALITIES, augment),
        }
        for name, dataset in datasets.items():
            for count in workers:
                loader = DataLoader(
                    dataset, batch_size=batch_size, num_workers=count, collate_fn=default_collate
                )
                start = time.perf_counter()
                seen = sum(len(batch["rgb"]) for batch in loader)
                rates[f"{name}, {count} workers"] = seen / (time.perf_counter() - start)
    return rates


def official_step(root: Path, architecture_name: str, batch_size: int, device) -> float | None:
    """Seconds per bf16 step of the official MultiMAE (benchmarks/train_step.py measures it)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_step import measure_official

    return measure_official(root, architecture_name, batch_size, "bf16", 5, os.cpu_count() or 1, device)


def table(report: dict) -> str:
    """The markdown of a report: the machine, the tests, then every measured row beside its goal."""
    lines = [f"# GPU check ({report['machine']['device']})", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in report["machine"].items()]
    tests = report["cuda_tests"]
    lines += ["", f"cuda tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
              f"{tests.get('skipped', 0)} skipped" + (f" ({'; '.join(tests['skip_reasons'])})" if tests["skip_reasons"] else "")]  # fmt: skip
    if tests["failures"]:
        lines.append("failed: " + ", ".join(tests["failures"]))
    lines += ["", "| step (random masking) | batch | s/step | samples/s | peak GiB | attention | TFLOP/step | MFU | goal |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["steps"].items():
        if "error" in row or "missing" in row:
            lines.append(f"| {name} | {row.get('error') or row.get('missing')} | | | | | | | |")
            continue
        mfu = "n/a" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        goal = GOALS["MFU, compiled bf16"] if name == "bf16 compiled" else ""
        lines.append(f"| {name} | {row['batch']} | {row['seconds']:.4f} | {row['samples_per_s']:.1f} | {peak} | "
                     f"{row['attention']} | {row['tflop_per_step']:.3f} | {mfu} | {goal} |")  # fmt: skip
    if report.get("official"):
        official = report["official"]
        lines.append(f"\nofficial MultiMAE, bf16, batch {official['batch']}: {official['seconds']:.4f} s/step; "
                     f"official / ours {official['ratio']:.2f} (goal {GOALS['official / ours, bf16']})")  # fmt: skip
    lines += [
        "",
        f"| guidance ({report['guidance_precision']}) | s/step | × random | peak GiB | goal |",
        "|---|---|---|---|---|",
    ]
    goals = {"exact attention-high": GOALS["exact guidance / random"], "scout": GOALS["scout / random"]}
    for name, row in report["guidance"].items():
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        lines.append(
            f"| {name} | {row['seconds']:.4f} | {row['ratio']:.2f} | {peak} | {goals.get(name, '')} |"
        )
    step_rate = report["step_samples_per_s"]
    lines += ["", f"| loader | samples/s | / step's {step_rate:.0f} samples/s | goal |", "|---|---|---|---|"]
    for name, rate in report["loader"].items():
        lines.append(f"| {name} | {rate:.0f} | {rate / step_rate:.2f} | {GOALS['loader / step samples/s']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--quick", action="store_true", help="the demo model, small batches and data (CPU tests)"
    )
    parser.add_argument("--batch", type=int, help="step batch (default 64; --quick 8)")
    parser.add_argument(
        "--official", type=Path, help="a checkout of EPFL-VILAB/MultiMAE: its step beside ours"
    )
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if the table lacks it")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the cuda tests")
    args = parser.parse_args()
    device = torch.device(args.device)
    apply_backend_settings(BackendSettings(tf32=True), device)
    if args.quick:  # one thread: the figures of a shared CPU are for the script's own test, not for reading
        torch.set_num_threads(1)
    architecture = DEMO if args.quick else MultiMAEConfig()
    batch = args.batch or (4 if args.quick else 64)
    steps = 2 if args.quick else 10
    report = {"machine": machine(device)}
    print(f"GPU check on {report['machine']['device']}: tests", flush=True)
    report["cuda_tests"] = (
        cuda_tests(device) if not args.skip_tests else {"skip_reasons": ["--skip-tests"], "failures": []}
    )
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    peak = peak_tflops(device, args.peak_tflops)
    report["steps"] = {}
    # --quick compiles through dynamo without inductor's code generation: the same graph capture, in seconds
    backend = "aot_eager" if args.quick else "inductor"
    fp32 = "fp32 + TF32" if device.type == "cuda" else "fp32"
    for name, precision, compiled in ((fp32, "fp32", ""), ("bf16", "bf16", ""), ("bf16 compiled", "bf16", backend)):  # fmt: skip
        if precision == "bf16" and not bf16:
            report["steps"][name] = {
                "missing": "this GPU has no bf16 (torch.cuda.is_bf16_supported() is False)"
            }
            continue
        print(f"  step: {name}", flush=True)
        row = time_step(architecture, batch, precision, compiled, device, steps)
        if "error" not in row:
            row["mfu"] = row["achieved_tflops"] / peak if peak and precision == "bf16" else None
            if row["batch"] != batch:
                row["attention"] += f" (batch {batch} out of memory)"
        report["steps"][name] = row
    reference = report["steps"]["bf16"] if bf16 else report["steps"][fp32]
    if "seconds" not in reference:
        reference = report["steps"][fp32]
    report["step_samples_per_s"] = reference.get("samples_per_s", float("nan"))
    if args.official:
        print("  official step", flush=True)
        seconds = official_step(args.official, "demo" if args.quick else "base", reference["batch"], device)
        report["official"] = {
            "batch": reference["batch"],
            "seconds": seconds,
            "ratio": seconds / reference["seconds"],
        }
    report["guidance_precision"] = "bf16" if bf16 else "fp32"
    print("  guidance", flush=True)
    report["guidance"] = guidance(
        architecture,
        reference.get("batch", batch),
        report["guidance_precision"],
        device,
        2 if args.quick else 5,
    )
    print("  loader", flush=True)
    workers = (0, 1, 2) if args.quick else (4, 8, 16)
    report["loader"] = loader_rates(architecture.image_size, 16 if args.quick else 1024, workers, batch)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    markdown = table(report)
    (args.out / "gpu_check.md").write_text(markdown)
    print(markdown)
    return 1 if report["cuda_tests"].get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
