"""Does the benchmark have room? For a study with an arm of random weights (arms[].random_init), per
downstream metric: how far the trained baseline stands from random weights, in the design's minimum
detectable effects (negative where random weights score better), and how far the best arm stands from
the metric's bound.

A metric separates encoders only when a trained one is far above random weights: a gap of at least
HEADROOM_MDES of its own MDEs (the power table's, at the study's units) is "room"; a metric below is
reported but should not be a study's primary one. The bound is 100 for percentages (accuracies, mIoU,
δ shares) and 0 for errors (RMSE, AbsRel, angles, losses).
"""

import math

from guidedmae.study.stats import paired_difference
from guidedmae.study.study_tables import StudyTables

__all__ = ["HEADROOM_MDES", "format_headroom", "headroom"]

HEADROOM_MDES = 5
LOWER_IS_BETTER = ("rmse", "absrel", "abs_rel", "angle", "loss")


def _bound(name: str) -> float:
    return 0.0 if any(part in name for part in LOWER_IS_BETTER) else 100.0


def headroom(tables: StudyTables, power_rows: list[dict]) -> list[dict]:
    """Per downstream metric: the baseline's gap to random weights (paired over units, with its 95%
    interval), that gap in MDEs, and the best arm's distance to the metric's bound."""
    if not tables.floor:
        return []
    mdes = {row["metric"]: row["mde"] for row in power_rows}
    baseline = next(iter(tables.controls.values()), None) if tables.controls else None
    rows = []
    for metric, by_arm in tables.values.items():
        if metric.startswith("pretrain:") or baseline is None or tables.floor not in by_arm:
            continue
        gap = paired_difference(by_arm.get(baseline, {}), by_arm[tables.floor])
        if gap is None:
            continue
        name, mde = metric.split(": ", 1)[-1], mdes.get(metric, math.nan)
        means = {arm: sum(v.values()) / len(v) for arm, v in by_arm.items() if v and arm != tables.floor}
        lower = _bound(name) == 0.0
        best = min(means.values()) if lower else max(means.values())
        # Signed toward the better direction: random weights beating the trained baseline is no room.
        gain = -gap["mean"] if lower else gap["mean"]
        in_mdes = gain / mde if mde and not math.isnan(mde) else math.nan
        rows.append(
            {
                "metric": metric,
                "floor": sum(by_arm[tables.floor].values()) / len(by_arm[tables.floor]),
                "baseline": baseline,
                "gap": gap["mean"],
                "low": gap["low"],
                "high": gap["high"],
                "mde": mde,
                "gap_in_mdes": in_mdes,
                "room": bool(in_mdes >= HEADROOM_MDES),
                "best": best,
                "to_bound": abs(_bound(name) - best),
            }
        )
    return rows


def format_headroom(rows: list[dict], floor: str) -> str:
    if not rows:
        return ""
    lines = [
        f"\nheadroom: the baseline against random weights ({floor}), paired over units [95% CI]; that gap in "
        f"the design's MDEs (room: at least {HEADROOM_MDES}); the best arm and its distance to the bound\n",
        "| metric | random weights | baseline − random weights | in MDEs | room | best arm | to the bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        interval = "" if row["low"] is None else f" [{row['low']:+.3g}, {row['high']:+.3g}]"
        mdes = "-" if math.isnan(row["gap_in_mdes"]) else f"{row['gap_in_mdes']:.1f}"
        lines.append(
            f"| {row['metric']} | {row['floor']:.4g} | {row['gap']:+.3g}{interval} | {mdes} | "
            f"{'yes' if row['room'] else 'no'} | {row['best']:.4g} | {row['to_bound']:.3g} |"
        )
    return "\n".join(lines) + "\n"
