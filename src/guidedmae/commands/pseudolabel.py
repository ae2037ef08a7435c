"""`guidedmae pseudolabel ROOT --depth MODEL_FOLDER --semseg MODEL_FOLDER`: labels for a folder of rgb images.

guidedmae pseudolabel data/photos --depth models/dpt-hybrid --semseg models/mask2former-coco
"""

import argparse
from pathlib import Path

from guidedmae.data.folder import DEPTH_SCALE
from guidedmae.data.pseudolabel import pseudolabel

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    models = {name: value for name, value in (("depth", args.depth), ("semseg", args.semseg)) if value}
    written = pseudolabel(
        args.root, args.split, models, args.batch_size, args.shard, args.device, args.depth_scale
    )
    print(
        "wrote "
        + ", ".join(f"{count} {modality}" for modality, count in written.items())
        + f" labels in {Path(args.root) / args.split}"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pseudolabel`."""
    parser = subparsers.add_parser(
        "pseudolabel", help="depth and semseg labels for a folder of rgb images (transformers models)"
    )
    parser.add_argument("root", help="root of the folder layout: ROOT/SPLIT/rgb/<class>/<name>.<ext>")
    parser.add_argument("--split", default="train", help="split folder (default train)")
    parser.add_argument("--depth", help="a depth-estimation model's folder (DPT, Depth Anything)")
    parser.add_argument("--semseg", help="a segmentation model's folder (Mask2Former, SegFormer)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--shard", default="", help="this process's share i/n (default: torchrun's RANK/WORLD_SIZE)"
    )
    parser.add_argument("--device", default="auto", help="auto (a GPU if any) | cpu | cuda")
    parser.add_argument(
        "--depth-scale", type=float, default=DEPTH_SCALE, help="file units per depth unit (default 1000)"
    )
    parser.set_defaults(func=_run)
