"""The statistics of a study's tables: paired differences over replicates, their family-wise correction,
equivalence tests and power.

A replicate is one seed of an arm (`s<seed>`), or with several bases one (base, seed) pair (`b<base>-s<seed>`).
Differences are paired: d_r = arm_r - baseline_r over the replicates both finished. With several bases,
the replicates of one base share it, so the units of the test are the bases (the mean d of each base);
otherwise every replicate is a unit. Over n units with mean m and standard deviation s:
    interval   m ± t(1 - alpha/2, n - 1) s / sqrt(n)                        (Student t, 95%)
    p          two-sided paired t test of m = 0; Holm's step-down correction over the arms of a metric
    TOST       equivalence within ±margin: p = max of the one-sided tests of m <= -margin and m >= margin
    MDE        (t(1 - alpha/2, n - 1) + t(power, n - 1)) s / sqrt(n): the smallest difference found with
               that power (80%), at alpha / k for k arms compared (the first step of Holm's correction)
"""

import math
from collections import defaultdict

from scipy import stats

__all__ = [
    "ALPHA",
    "POWER",
    "equivalence_p",
    "holm",
    "mde",
    "mean_sd",
    "paired_difference",
    "seeds_needed",
    "unit_of",
]

ALPHA = 0.05
POWER = 0.8


def unit_of(replicate: object) -> str:
    """The independent unit a replicate belongs to: its base with several bases, else itself."""
    replicate = str(replicate)
    return replicate.split("-")[0] if replicate.startswith("b") else replicate


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN below two values)."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, sd


def paired_difference(arm: dict, baseline: dict) -> dict | None:
    """Mean of arm - baseline over the replicates both have, with its 95% interval and p value (see the
    module docstring); None without a shared replicate. Keys: mean, low, high, sd (of the units), n (units),
    replicates, p, excludes_zero (uncorrected)."""
    shared = sorted(set(arm) & set(baseline), key=str)
    if not shared:
        return None
    by_unit = defaultdict(list)
    for replicate in shared:
        by_unit[unit_of(replicate)].append(arm[replicate] - baseline[replicate])
    units = [sum(values) / len(values) for values in by_unit.values()]
    if len(units) == 1:  # one base: the interval is over its replicates, conditional on that base
        units = by_unit.popitem()[1]
    mean, sd = mean_sd(units)
    n = len(units)
    result = {"mean": mean, "sd": None, "n": n, "replicates": len(shared), "low": None, "high": None}
    if n < 2:
        return {**result, "p": None, "excludes_zero": False}
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    error = sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / error, n - 1)) if error > 0 else float(mean == 0)
    return {
        **result,
        "sd": sd,
        "low": mean - half,
        "high": mean + half,
        "p": p,
        "excludes_zero": abs(mean) > half,
    }


def equivalence_p(difference: dict | None, margin: float) -> float | None:
    """TOST p value that the true difference lies within ±margin (None without an interval)."""
    if difference is None or difference["sd"] is None:
        return None
    mean, sd, n = difference["mean"], difference["sd"], difference["n"]
    if sd == 0:
        return 0.0 if abs(mean) < margin else 1.0
    error = sd / math.sqrt(n)
    lower = stats.t.sf((mean + margin) / error, n - 1)  # H0: difference <= -margin
    upper = stats.t.cdf((mean - margin) / error, n - 1)  # H0: difference >= +margin
    return float(max(lower, upper))


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjusted p values (family-wise error), for the p values given (None stays None)."""
    ranked = sorted((p, key) for key, p in p_values.items() if p is not None)
    adjusted, running = dict.fromkeys(p_values), 0.0
    for rank, (p, key) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[key] = running
    return adjusted


def mde(sd: float, n: int, comparisons: int = 1, power: float = POWER) -> float:
    """The smallest true difference a paired t test over n units of this sd detects with `power`, at
    ALPHA / comparisons two-sided (NaN below 2 units)."""
    if n < 2 or sd is None or math.isnan(sd):
        return math.nan
    alpha = ALPHA / max(1, comparisons)
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def seeds_needed(
    sd: float, target: float, comparisons: int = 1, power: float = POWER, most: int = 1000
) -> int | None:
    """The fewest units (seeds, or bases) whose MDE is at most `target`; None beyond `most`."""
    for n in range(2, most + 1):
        if mde(sd, n, comparisons, power) <= target:
            return n
    return None
