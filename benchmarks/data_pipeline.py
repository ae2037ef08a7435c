"""Data pipeline throughput per worker core: the three-modality 224x224 pretraining pipeline, read from the
folder layout and from its tar shards.

    python benchmarks/data_pipeline.py                                  # 512 ImageNet-like samples, temp dir
    python benchmarks/data_pipeline.py --root data/mine --split train   # a folder layout of your own
    python benchmarks/data_pipeline.py --baseline ../base/src           # side by side with another checkout

The generated samples are shaped like ImageNet with MultiMAE's pseudo labels: rgb JPEG of 500x375 (quality
90, with sensor-like noise so that it compresses like a photograph), 16-bit depth PNG and 8-bit semseg
PNG. One process on one thread times `dataset[i]` over every sample (decode, then crop, flip, resize,
normalize and standardize: MultiMAE's training augmentation at 224), for each source, the stages apart
(decode alone = `dataset.load(i)`). With --baseline the same measurement also runs with another checkout's
guidedmae (a git worktree of an earlier commit, say), the versions alternating round by round so that a
shared machine's drifts hit both. Then a DataLoader (batches of 64, collated) with 1..--workers workers
shows how the rate scales with cores, and the last table gives the worker cores one training process
needs to feed a given step rate.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOURCES = ("folder", "shards")
STAGES = ("decode", "decode + augment")
MODALITIES = ("rgb", "depth", "semseg")
STEP_RATES = (250, 500, 1000, 2000)  # samples/s a training process might consume


def write_imagenet_like(root: Path, count: int) -> None:
    """`count` synthetic scenes as ImageNet-sized files in root/train/<modality>/<class>/<name>."""
    from guidedmae.data.scenes import SHAPES, render_scene
    from guidedmae.data.writers import save_image_atomic, write_sample

    rng = np.random.default_rng(0)
    for index in range(count):
        scene = render_scene(0, index, (375, 500))
        class_name, name = SHAPES[scene.label], f"{index:06d}"
        noisy = scene.rgb.astype(np.float32) + rng.normal(0, 8, scene.rgb.shape)
        rgb = np.clip(noisy, 0, 255).astype(np.uint8)
        save_image_atomic(rgb, root / "train" / "rgb" / class_name / f"{name}.jpg")
        write_sample(root, "train", class_name, name, {"depth": scene.depth, "semseg": scene.semseg})


def measure(root: Path, split: str, shards: Path | None) -> dict:
    """{source: {stage: samples/s}} for this interpreter's guidedmae, one thread, every sample once."""
    import torch

    from guidedmae.data.datasets import FolderDataset
    from guidedmae.data.transforms import AugmentConfig

    torch.set_num_threads(1)
    try:  # what a loader worker does first (a baseline checkout may predate it)
        from guidedmae.data.loader import reuse_freed_memory
    except ImportError:
        pass
    else:
        reuse_freed_memory()
    augment = AugmentConfig(size=224)
    datasets = {"folder": FolderDataset(root, split, MODALITIES, augment)}
    if shards is not None:
        from guidedmae.data.datasets import ShardDataset

        datasets["shards"] = ShardDataset(shards, split, MODALITIES, augment)
    rates = {}
    for source, dataset in datasets.items():
        dataset[0]  # warm the file cache and the lazy state
        rates[source] = {}
        for stage, fetch in zip(STAGES, (dataset.load, dataset.__getitem__), strict=True):
            start = time.perf_counter()
            for index in range(len(dataset)):
                fetch(index)
            rates[source][stage] = len(dataset) / (time.perf_counter() - start)
    return rates


def measure_in(src: Path | None, root: Path, split: str, shards: Path | None) -> dict:
    """measure() in a fresh interpreter importing guidedmae from `src` (None: this checkout)."""
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        environment["PYTHONPATH"] = str(src)
    arguments = ["--measure", "--root", str(root), "--split", split]
    if shards is not None:
        arguments += ["--shards", str(shards)]
    result = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, env=environment, check=False
    )
    if result.returncode:
        raise RuntimeError(f"measuring with {src or 'this checkout'} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def loader_rates(root: Path, split: str, shards: Path, workers: int) -> dict:
    """{(source, workers): samples/s} of a DataLoader over one epoch in batches of 64, from the start of its
    workers to the last batch. (Timing from the first batch on would count the batches the other workers
    prefetched meanwhile as free: 445-555 samples/s with 2 workers where one thread does ~230.) NaN when
    the epoch has no batch."""
    import torch

    from guidedmae.data.datasets import FolderDataset, ShardDataset
    from guidedmae.data.loader import build_loader
    from guidedmae.data.transforms import AugmentConfig

    torch.set_num_threads(1)
    augment = AugmentConfig(size=224)
    datasets = {
        "folder": FolderDataset(root, split, MODALITIES, augment),
        "shards": ShardDataset(shards, split, MODALITIES, augment),
    }
    rates = {}
    for source, dataset in datasets.items():
        for count in range(1, workers + 1):
            loader = build_loader(
                dataset, batch_size=64, num_workers=count, shuffle=True, drop_last=True, seed=0
            )
            start = time.perf_counter()
            seen = sum(len(batch["rgb"]) for batch in loader)
            rates[source, count] = seen / (time.perf_counter() - start) if seen else math.nan
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, help="a folder layout (default: generate --samples in a temp dir)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--samples", type=int, default=512, help="generated samples (default 512)")
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to measure side by side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per version (median)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="most DataLoader workers")
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.root, args.split, args.shards)))
        return
    from guidedmae.data.shards import write_shards
    from guidedmae.infra.machine import cpu_name  # this checkout's (a baseline may predate it)

    with tempfile.TemporaryDirectory() as temp:
        root = args.root
        if root is None:
            root = Path(temp) / "folder"
            write_imagenet_like(root, args.samples)
        shards = Path(temp) / "shards"
        write_shards(root, args.split, shards, MODALITIES, samples_per_shard=64, progress=False)
        versions = {"this checkout": None, **({"baseline": args.baseline} if args.baseline else {})}
        rounds: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name, src in versions.items():
                has_shards = src is None or (src / "guidedmae" / "data" / "shards.py").is_file()
                rounds[name].append(measure_in(src, root, args.split, shards if has_shards else None))
        loaders = loader_rates(root, args.split, shards, args.workers)

        files = sorted((root / args.split / "rgb").rglob("*.*"))
        mean_kb = statistics.mean(f.stat().st_size for f in files) / 1024
        print(
            f"{cpu_name()}, {os.cpu_count()} cores; {len(files)} samples of {root / args.split} (rgb "
            f"{mean_kb:.0f} KiB on average); one thread, median of {args.rounds} rounds"
        )
        print("\n| version | source | decode samples/s | decode + augment samples/s |")
        print("|---|---|---|---|")
        per_worker = {}
        for name, measured in rounds.items():
            for source in SOURCES:
                if source not in measured[0]:
                    continue
                rates = [statistics.median(r[source][stage] for r in measured) for stage in STAGES]
                per_worker.setdefault(source, rates[1])
                print(f"| {name} | {source} | {rates[0]:.0f} | {rates[1]:.0f} |")

        print(
            "\n| source | "
            + " | ".join(f"{n} worker{'s' * (n > 1)}" for n in range(1, args.workers + 1))
            + " |"
        )
        print("|---|" + "---|" * args.workers)
        for source in SOURCES:
            cells = " | ".join(f"{loaders[source, n]:.0f}" for n in range(1, args.workers + 1))
            print(f"| {source} (DataLoader samples/s) | {cells} |")

        print("\n| step rate (samples/s) | " + " | ".join(f"worker cores, {s}" for s in SOURCES) + " |")
        print("|---|" + "---|" * len(SOURCES))
        for rate in STEP_RATES:
            cells = " | ".join(str(math.ceil(rate / per_worker[s])) for s in SOURCES)
            print(f"| {rate} | {cells} |")


if __name__ == "__main__":
    main()
