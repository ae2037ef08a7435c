"""The training commands: `pretrain`, `schedule`, `finetune` and `evaluate`.

    guidedmae pretrain CONFIG [key=value ...]         (also under torchrun --nproc_per_node N -m guidedmae)
    guidedmae schedule CONFIG [key=value ...] [--world-size N] [--steps-per-epoch S] [--out lr.png]
    guidedmae finetune CONFIG [key=value ...]
    guidedmae evaluate CHECKPOINT [key=value ...] [--data ROOT] [--split SPLIT] [--out scores.json]

Wiring only: errors are raised and `guidedmae.cli` reports them; only rank 0 prints.
"""

import argparse
from pathlib import Path

from guidedmae.config import FinetuneConfig, PretrainConfig, load_config
from guidedmae.engine.distributed import launched_rank
from guidedmae.engine.finetune import evaluate_checkpoint, finetune
from guidedmae.engine.logging import TENSORBOARD
from guidedmae.engine.loop import steps_per_epoch
from guidedmae.engine.optim import peak_lr
from guidedmae.engine.pretrain import PICTURES, build_dataset, pretrain
from guidedmae.engine.schedule import LRSchedule, plot_schedule
from guidedmae.files import check_output, write_json

__all__ = ["add_parser"]

OVERRIDES_HELP = "dotted key=value overrides of the config, e.g. optim.blr=2e-4 data.batch_size=64"


def _print_scores(scores: dict) -> None:
    print("| metric | value |\n|---|---:|")
    for name, value in scores["metrics"].items():
        print(f"| {name} | {value:.4g} |")
    if "iou_table" in scores:
        print("\nper-class IoU:\n" + scores["iou_table"])


def _run_pretrain(args: argparse.Namespace) -> int:
    result = pretrain(load_config(PretrainConfig, args.config, args.overrides))
    if launched_rank() == 0:
        print(
            f"done: {result.steps} steps\n"
            f"  checkpoint:  {result.checkpoint}\n"
            f"  metrics:     {result.metrics}\n"
            f"  tensorboard: {result.out_dir / TENSORBOARD}   (tensorboard --logdir {result.out_dir / TENSORBOARD})\n"
            f"  pictures:    {result.out_dir / PICTURES}"
        )
    return 0 if result.weights_identical else 1


def _run_finetune(args: argparse.Namespace) -> int:
    result = finetune(load_config(FinetuneConfig, args.config, args.overrides))
    if launched_rank() == 0:
        _print_scores(result.scores)
        checkpoint = (
            f"  checkpoint: {result.checkpoint}\n" if result.steps else ""
        )  # the k-NN probe trains nothing
        print(
            f"\ndone: {result.steps} steps\n{checkpoint}  metrics:    {result.metrics}\n  results:    {result.results}"
        )
    return 0 if result.weights_identical else 1


def _run_evaluate(args: argparse.Namespace) -> int:
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
        _print_scores(scores)
        if args.out:
            write_json(args.out, {"task": config.head.task, "checkpoint": args.checkpoint, **scores})
            print(f"\nwrote {args.out}")
    return 0


def _run_schedule(args: argparse.Namespace) -> int:
    if args.world_size < 1 or args.steps_per_epoch < 0:
        raise ValueError(
            f"--world-size must be >= 1 and --steps-per-epoch >= 0, got {args.world_size}, {args.steps_per_epoch}"
        )
    check_output(args.out, [args.config])
    config = load_config(PretrainConfig, args.config, args.overrides)
    accum_steps = config.optim.accum_steps
    per_epoch = args.steps_per_epoch or steps_per_epoch(
        len(build_dataset(config)), config.data.batch_size, args.world_size, accum_steps
    )
    total_batch = config.data.batch_size * args.world_size * accum_steps
    schedule = LRSchedule(config.schedule, peak_lr(config.optim, total_batch), per_epoch)
    warmup_end = max(schedule.warmup_steps - 1, 0)
    rows = [
        ("schedule start (epoch 0)", 0),
        (f"end of warmup (epoch {config.schedule.warmup_epochs:g})", warmup_end),
        (f"this run's first step (epoch {config.schedule.start_epoch})", schedule.first_step),
        (f"this run's last step (epoch {config.schedule.total_epochs})", schedule.total_steps - 1),
    ]
    print(
        f"total batch {total_batch} ({config.data.batch_size} x {args.world_size} processes x {accum_steps}), "
        f"peak lr {schedule.base_lr:.4g}, {per_epoch} steps per epoch; this run: "
        f"epochs {config.schedule.start_epoch}..{config.schedule.total_epochs} of "
        f"{config.schedule.total_epochs} = {schedule.run_steps} steps"
    )
    for label, step in rows:
        print(f"  {label:<42} step {step:>9}  lr {schedule.lr(step):.4g}")
    out = Path(args.out)
    title = f"{Path(args.config).name}: lr over the {config.schedule.total_epochs}-epoch schedule"
    plot_schedule(schedule, out, title=title)
    print(f"plot: {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pretrain`, `schedule`, `finetune` and `evaluate` under the main command."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a MultiMAE (also under torchrun --nproc_per_node N -m guidedmae pretrain ...)",
        description="Pretrain a MultiMAE from a YAML config. resume=auto continues the newest checkpoint "
        "in out_dir; model.init=PATH starts from official or own weights.",
    )
    parser.add_argument("config", help="YAML config, e.g. configs/pretrain/demo.yaml")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.set_defaults(func=_run_pretrain)

    parser = subparsers.add_parser(
        "schedule", help="print and plot a config's lr schedule, with the part the run covers"
    )
    parser.add_argument("config", help="YAML config of a pretraining")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.add_argument("--out", default="lr.png", help="PNG of the curve (default lr.png)")
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="processes the run will use (sets the total batch; default 1)",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=0,
        help="use this instead of counting the data set (fast for large folders)",
    )
    parser.set_defaults(func=_run_schedule)

    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune or linear-probe a pretrained encoder (also under torchrun)",
        description="Fine-tune a MultiMAE encoder with a classification, semseg or depth head. "
        "model.init=PATH starts from our or an official pretraining checkpoint; "
        "model.freeze_encoder=true makes it a linear probe; resume=auto continues the run in out_dir.",
    )
    parser.add_argument("config", help="YAML config, e.g. configs/finetune/synthetic_cls.yaml")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.set_defaults(func=_run_finetune)

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
    parser.set_defaults(func=_run_evaluate)
