"""`guidedmae report RUN_DIR... | STUDY_DIR`: final metrics as a markdown table, and the curves.

guidedmae report runs/demo
guidedmae report runs/study_cpu --per-seed
"""

import argparse
from pathlib import Path

from guidedmae.infra.files import check_output
from guidedmae.infra.run_log import METRICS
from guidedmae.pictures import save_png
from guidedmae.report import RESULTS, curves_figure, read_run, summary_table
from guidedmae.study.plan import STUDY_FILE
from guidedmae.study.runner import load_planned
from guidedmae.study.tables import collect, format_markdown, write_tables

__all__ = ["add_parser"]


def _default_figure_path(run_dirs: list[Path]) -> Path:
    """RUN_DIR/curves.png for one run; report.png in the runs' common folder for several."""
    if len(run_dirs) == 1:
        return run_dirs[0] / "curves.png"
    parents = {path.resolve().parent for path in run_dirs}
    return (parents.pop() if len(parents) == 1 else Path.cwd()) / "report.png"


def _run_report(args: argparse.Namespace) -> int:
    if len(args.runs) == 1 and (Path(args.runs[0]) / STUDY_FILE).is_file():
        return _study_report(Path(args.runs[0]), args.per_seed)
    run_dirs = [Path(path) for path in args.runs]
    runs = [read_run(path, args.last) for path in run_dirs]
    print(summary_table(runs))
    if any(run.curves for run in runs):
        out = args.out or _default_figure_path(run_dirs)
        check_output(out, [folder / name for folder in run_dirs for name in (METRICS, RESULTS)])
        path = save_png(curves_figure(runs), out)
        print(f"\ncurves: {path}")
    return 0


def _study_report(study_dir: Path, per_seed: bool) -> int:
    """A study folder: its tables (means, spreads, paired differences) and figures, written anew."""
    study, runs = load_planned(study_dir)
    tables = collect(study, runs)
    written = write_tables(tables, study_dir)
    print(format_markdown(tables, per_seed))
    print("written: " + ", ".join(str(path) for path in written))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `report RUN_DIR...`."""
    parser = subparsers.add_parser(
        "report", help="final metrics of runs as a markdown table, and their curves"
    )
    parser.add_argument("runs", nargs="+", help="run folders (holding metrics.jsonl and/or results.json)")
    parser.add_argument(
        "--out", help="PNG of the curves (default: RUN_DIR/curves.png, or report.png beside the runs)"
    )
    parser.add_argument(
        "--last", type=int, default=1, help="average logged scalars over the last N logged steps (default 1)"
    )
    parser.add_argument("--per-seed", action="store_true", help="a study folder: also every seed's value")
    parser.set_defaults(func=_run_report)
