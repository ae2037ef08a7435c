"""A study's figures: the low-data curves, every replicate's paired difference to its control, and the
pretraining loss of every arm, each written atomically as a PNG (`tables`: a study.tables.StudyTables)."""

import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from guidedmae.infra.files import atomic_write
from guidedmae.study.stats import mean_sd
from guidedmae.study.study_tables import StudyTables

__all__ = ["curves_figure", "differences_figure", "low_data_figure"]

HEADLINE = ("top1", "miou", "rmse")  # the metric each kind of evaluation is read by in the low-data figure


def _figure(rows: int, columns: int, size: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure of its own (no pyplot: importing this module changes no backend) and its axes grid."""
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _save_figure(figure: Figure, path: Path) -> Path:
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    return path


def low_data_figure(tables: StudyTables, path: Path) -> Path | None:
    panels = []  # (evaluation, metric name, {fraction: source})
    for evaluation, sources in tables.fractions.items():
        if len(sources) < 2:
            continue
        for name in HEADLINE:
            if any(f"{source}: {name}" in tables.values for source in sources.values()):
                panels.append((evaluation, name, sources))
                break
    if not panels:
        return None
    figure, axes = _figure(1, len(panels), (5 * len(panels), 3.8))
    for ax, (evaluation, name, sources) in zip(axes[0], panels):
        for arm in tables.arms:
            points = []
            for fraction in sorted(sources):
                values = list(tables.values.get(f"{sources[fraction]}: {name}", {}).get(arm, {}).values())
                if values:
                    mean, sd = mean_sd(values)
                    points.append((fraction, mean, 0.0 if math.isnan(sd) else sd))
            if points:
                xs, ys, errors = zip(*points)
                ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("training fraction")
        ax.set_ylabel(name)
        ax.set_title(evaluation)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)


def differences_figure(tables: StudyTables, compared: dict, path: Path) -> Path | None:
    """Per metric, every replicate's paired difference to its control (dots) and the 95% interval (bar)."""
    others = list(tables.controls)
    metrics = [m for m, d in compared.items() if any(x is not None for x in d.values())]
    if not others or not metrics:
        return None
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = _figure(rows, columns, (4.2 * columns, rows * (1.4 + 0.3 * len(others))))
    for ax, metric in zip(axes.flat, metrics):
        by_arm = tables.values[metric]
        for row, arm in enumerate(others):
            values, base = by_arm.get(arm, {}), by_arm.get(tables.controls[arm], {})
            dots = [values[r] - base[r] for r in values if r in base]
            ax.plot(dots, [row] * len(dots), "o", color="C0", alpha=0.6, ms=3)
            difference = compared[metric][arm]
            if difference is not None and difference["low"] is not None:
                ax.plot([difference["low"], difference["high"]], [row, row], color="C3", lw=2)
        ax.axvline(0, color="grey", lw=0.8)
        margin = tables.margin(metric)
        if margin is not None:
            for side in (-margin, margin):
                ax.axvline(side, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(others)), [f"{arm} - {tables.controls[arm]}" for arm in others], fontsize=7)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    figure.suptitle("paired differences to the control: replicates (dots), 95% CI (bar)", fontsize=9)
    figure.tight_layout()
    return _save_figure(figure, path)


def curves_figure(tables: StudyTables, path: Path) -> Path | None:
    if not tables.curves:
        return None
    figure, axes = _figure(1, 1, (6.5, 4))
    ax = axes[0][0]
    for index, (arm, replicates) in enumerate(tables.curves.items()):
        for number, losses in enumerate(replicates.values()):
            steps = sorted(losses)
            ax.plot(
                steps,
                [losses[s] for s in steps],
                color=f"C{index}",
                alpha=0.7,
                lw=1,
                label=arm if number == 0 else None,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("pretraining loss of every arm (one line per replicate)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)
