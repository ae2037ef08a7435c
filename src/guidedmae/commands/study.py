"""`guidedmae study STUDY.yaml [key=value ...]`: run a study's plan and write its tables.

guidedmae study reference_cpu_quick                 # a shipped study, on this machine
guidedmae study reference_cpu --dry-run             # the plan, what is done, the power
guidedmae study reference_multimae_b --launcher slurm --partition gpu --gpus-per-node 8
guidedmae study runs/study/part-a runs/study/part-b --merge runs/study/merged   # parts run elsewhere
"""

import argparse

from guidedmae.study.merge import merge_studies
from guidedmae.study.runner import run_study

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    if args.merge:
        written = merge_studies([args.study, *args.overrides], args.merge)
        print(f"merged into {args.merge}: " + ", ".join(str(path) for path in written))
        return 0
    flags = {
        "launcher": args.launcher,
        "parallel": args.parallel,
        "partition": args.partition,
        "gpus_per_node": args.gpus_per_node,
        "nodes": args.nodes,
        "timeout_min": args.time_min,
    }
    overrides = [
        *args.overrides,
        *(f"launch.{key}={value}" for key, value in flags.items() if value is not None),
    ]
    return run_study(args.study, overrides, args.dry_run, args.redo)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `study`."""
    parser = subparsers.add_parser(
        "study",
        help="run a study: base pretraining, arms x seeds, evaluations; tables with spreads and paired CIs",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "study", help="a study YAML, a shipped study's name (guidedmae configs study) or a study folder"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted key=value overrides of the study, e.g. seeds=[0,1]"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, what is done and estimates")
    parser.add_argument("--redo", action="store_true", help="run again finished runs whose config changed")
    parser.add_argument(
        "--merge",
        metavar="OUT",
        help="merge the study folders given (parts of one study run with other seeds or base seeds, by the "
        "same code) into OUT: new, empty, or one of them",
    )
    parser.add_argument("--launcher", choices=("local", "slurm", "debug"), help="sets launch.launcher")
    parser.add_argument("--parallel", type=int, help="runs at once (sets launch.parallel)")
    parser.add_argument("--partition", help="Slurm partition (sets launch.partition)")
    parser.add_argument("--gpus-per-node", type=int, help="Slurm GPUs (and processes) per run and node")
    parser.add_argument("--nodes", type=int, help="Slurm nodes per run")
    parser.add_argument("--time-min", type=int, help="time limit of each run in minutes (launch.timeout_min)")
    parser.set_defaults(func=_run)
