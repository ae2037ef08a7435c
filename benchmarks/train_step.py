"""One random-masking pretraining step (forward, backward, AdamW) of this checkout against another one.

    python benchmarks/train_step.py --baseline ../base/src                    # MultiMAE-B, batch 8, fp32 and bf16
    python benchmarks/train_step.py --baseline ../base/src --model demo --batch 32 --threads 1

Each version runs in its own interpreter (`--baseline` is put first on PYTHONPATH), the versions
alternating round by round so that a shared machine's drifts hit both; every round times `--steps` steps
after one warm-up step, and the table gives the median seconds per step and the ratio. The batch is the
same synthetic scenes for both; the step is what `guidedmae pretrain` runs: MaskedAutoencoderStep, then
AdamW with MultiMAE's parameter groups.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16")


def measure(model_name: str, batch_size: int, precision: str, steps: int, threads: int) -> float:
    """Seconds per training step of this interpreter's guidedmae (median of `steps`)."""
    import torch
    from torch.utils.data import default_collate

    from guidedmae.data.datasets import SyntheticScenes
    from guidedmae.data.transforms import AugmentConfig
    from guidedmae.engine.optim import OptimConfig, build_optimizer
    from guidedmae.engine.precision import autocast
    from guidedmae.engine.step import MaskedAutoencoderStep
    from guidedmae.losses import LossConfig
    from guidedmae.masking.config import MaskingConfig, build_strategy
    from guidedmae.models.multimae import MultiMAE, MultiMAEConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_name == "base":
        config, visible = MultiMAEConfig(), 98
    else:  # the demo architecture (configs/pretrain/demo.yaml)
        config = MultiMAEConfig(
            image_size=64, patch_size=8, dim=128, depth=4, num_heads=4, decoder_dim=128, decoder_depth=1,
            decoder_heads=4, semseg_classes=8, semseg_class_dim=32,
        )  # fmt: skip
        visible = 32
    model = MultiMAE(config).train()
    scenes = SyntheticScenes(
        batch_size, config.image_size, 0, ("rgb", "depth", "semseg"), AugmentConfig(config.image_size)
    )
    batch = default_collate([scenes[index] for index in range(batch_size)])
    masking = MaskingConfig(strategy="random", num_visible=visible)
    step = MaskedAutoencoderStep(model, build_strategy(masking, config, batch_size), LossConfig())
    optimizer = build_optimizer(model, OptimConfig())
    generator = torch.Generator().manual_seed(0)
    times = []
    for index in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), precision):
            output = step(batch, generator)
        output.losses["total"].backward()
        optimizer.step()
        if index:  # the first step allocates the optimizer state
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_in(src: Path | None, arguments: list[str]) -> float:
    environment = dict(os.environ)
    if src is not None:
        environment["PYTHONPATH"] = str(src)
    result = subprocess.run(
        [sys.executable, __file__, "--measure", *arguments], capture_output=True, text=True, env=environment
    )
    if result.returncode:
        raise RuntimeError(f"measuring with {src or 'this checkout'} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to measure against")
    parser.add_argument("--model", choices=("base", "demo"), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=PRECISIONS, nargs="+", default=list(PRECISIONS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per version (median)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        seconds = measure(args.model, args.batch, args.precision[0], args.steps, args.threads)
        print(json.dumps(seconds))
        return
    from guidedmae.bench import cpu_name  # this checkout's (a baseline may predate it)

    versions = {"this checkout": None, **({"baseline": args.baseline} if args.baseline else {})}
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads; {args.model}, batch {args.batch}; "
        f"median of {args.rounds} rounds x {args.steps} steps, versions alternating"
    )
    print("\n| precision | " + " | ".join(f"{name} s/step" for name in versions) + " | baseline / this |")
    print("|---|" + "---|" * len(versions) + "---|")
    for precision in args.precision:
        common = ["--model", args.model, "--batch", str(args.batch), "--precision", precision]
        common += ["--threads", str(args.threads), "--steps", str(args.steps)]
        rounds: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name, src in versions.items():
                rounds[name].append(measure_in(src, common))
        medians = {name: statistics.median(values) for name, values in rounds.items()}
        ratio = f"{medians['baseline'] / medians['this checkout']:.2f}" if "baseline" in medians else "-"
        cells = " | ".join(f"{seconds:.3f}" for seconds in medians.values())
        print(f"| {precision} | {cells} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
