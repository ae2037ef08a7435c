"""A study's tables: every metric of every arm over replicates, each arm's paired difference to its
control (the study's baseline, or the arm's matched control) with a verdict, and the power of the design.

    tables = collect(study, runs)          # from the runs' results.json
    write_tables(tables, study_dir)        # study.md, study.json and the figures

A metric is named `<source>: <name>`: the source is `pretrain` (the arm's own run: the held-out losses
under fixed random masks, fixed block masks and its own strategy, and the premise) or an evaluation
(`probe`, `probe-f0.1` for a training fraction). An evaluation run at several fractions also gives the
low-data contrast `<evaluation> f<small>-f<large>: <name>`, the value at the smallest fraction minus the
value at the largest: its paired difference to the control is the interaction (does the arm gain more
with little data?). A cell is `mean ± sd (n)` over the replicates that finished. The statistics are those
of guidedmae.study.stats; per metric, the p values of the arms compared (those with a p value; sanity arms,
checks of the set-up, stand alone) are Holm-corrected, and the verdict is "different" (corrected p < 0.05),
"equivalent ±m" (corrected TOST p < 0.05 for the study's margin m) or "inconclusive". The power table pools
the spread of the compared arms' differences only.
"""

import json
import math
from pathlib import Path

from guidedmae.engine.job import RESULTS  # noqa: E402
from guidedmae.infra.files import atomic_write, write_json  # noqa: E402
from guidedmae.infra.run_log import METRICS, read_metrics  # noqa: E402
from guidedmae.study.figures import curves_figure, differences_figure, low_data_figure  # noqa: E402
from guidedmae.study.headroom import format_headroom, headroom  # noqa: E402
from guidedmae.study.plan import Run, StudyConfig  # noqa: E402
from guidedmae.study.stats import (  # noqa: E402
    ALPHA,
    POWER,
    equivalence_p,
    holm,
    mde,
    mean_sd,
    paired_difference,
    seeds_needed,
)
from guidedmae.study.study_tables import StudyTables  # noqa: E402

__all__ = ["StudyTables", "collect", "comparisons", "format_markdown", "format_power", "write_tables"]

TABLES_MD, TABLES_JSON = "study.md", "study.json"
LOW_DATA_PNG, CURVES_PNG, DIFFERENCES_PNG = "low_data.png", "pretraining_curves.png", "paired_differences.png"


def _source(run: Run) -> str:
    if not run.evaluation:
        return "pretrain"
    return run.evaluation if run.fraction == 1 else f"{run.evaluation}-f{run.fraction:g}"


def _add_contrasts(tables: StudyTables) -> None:
    """The low-data contrasts: per evaluation with several fractions, smallest minus largest."""
    for evaluation, sources in tables.fractions.items():
        if len(sources) < 2:
            continue
        small, large = min(sources), max(sources)
        prefix = (f"{sources[small]}: ", f"{sources[large]}: ")
        for metric in [m for m in tables.values if m.startswith(prefix[0])]:
            name = metric[len(prefix[0]) :]
            at_small, at_large = tables.values[metric], tables.values.get(prefix[1] + name, {})
            contrast = {}
            for arm, values in at_small.items():
                shared = set(values) & set(at_large.get(arm, {}))
                if shared:
                    contrast[arm] = {r: values[r] - at_large[arm][r] for r in sorted(shared)}
            if contrast:
                tables.values[f"{evaluation} f{small:g}-f{large:g}: {name}"] = contrast


def collect(study: StudyConfig, runs: list[Run]) -> StudyTables:
    """The metrics of every finished run of an arm (the base is the arms' common start, not a column)."""
    replicates = list(dict.fromkeys(run.replicate for run in runs if run.arm))
    tables = StudyTables(
        [arm.name for arm in study.arms],
        replicates,
        study.controls(),
        dict(study.margins),
        {arm.name for arm in study.arms if arm.sanity},
        next((arm.name for arm in study.arms if arm.random_init), ""),
    )
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
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                metric = tables.values.setdefault(f"{source}: {name}", {})
                metric.setdefault(run.arm, {})[run.replicate] = float(value)
        if not run.evaluation:
            losses = {r["step"]: r["loss"] for r in read_metrics(run.out_dir() / METRICS) if "loss" in r}
            tables.curves.setdefault(run.arm, {})[run.replicate] = losses
    _add_contrasts(tables)
    return tables


def _verdict(difference: dict | None, margin: float | None) -> str:
    if difference is None or difference["p_holm"] is None:
        return "-"
    if difference["p_holm"] < ALPHA:
        return "different"
    if margin is not None and difference["tost_p_holm"] is not None and difference["tost_p_holm"] < ALPHA:
        return f"equivalent ±{margin:g}"
    return "inconclusive"


def comparisons(tables: StudyTables) -> dict[str, dict[str, dict | None]]:
    """metric -> arm -> its paired difference to its control (guidedmae.study.stats.paired_difference)
    with p_holm, tost_p and tost_p_holm (None without a margin) and the verdict."""
    result = {}
    for metric, by_arm in tables.values.items():
        margin = tables.margin(metric)
        differences = {
            arm: paired_difference(by_arm.get(arm, {}), by_arm.get(control, {}))
            for arm, control in tables.controls.items()
        }
        tost = {
            arm: equivalence_p(d, margin) if margin is not None else None for arm, d in differences.items()
        }
        family = [arm for arm in differences if arm not in tables.sanity]
        p = {arm: None if difference is None else difference["p"] for arm, difference in differences.items()}
        p_holm = holm({arm: p[arm] for arm in family})
        tost_holm = holm({arm: tost[arm] for arm in family})
        for arm in tables.sanity & set(differences):  # a check of the set-up stands alone
            p_holm[arm], tost_holm[arm] = p[arm], tost[arm]
        for arm, difference in differences.items():
            if difference is not None:
                difference.update(p_holm=p_holm[arm], tost_p=tost[arm], tost_p_holm=tost_holm[arm])
                difference["verdict"] = _verdict(difference, margin)
        result[metric] = differences
    return result


def power(tables: StudyTables, compared: dict[str, dict[str, dict | None]]) -> list[dict]:
    """Per metric: the sd of the paired differences' units (pooled over the compared arms, sanity arms
    left out), the units they have, the minimum detectable effect at 80% power (alpha 0.05 over the arms
    compared on the metric, as Holm's first step) and, with a margin, the units (seeds, or bases) that
    would detect a difference of the margin."""
    rows = []
    for metric, differences in compared.items():
        found = [
            d
            for arm, d in differences.items()
            if arm not in tables.sanity and d is not None and d["sd"] is not None
        ]
        if not found:
            continue
        sd = math.sqrt(sum(d["sd"] ** 2 for d in found) / len(found))
        n = min(d["n"] for d in found)
        margin = tables.margin(metric)
        rows.append(
            {
                "metric": metric,
                "sd": sd,
                "n": n,
                "comparisons": len(found),
                "mde": mde(sd, n, len(found)),
                "margin": margin,
                "needed": seeds_needed(sd, margin, len(found)) if margin is not None else None,
            }
        )
    return rows


def _cell(values: dict[str, float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_sd(list(values.values()))
    spread = "" if math.isnan(sd) else f" ± {sd:.3g}"
    return f"{mean:.4g}{spread} ({len(values)})"


def _difference_cell(difference: dict | None) -> str:
    if difference is None:
        return "-"
    if difference["low"] is None:
        return f"{difference['mean']:+.3g} (n={difference['n']})"
    return (
        f"{difference['mean']:+.3g} [{difference['low']:+.3g}, {difference['high']:+.3g}] sd {difference['sd']:.2g}"
        f"<br>p {difference['p_holm']:.2g} {difference['verdict']}"
    )


def format_power(tables: StudyTables, compared: dict | None = None) -> str:
    """The power table: what the design detects, and the seeds a margin needs."""
    rows = power(tables, compared if compared is not None else comparisons(tables))
    lines = [
        f"power: sd of the paired differences' units (pooled over the compared arms, sanity arms left out), "
        f"units n, arms compared k, minimum detectable effect at {POWER:.0%} power (alpha {ALPHA} / k), the "
        "study's margin and the units that detect it\n",
        "| metric | sd | n | k | MDE | margin | units for the margin |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        margin = "-" if row["margin"] is None else f"{row['margin']:g}"
        needed = "-" if row["margin"] is None else str(row["needed"] or "> 1000")
        lines.append(
            f"| {row['metric']} | {row['sd']:.3g} | {row['n']} | {row['comparisons']} | {row['mde']:.3g} | "
            f"{margin} | {needed} |"
        )
    return "\n".join(lines) + "\n"


def format_markdown(tables: StudyTables, per_seed: bool = False, compared: dict | None = None) -> str:
    """One row per metric, one column per arm; then the paired differences with verdicts; then power."""
    arms = tables.arms
    header = "| metric | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms)
    rows = [
        f"| {metric} | " + " | ".join(_cell(by_arm.get(arm, {})) for arm in arms) + " |"
        for metric, by_arm in tables.values.items()
    ]
    parts = [f"mean ± sd (n) over replicates {', '.join(tables.replicates)}\n", header, *rows]
    others = list(tables.controls)
    compared = compared if compared is not None else comparisons(tables)
    if others:
        compared_arms = [arm for arm in others if arm not in tables.sanity]
        sanity = f" ({', '.join(sorted(tables.sanity))}: sanity checks, uncorrected)" if tables.sanity else ""
        parts += [
            "\npaired difference to the control: mean [95% CI, Student t over units] sd of the units; "
            f"p Holm-corrected per metric over those of the {len(compared_arms)} compared arms that have one"
            f"{sanity}; verdict (equivalence: TOST within the study's margin)\n",
            "| metric | " + " | ".join(others) + " |\n|---|" + "---|" * len(others),
            "| (control) | " + " | ".join(tables.controls.values()) + " |",
        ]
        for metric, differences in compared.items():
            cells = [_difference_cell(differences[arm]) for arm in others]
            parts.append(f"| {metric} | " + " | ".join(cells) + " |")
        parts.append("\n" + format_power(tables, compared))
        parts.append(format_headroom(headroom(tables, power(tables, compared)), tables.floor))
    if per_seed:
        parts += [
            "\nper replicate\n",
            "| metric | arm | " + " | ".join(tables.replicates) + " |",
            "|---|---|" + "---|" * len(tables.replicates),
        ]
        for metric, by_arm in tables.values.items():
            for arm, values in by_arm.items():
                cells = [f"{values[r]:.4g}" if r in values else "-" for r in tables.replicates]
                parts.append(f"| {metric} | {arm} | " + " | ".join(cells) + " |")
    if tables.missing:
        parts.append(f"\nnot finished ({len(tables.missing)}): {', '.join(tables.missing)}")
    return "\n".join(parts) + "\n"


def _as_json(tables: StudyTables, compared: dict) -> dict:
    metrics: dict[str, dict[str, dict]] = {}
    for metric, by_arm in tables.values.items():
        metrics[metric] = {}
        for arm, values in by_arm.items():
            mean, sd = mean_sd(list(values.values()))
            metrics[metric][arm] = {
                "values": values,
                "mean": mean,
                "std": None if math.isnan(sd) else sd,
                "n": len(values),
            }
    return {
        "arms": tables.arms,
        "replicates": tables.replicates,
        "controls": tables.controls,
        "margins": tables.margins,
        "alpha": ALPHA,
        "metrics": metrics,
        "differences": compared,
        "power": power(tables, compared),
        "headroom": headroom(tables, power(tables, compared)),
        "missing": tables.missing,
    }


def write_tables(tables: StudyTables, study_dir: Path) -> list[Path]:
    """study.md, study.json and the figures, atomically, in the study folder."""
    compared = comparisons(tables)
    markdown = format_markdown(tables, compared=compared)
    written = [
        atomic_write(study_dir / TABLES_MD, lambda file: file.write(markdown.encode())),
        write_json(study_dir / TABLES_JSON, _as_json(tables, compared)),
    ]
    figures = (
        low_data_figure(tables, study_dir / LOW_DATA_PNG),
        differences_figure(tables, compared, study_dir / DIFFERENCES_PNG),
        curves_figure(tables, study_dir / CURVES_PNG),
    )
    return written + [path for path in figures if path]
