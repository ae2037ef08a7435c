"""Pretraining throughput in fp32 and under bf16 autocast, measured side by side in one process.

    python benchmarks/pretrain_precision.py                      # demo model + MultiMAE-B, batch 8, CPU
    python benchmarks/pretrain_precision.py --models demo --rounds 5
    python benchmarks/pretrain_precision.py --device cuda --batch-size 64

Each model gets one batch of synthetic scenes and runs full training steps (tokenize, random masks,
encoder, decoders with the semseg decoder in fp32, losses, backward, AdamW). After `--warmup` untimed
steps per precision the two precisions alternate step by step (A/B), so drifts of a shared machine hit
both alike. Prints the setting and a markdown table: median samples/s per precision and bf16 / fp32.
On CPUs without bf16 matrix instructions (AVX512-BF16 / AMX) bf16 autocast is expected to be slower.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.bench import synchronize, train_step
from guidedmae.engine.bench_setup import synthetic_batch
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.machine import cpu_name
from guidedmae.infra.optim import OptimConfig, build_optimizer, set_lr
from guidedmae.losses import LossConfig
from guidedmae.masking import MaskingConfig, build_strategy
from guidedmae.models.architecture import preset_config
from guidedmae.models.multimae import MultiMAE

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "demo.yaml"
PRECISIONS = ("fp32", "bf16")


def models(names: list[str]) -> dict[str, tuple]:
    """{name: (architecture, masking)}: the demo config's model, and MultiMAE-B (224, 98 visible tokens)."""
    found = {}
    for name in names:
        if name == "demo":
            demo = load_config(PretrainConfig, DEMO_CONFIG)
            found["demo"] = (demo.model.architecture(demo.modalities), demo.masking)
        elif name == "base":
            found["MultiMAE-B"] = (preset_config("base", semseg_classes=133), MaskingConfig(num_visible=98))
        else:
            raise ValueError(f"--models: unknown model {name!r}; expected demo and/or base")
    return found


def samples_per_second(
    architecture, masking, batch_size: int, rounds: int, warmup: int, device: torch.device
) -> dict:
    """{precision: [samples/s of each timed step]} with the precisions alternating step by step."""
    torch.manual_seed(0)
    model = MultiMAE(architecture).to(device)
    step = MaskedAutoencoderStep(model, build_strategy(masking, model.config), LossConfig())
    optimizer = build_optimizer(model, OptimConfig())
    set_lr(optimizer, 1e-5)
    batch = {k: v.to(device) for k, v in synthetic_batch(batch_size, architecture.image_size).items()}
    generator = torch.Generator().manual_seed(0)
    rates = {precision: [] for precision in PRECISIONS}
    for round_index in range(warmup + rounds):  # the first `warmup` rounds are not timed
        for precision in PRECISIONS:
            synchronize(device)
            start = time.perf_counter()
            train_step(step, optimizer, batch, generator, precision)
            synchronize(device)
            if round_index >= warmup:
                rates[precision].append(batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "base"], help="demo and/or base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per precision first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}, batch {args.batch_size}, {args.warmup} warm-up + {args.rounds} timed steps per precision "
        "(A/B alternated)"
    )
    print("| model | fp32 samples/s | bf16 samples/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for name, (architecture, masking) in models(args.models).items():
        rates = samples_per_second(architecture, masking, args.batch_size, args.rounds, args.warmup, device)
        fp32, bf16 = (statistics.median(rates[precision]) for precision in PRECISIONS)
        print(f"| {name} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.2f} |", flush=True)


if __name__ == "__main__":
    main()
