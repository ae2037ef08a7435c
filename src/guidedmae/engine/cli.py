"""`guidedmae pretrain CONFIG [key=value ...]` and `guidedmae schedule CONFIG [key=value ...]`."""

import argparse
import os
import sys
from pathlib import Path

from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.loop import NonFiniteLossError, steps_per_epoch
from guidedmae.engine.optim import peak_lr
from guidedmae.engine.pretrain import build_dataset, pretrain
from guidedmae.engine.schedule import LRSchedule, plot_schedule

OVERRIDES_HELP = "dotted key=value overrides of the config, e.g. optim.blr=2e-4 data.batch_size=64"


def run_pretrain(args: argparse.Namespace) -> int:
    try:
        config = load_config(PretrainConfig, args.config, args.overrides)
        result = pretrain(config)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"guidedmae pretrain: error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"done: {result.steps} steps\n"
            f"  checkpoint:  {result.checkpoint}\n"
            f"  metrics:     {result.metrics}\n"
            f"  tensorboard: {result.tensorboard}   (tensorboard --logdir {result.tensorboard})\n"
            f"  pictures:    {result.pictures}"
        )
    return 0 if result.weights_identical else 1


def run_schedule(args: argparse.Namespace) -> int:
    try:
        if args.world_size < 1 or args.steps_per_epoch < 0:
            raise ValueError(
                f"--world-size must be >= 1 and --steps-per-epoch >= 0, got {args.world_size}, {args.steps_per_epoch}"
            )
        config = load_config(PretrainConfig, args.config, args.overrides)
        accum_steps = config.optim.accum_steps
        if args.steps_per_epoch:
            per_epoch = args.steps_per_epoch
        else:
            per_epoch = steps_per_epoch(
                len(build_dataset(config)), config.data.batch_size, args.world_size, accum_steps
            )
        total_batch = config.data.batch_size * args.world_size * accum_steps
        schedule = LRSchedule(config.schedule, peak_lr(config.optim, total_batch), per_epoch)
    except (ValueError, FileNotFoundError) as error:
        print(f"guidedmae schedule: error: {error}", file=sys.stderr)
        return 1
    warmup_end = max(schedule.warmup_steps - 1, 0)
    first, last = schedule.first_step, schedule.total_steps - 1
    rows = [
        ("schedule start (epoch 0)", 0),
        (f"end of warmup (epoch {config.schedule.warmup_epochs:g})", warmup_end),
        (f"this run's first step (epoch {config.schedule.start_epoch})", first),
        (f"this run's last step (epoch {config.schedule.total_epochs})", last),
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
    plot_schedule(
        schedule,
        out,
        title=f"{Path(args.config).name}: lr over the {config.schedule.total_epochs}-epoch schedule",
    )
    print(f"plot: {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pretrain` and `schedule` under the main command's sub-commands."""
    pretrain = subparsers.add_parser(
        "pretrain",
        help="pretrain a MultiMAE (also under torchrun --nproc_per_node N -m guidedmae pretrain ...)",
        description="Pretrain a MultiMAE from a YAML config. resume=auto continues the newest checkpoint "
        "in out_dir; model.init=PATH starts from official or own weights.",
    )
    pretrain.add_argument("config", help="YAML config, e.g. configs/pretrain/demo.yaml")
    pretrain.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    pretrain.set_defaults(func=run_pretrain)

    schedule = subparsers.add_parser(
        "schedule",
        help="print and plot a config's lr schedule, with the part the run covers",
    )
    schedule.add_argument("config", help="YAML config of a pretraining")
    schedule.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    schedule.add_argument("--out", default="lr.png", help="PNG of the curve (default lr.png)")
    schedule.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="processes the run will use (sets the total batch; default 1)",
    )
    schedule.add_argument(
        "--steps-per-epoch",
        type=int,
        default=0,
        help="use this instead of counting the data set (fast for large folders)",
    )
    schedule.set_defaults(func=run_schedule)
