"""`guidedmae evaluate CHECKPOINT [key=value ...]`: metrics of a fine-tuned checkpoint on a split.

guidedmae evaluate runs/cls/checkpoint-last.pt --split test --out scores.json eval.mode=sliding
"""

import argparse

from guidedmae.commands.common import print_scores
from guidedmae.engine.finetune import evaluate_checkpoint
from guidedmae.infra.distributed import launched_rank
from guidedmae.infra.files import check_output, write_json

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.split:
        overrides.append(f"data.eval_split={args.split}")
    if args.out:
        check_output(args.out, [args.checkpoint])
    config, scores = evaluate_checkpoint(args.checkpoint, overrides)
    if launched_rank() == 0:
        where = config.data.root or "synthetic scenes"
        print(f"{args.checkpoint} on {where} ({config.data.eval_split}, eval.mode={config.eval.mode}):\n")
        print_scores(scores)
        if args.out:
            write_json(args.out, {"task": config.head.task, "checkpoint": args.checkpoint, **scores})
            print(f"\nwrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `evaluate`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of a fine-tuned checkpoint on a split (top-1/5, mIoU with per-class IoU, depth errors)",
        description="Evaluate a checkpoint written by `guidedmae finetune` with the config it was trained "
        "with, changed by the overrides (e.g. eval.mode=sliding data.eval_split=test).",
    )
    parser.add_argument("checkpoint", help="a fine-tuning checkpoint, e.g. runs/x/checkpoint-last.pt")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. eval.mode=whole")
    parser.add_argument("--data", help="data root to evaluate on (sets data.root)")
    parser.add_argument("--split", help="split to evaluate (sets data.eval_split, e.g. val or test)")
    parser.add_argument("--out", help="also write the scores to this JSON file")
    parser.set_defaults(func=_run)
