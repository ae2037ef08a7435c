"""`guidedmae report RUN_DIR...`: the final metrics of several runs as one markdown table, and their curves.

A run folder holds metrics.jsonl (one JSON object per logged step, see guidedmae.infra.run_log) and,
for fine-tuning and evaluation runs, results.json ({"metrics": {name: value}, ...}: the metrics of
the final evaluation). The table has one row per metric and one column per run, like the original report's
summary table: a run's final metrics are those of results.json, then the last logged value of every
other scalar but the lr (for pretraining runs: the total and per-modality losses), averaged over the
last `last` logged steps to tame the noise of small batches. The figure plots every scalar against the
optimizer step, one panel per metric, one line per run.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from guidedmae.infra.files import read_json
from guidedmae.infra.run_log import METRICS, read_metrics

RESULTS = "results.json"
# Keys of metrics.jsonl lines that are bookkeeping, not metrics; the lr is plotted but not tabulated.
NOT_METRICS = ("step", "epoch", "event", "message", "samples_per_s", "time")
NOT_TABULATED = ("lr",)
MAX_PANELS = 16


@dataclass
class RunSummary:
    name: str
    final: dict[str, float] = field(default_factory=dict)  # metric -> final value, table order
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> {step: value}


def _as_float(value: object) -> float | None:
    """A logged scalar as a float (the logger writes non-finite floats as "nan" / "inf"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def _read_curves(path: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from a metrics.jsonl; a step logged twice (a resumed run) keeps its later value."""
    curves: dict[str, dict[int, float]] = {}
    for record in read_metrics(path):
        if "event" in record or not isinstance(record.get("step"), int):
            continue
        for key, value in record.items():
            number = _as_float(value)
            if key not in NOT_METRICS and number is not None:
                curves.setdefault(key, {})[record["step"]] = number
    return curves


def read_run(run_dir: str | Path, last: int = 1) -> RunSummary:
    """The final metrics and curves of one run folder."""
    run_dir = Path(run_dir)
    if last < 1:
        raise ValueError(f"--last={last}; expected at least 1 logged step")
    metrics_path, results_path = run_dir / METRICS, run_dir / RESULTS
    if not metrics_path.is_file() and not results_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {METRICS} or {RESULTS}; is it a guidedmae run folder?")
    summary = RunSummary(run_dir.name or str(run_dir))
    if results_path.is_file():
        results = read_json(results_path)
        if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
            raise ValueError(f"{results_path}: expected a 'metrics' object of name -> value")
        for key, value in results["metrics"].items():
            number = _as_float(value)
            if number is not None:
                summary.final[key] = number
    if metrics_path.is_file():
        summary.curves = _read_curves(metrics_path)
        for key in sorted(summary.curves):
            # eval/<name> is logged at each evaluation; results.json already holds the final <name>.
            repeated = key.startswith("eval/") and key.removeprefix("eval/") in summary.final
            if key not in summary.final and key not in NOT_TABULATED and not repeated:
                values = [summary.curves[key][step] for step in sorted(summary.curves[key])[-last:]]
                summary.final[key] = sum(values) / len(values)
    return summary


def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def summary_table(runs: list[RunSummary]) -> str:
    """Markdown table: one row per metric (in first-seen order), one column per run."""
    metrics = list(dict.fromkeys(key for run in runs for key in run.final))
    lines = ["| metric | " + " | ".join(run.name for run in runs) + " |", "|---|" + "---:|" * len(runs)]
    for metric in metrics:
        cells = [_format_value(run.final.get(metric)) for run in runs]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_figure(runs: list[RunSummary]) -> Image.Image:
    """One panel per metric (the first MAX_PANELS in table order), one line per run, against the step."""
    metrics = list(dict.fromkeys(key for run in runs for key in run.curves))[:MAX_PANELS]
    if not metrics:
        raise ValueError("no logged curves in " + ", ".join(run.name for run in runs))
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    # No pyplot: no global backend to set (a notebook importing this keeps its own), no window.
    figure = Figure(figsize=(4 * columns, 3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for run in runs:
            points = sorted(run.curves.get(metric, {}).items())
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=run.name)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if "loss" in metric and all(v > 0 for run in runs for v in run.curves.get(metric, {}).values()):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
