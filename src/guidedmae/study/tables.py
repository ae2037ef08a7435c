"""A study's tables: every metric of every arm over seeds, and each arm's paired difference to the baseline.

    tables = collect(study, runs)          # from the runs' results.json
    write_tables(tables, study_dir)        # study.md, study.json, low_data.png, pretraining_curves.png

A metric is named `<source>: <name>`: the source is `pretrain` (the arm's own run: the held-out losses
under fixed random masks and under its own strategy) or an evaluation (`probe`, `probe-f0.1` for a
training fraction). A cell is `mean ± std (n)` over the seeds that finished (sample std, ddof 1). The
paired difference of an arm to the baseline uses the seeds both finished: d_k = arm_k - baseline_k,
mean(d) with a 95% confidence interval mean(d) ± t(0.975, n - 1) · std(d) / sqrt(n) (Student t);
`*` marks an interval that excludes zero. With fewer than 2 paired seeds there is no interval.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from guidedmae.engine.logging import METRICS, read_metrics  # noqa: E402
from guidedmae.engine.run import RESULTS  # noqa: E402
from guidedmae.files import atomic_write, write_json  # noqa: E402
from guidedmae.study.plan import Run, StudyConfig  # noqa: E402

__all__ = ["StudyTables", "collect", "format_markdown", "paired_difference", "write_tables"]

CONFIDENCE = 0.95
TABLES_MD, TABLES_JSON = "study.md", "study.json"
LOW_DATA_PNG, CURVES_PNG = "low_data.png", "pretraining_curves.png"
# The metric each kind of evaluation is read by in the low-data figure.
HEADLINE = ("top1", "miou", "rmse")


@dataclass
class StudyTables:
    arms: list[str]
    seeds: list[int]
    baseline: str
    values: dict[str, dict[str, dict[int, float]]] = field(
        default_factory=dict
    )  # metric -> arm -> seed -> value
    fractions: dict[str, dict[float, str]] = field(default_factory=dict)  # evaluation -> fraction -> source
    curves: dict[str, dict[int, dict[int, float]]] = field(
        default_factory=dict
    )  # arm -> seed -> step -> loss
    missing: list[str] = field(default_factory=list)  # runs without results


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std


def paired_difference(arm: dict[int, float], baseline: dict[int, float]) -> dict | None:
    """Mean of arm - baseline over the seeds both have, with its Student-t confidence interval."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        return None
    differences = [arm[seed] - baseline[seed] for seed in seeds]
    mean, std = _mean_std(differences)
    if len(seeds) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(seeds), "excludes_zero": False}
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(seeds) - 1)) * std / math.sqrt(len(seeds))
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "n": len(seeds),
        "excludes_zero": abs(mean) > half,
    }


def _source(run: Run) -> str:
    if not run.evaluation:
        return "pretrain"
    return run.evaluation if run.fraction == 1 else f"{run.evaluation}-f{run.fraction:g}"


def collect(study: StudyConfig, runs: list[Run]) -> StudyTables:
    """The metrics of every finished run of an arm (the base is the arms' common start, not a column)."""
    tables = StudyTables([arm.name for arm in study.arms], list(study.seeds), study.baseline_arm)
    for run in runs:
        if not run.arm:
            continue
        source = _source(run)
        if run.evaluation:
            tables.fractions.setdefault(run.evaluation, {})[run.fraction] = source
        results = run.out_dir() / RESULTS
        if not results.is_file():
            tables.missing.append(run.name)
            continue
        for name, value in json.loads(results.read_text()).get("metrics", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                tables.values.setdefault(f"{source}: {name}", {}).setdefault(run.arm, {})[run.seed] = float(
                    value
                )
        if not run.evaluation:
            losses = {r["step"]: r["loss"] for r in read_metrics(run.out_dir() / METRICS) if "loss" in r}
            tables.curves.setdefault(run.arm, {})[run.seed] = losses
    return tables


def _cell(values: dict[int, float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(list(values.values()))
    spread = "" if math.isnan(std) else f" ± {std:.3g}"
    return f"{mean:.4g}{spread} ({len(values)})"


def _difference_cell(difference: dict | None) -> str:
    if difference is None:
        return "-"
    if difference["low"] is None:
        return f"{difference['mean']:+.3g} (n=1)"
    mark = " *" if difference["excludes_zero"] else ""
    return f"{difference['mean']:+.3g} [{difference['low']:+.3g}, {difference['high']:+.3g}]{mark}"


def format_markdown(tables: StudyTables, per_seed: bool = False) -> str:
    """The seed's layout: one row per metric, one column per arm; then the paired differences."""
    arms = tables.arms
    header = "| metric | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms)
    rows = [
        f"| {metric} | " + " | ".join(_cell(by_arm.get(arm, {})) for arm in arms) + " |"
        for metric, by_arm in tables.values.items()
    ]
    parts = [f"mean ± std (seeds) over seeds {tables.seeds}\n", header, *rows]
    others = [arm for arm in arms if arm != tables.baseline]
    if others:
        parts += [
            f"\npaired difference to {tables.baseline}: mean [95% CI over seeds, Student t]; * = the interval "
            "excludes 0\n",
            "| metric | " + " | ".join(others) + " |\n|---|" + "---|" * len(others),
        ]
        for metric, by_arm in tables.values.items():
            base = by_arm.get(tables.baseline, {})
            cells = [_difference_cell(paired_difference(by_arm.get(arm, {}), base)) for arm in others]
            parts.append(f"| {metric} | " + " | ".join(cells) + " |")
    if per_seed:
        parts += [
            "\nper seed\n",
            "| metric | arm | " + " | ".join(f"seed {s}" for s in tables.seeds) + " |",
            "|---|---|" + "---|" * len(tables.seeds),
        ]
        for metric, by_arm in tables.values.items():
            for arm, values in by_arm.items():
                cells = [f"{values[s]:.4g}" if s in values else "-" for s in tables.seeds]
                parts.append(f"| {metric} | {arm} | " + " | ".join(cells) + " |")
    if tables.missing:
        parts.append(f"\nnot finished ({len(tables.missing)}): {', '.join(tables.missing)}")
    return "\n".join(parts) + "\n"


def _as_json(tables: StudyTables) -> dict:
    metrics = {}
    for metric, by_arm in tables.values.items():
        metrics[metric] = {}
        for arm, values in by_arm.items():
            mean, std = _mean_std(list(values.values()))
            metrics[metric][arm] = {
                "values": {str(s): v for s, v in values.items()},
                "mean": mean,
                "std": None if math.isnan(std) else std,
                "n": len(values),
            }
    differences = {
        metric: {
            arm: paired_difference(by_arm.get(arm, {}), by_arm.get(tables.baseline, {}))
            for arm in tables.arms
            if arm != tables.baseline
        }
        for metric, by_arm in tables.values.items()
    }
    return {
        "arms": tables.arms,
        "seeds": tables.seeds,
        "baseline": tables.baseline,
        "confidence": CONFIDENCE,
        "metrics": metrics,
        "differences": differences,
        "missing": tables.missing,
    }


def _save_figure(figure, path: Path) -> Path:
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return path


def _low_data_figure(tables: StudyTables, path: Path) -> Path | None:
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
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (evaluation, name, sources) in zip(axes[0], panels):
        for arm in tables.arms:
            points = []
            for fraction in sorted(sources):
                values = list(tables.values.get(f"{sources[fraction]}: {name}", {}).get(arm, {}).values())
                if values:
                    mean, std = _mean_std(values)
                    points.append((fraction, mean, 0.0 if math.isnan(std) else std))
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


def _curves_figure(tables: StudyTables, path: Path) -> Path | None:
    if not tables.curves:
        return None
    figure, ax = plt.subplots(figsize=(6.5, 4))
    for index, (arm, seeds) in enumerate(tables.curves.items()):
        for seed, losses in seeds.items():
            steps = sorted(losses)
            ax.plot(
                steps,
                [losses[s] for s in steps],
                color=f"C{index}",
                alpha=0.7,
                lw=1,
                label=arm if seed == min(seeds) else None,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("pretraining loss of every arm (one line per seed)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)


def write_tables(tables: StudyTables, study_dir: Path) -> list[Path]:
    """study.md, study.json and the figures, atomically, in the study folder."""
    written = [
        atomic_write(study_dir / TABLES_MD, lambda file: file.write(format_markdown(tables).encode())),
        write_json(study_dir / TABLES_JSON, _as_json(tables)),
    ]
    written += [
        path
        for path in (
            _low_data_figure(tables, study_dir / LOW_DATA_PNG),
            _curves_figure(tables, study_dir / CURVES_PNG),
        )
        if path
    ]
    return written
