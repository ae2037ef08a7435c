"""Rendering speed of the synthetic scenes on one core, as a markdown table.

    python benchmarks/synthetic_speed.py [--n 200] [--sizes 64 128 224] [--seed 0]

Targets (one core): >= 100 samples/s at 64x64 and >= 10 samples/s at 224x224. Each size renders the
same scenes 0..n-1 after a short warm-up (the per-size ray cache), and reports the mean rate in
wall-clock time and in CPU time of this process: on a shared machine the second is what one
dedicated core would give, and the targets are checked against it.
"""

import os

# One core: the thread pools of the numerical libraries read these when they are first imported.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

from guidedmae.data.scenes import render_scene  # noqa: E402

TARGETS = {64: 100.0, 224: 10.0}  # samples per second


def samples_per_second(size: int, n: int, seed: int) -> tuple[float, float]:
    """(wall-clock, CPU-time) rendering rate at size x size."""
    for index in range(3):
        render_scene(seed, index, size)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(n):
        render_scene(seed, index, size)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="scenes rendered per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"synthetic scenes, one core, {args.n} scenes per size{load}\n")
    print("| size | samples/s (wall) | samples/s (CPU) | target | result |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        wall_rate, cpu_rate = samples_per_second(size, args.n, args.seed)
        target = TARGETS.get(size)
        result = "-" if target is None else ("pass" if cpu_rate >= target else "FAIL")
        target_text = "-" if target is None else f">= {target:g}"
        print(f"| {size}x{size} | {wall_rate:.1f} | {cpu_rate:.1f} | {target_text} | {result} |", flush=True)


if __name__ == "__main__":
    main()
