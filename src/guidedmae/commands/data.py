"""`guidedmae data synth|nyuv2|shard`: write data sets in the MultiMAE folder layout, and shard them.

    guidedmae data synth --out data/synth --n 1000 --size 224 --split train
    guidedmae data nyuv2 --mat nyu_depth_v2_labeled.mat --out data/nyuv2
    guidedmae data shard --root data/synth --split train --out shards/synth

Every file is written atomically, so an interrupted writer is finished by running it again (docs/data.md).
"""

import argparse

from guidedmae.config.loading import load_modalities
from guidedmae.data.modalities import get_modality
from guidedmae.data.nyuv2 import convert_nyuv2
from guidedmae.data.shards import write_shards
from guidedmae.data.writers import write_synthetic
from guidedmae.infra.fields import check_seed


def _run_synth(args: argparse.Namespace) -> int:
    check_seed(args.seed, "--seed")
    count = write_synthetic(
        args.out, n=args.n, size=args.size, split=args.split, seed=args.seed, workers=args.workers
    )
    print(f"wrote {count} synthetic scenes to {args.out}/{args.split}")
    return 0


def _run_nyuv2(args: argparse.Namespace) -> int:
    counts = convert_nyuv2(args.mat, args.out, split_file=args.split_file, mapping_file=args.mapping)
    print(f"wrote NYUv2 to {args.out}: " + ", ".join(f"{split} {count}" for split, count in counts.items()))
    return 0


def _run_shard(args: argparse.Namespace) -> int:
    check_seed(args.seed, "--seed")
    declared = load_modalities(args.config) if args.config else {}
    index = write_shards(
        args.root,
        args.split,
        args.out,
        [get_modality(name, declared) for name in args.modalities],
        samples_per_shard=args.samples_per_shard,
        seed=args.seed,
        on_error=args.on_error,
    )
    count = sum(index.shard_sizes)
    print(f"wrote {count} samples in {len(index.shard_files)} shards to {index.folder}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `data synth`, `data nyuv2` and `data shard` under the main command's sub-commands."""
    data = subparsers.add_parser("data", help="write data sets in the MultiMAE folder layout")
    commands = data.add_subparsers(dest="data_command", required=True)

    synth = commands.add_parser(
        "synth", help="render synthetic scenes into OUT/SPLIT/{rgb,depth,semseg}/SHAPE/"
    )
    synth.add_argument("--out", required=True, help="root folder of the layout")
    synth.add_argument("--n", type=int, required=True, help="number of scenes (indices 0..n-1)")
    synth.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    synth.add_argument(
        "--split",
        default="train",
        help="split folder name (default train); every split is its own population of scenes: train what "
        "runs train on, val the held-out scenes they are evaluated on, any other name scenes of its own",
    )
    synth.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    synth.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    synth.set_defaults(func=_run_synth)

    nyuv2 = commands.add_parser("nyuv2", help="convert nyu_depth_v2_labeled.mat into OUT/{train,test}/...")
    nyuv2.add_argument("--mat", required=True, help="the labeled .mat (MATLAB v7.3 / HDF5)")
    nyuv2.add_argument("--out", required=True, help="root folder of the layout")
    nyuv2.add_argument(
        "--split-file",
        help="1-based image numbers: splits.mat (trainNdxs/testNdxs), .json {train, test} or .txt of train "
        "numbers; default: the first 795 images train, the rest test",
    )
    nyuv2.add_argument(
        "--mapping",
        help="raw id -> class table: .mat with mapClass (e.g. classMapping40.mat), or .npy / .txt of "
        "894 or 895 entries; default: keep the raw ids 0..894 (16-bit semseg)",
    )
    nyuv2.set_defaults(func=_run_nyuv2)

    shard = commands.add_parser(
        "shard", help="copy ROOT/SPLIT (the folder layout) into WebDataset tar shards OUT/SPLIT/shard-*.tar"
    )
    shard.add_argument("--root", required=True, help="root of the folder layout")
    shard.add_argument("--split", default="train", help="split folder (default train)")
    shard.add_argument(
        "--out", required=True, help="root of the shards: OUT/SPLIT/ (read with data.source=shards)"
    )
    shard.add_argument(
        "--modalities", nargs="+", default=["rgb", "depth", "semseg"], help="default: rgb depth semseg"
    )
    shard.add_argument(
        "--config", help="a config whose modalities: section declares modalities that are not built in"
    )
    shard.add_argument(
        "--samples-per-shard", type=int, default=1000, help="default 1000; at least one shard per process"
    )
    shard.add_argument("--seed", type=int, default=0, help="the shuffle of samples across shards (default 0)")
    shard.add_argument(
        "--on-error",
        default="raise",
        choices=("raise", "skip"),
        help="skip: drop broken samples (decoded now)",
    )
    shard.set_defaults(func=_run_shard)
