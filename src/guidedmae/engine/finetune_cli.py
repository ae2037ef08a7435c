"""`guidedmae finetune CONFIG [key=value ...]` and `guidedmae evaluate CHECKPOINT [key=value ...]`."""

import argparse
import os
import sys
from pathlib import Path

from guidedmae.config import load_config
from guidedmae.engine.finetune import FinetuneConfig, evaluate_checkpoint, finetune, write_results
from guidedmae.engine.loop import NonFiniteLossError
from guidedmae.models.checkpoints import CheckpointError

OVERRIDES_HELP = "dotted key=value overrides of the config, e.g. model.init=runs/demo/checkpoint-last.pt"


def print_scores(scores: dict) -> None:
    print("| metric | value |\n|---|---:|")
    for name, value in scores["metrics"].items():
        print(f"| {name} | {value:.4g} |")
    if "iou_table" in scores:
        print("\nper-class IoU:\n" + scores["iou_table"])


def run_finetune(args: argparse.Namespace) -> int:
    try:
        config = load_config(FinetuneConfig, args.config, args.overrides)
        result = finetune(config)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"guidedmae finetune: error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print_scores(result.scores)
        print(
            f"\ndone: {result.steps} steps\n"
            f"  checkpoint: {result.checkpoint}\n"
            f"  metrics:    {result.metrics}\n"
            f"  results:    {result.results}"
        )
    return 0 if result.weights_identical else 1


def run_evaluate(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.split:
        overrides.append(f"data.eval_split={args.split}")
    try:
        config, scores = evaluate_checkpoint(args.checkpoint, overrides)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"guidedmae evaluate: error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        where = config.data.root or "synthetic scenes"
        print(f"{args.checkpoint} on {where} ({config.data.eval_split}, eval.mode={config.eval.mode}):\n")
        print_scores(scores)
        if args.out:
            write_results(Path(args.out), {"task": config.head.task, "checkpoint": args.checkpoint, **scores})
            print(f"\nwrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `finetune` and `evaluate` under the main command's sub-commands."""
    finetune_parser = subparsers.add_parser(
        "finetune",
        help="fine-tune or linear-probe a pretrained encoder (also under torchrun)",
        description="Fine-tune a MultiMAE encoder with a classification, semseg or depth head. "
        "model.init=PATH starts from our or an official pretraining checkpoint; "
        "model.freeze_encoder=true makes it a linear probe; resume=auto continues the run in out_dir.",
    )
    finetune_parser.add_argument("config", help="YAML config, e.g. configs/finetune/synthetic_cls.yaml")
    finetune_parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    finetune_parser.set_defaults(func=run_finetune)

    evaluate_parser = subparsers.add_parser(
        "evaluate",
        help="metrics of a fine-tuned checkpoint on a split (top-1/5, mIoU with per-class IoU, depth errors)",
        description="Evaluate a checkpoint written by `guidedmae finetune` with the config it was trained "
        "with, changed by the overrides (e.g. eval.mode=sliding data.eval_split=test).",
    )
    evaluate_parser.add_argument(
        "checkpoint", help="a fine-tuning checkpoint, e.g. runs/x/checkpoint-last.pt"
    )
    evaluate_parser.add_argument(
        "overrides", nargs="*", help="dotted key=value overrides, e.g. eval.mode=whole"
    )
    evaluate_parser.add_argument("--data", help="data root to evaluate on (sets data.root)")
    evaluate_parser.add_argument("--split", help="split to evaluate (sets data.eval_split, e.g. val or test)")
    evaluate_parser.add_argument("--out", help="also write the scores to this JSON file")
    evaluate_parser.set_defaults(func=run_evaluate)
