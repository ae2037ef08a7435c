"""`guidedmae schedule CONFIG [key=value ...]`: print and plot a config's lr schedule, and the run's part of it.

guidedmae schedule continue_100e --world-size 8 --steps-per-epoch 5000
"""

import argparse
from pathlib import Path

from guidedmae.commands.common import OVERRIDES_HELP
from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.pretrain import pretraining_set
from guidedmae.engine.start import run_schedule, steps_per_epoch
from guidedmae.infra.files import check_output
from guidedmae.infra.schedule import plot_schedule

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    if args.world_size < 1 or args.steps_per_epoch < 0:
        raise ValueError(
            f"--world-size must be >= 1 and --steps-per-epoch >= 0, got {args.world_size}, {args.steps_per_epoch}"
        )
    check_output(args.out, [args.config])
    config = load_config(PretrainConfig, args.config, args.overrides)
    accum_steps = config.optim.accum_steps
    per_epoch = args.steps_per_epoch or steps_per_epoch(
        len(pretraining_set(config)), config.data.batch_size, args.world_size, accum_steps
    )
    total_batch = config.total_batch(args.world_size)
    schedule = run_schedule(config, args.world_size, per_epoch)
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
    """Register `schedule`."""
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
    parser.set_defaults(func=_run)
