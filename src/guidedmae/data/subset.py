"""Class-balanced, seeded subsets of a labelled data set: the low-data regime (e.g. 1% of ImageNet).

    indices = balanced_subset(labels, seed=0, fraction=0.01)   # each class keeps 1% of its samples
    indices = balanced_subset(labels, seed=0, per_class=13)    # exactly 13 samples of every class

The choice depends only on (labels, seed, request): every process and every rerun picks the same
samples, and a smaller request with the same seed picks a subset of a larger one's (each class's
samples are ranked once by a seeded permutation and the first ones are taken).
"""

import numpy as np
from numpy.typing import ArrayLike


def _ranked_by_class(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """{class: its sample indices in a seeded random order}; the order of a class depends only on
    the seed and the class's own samples."""
    ranked: dict[int, np.ndarray] = {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, int(label)])
        ranked[int(label)] = members[rng.permutation(len(members))]
    return ranked


def balanced_subset(
    labels: ArrayLike, seed: int, fraction: float | None = None, per_class: int | None = None
) -> np.ndarray:
    """Sorted indices of a class-balanced subset of `labels` ([N] integer class ids).

    fraction: each class keeps round(fraction * its count) samples, at least one, so the class
    proportions of the full set are kept (on a balanced set: the same number per class).
    per_class: exactly that many samples of every class; an error if some class has fewer.
    Give exactly one of the two.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D array of integer class ids, got {labels.dtype} {labels.shape}"
        )
    if (fraction is None) == (per_class is None):
        raise ValueError(
            f"give exactly one of fraction and per_class, got fraction={fraction}, per_class={per_class}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if len(labels) == 0:
        raise ValueError("cannot take a subset of an empty data set")
    ranked = _ranked_by_class(labels, seed)
    counts: dict[int, int]
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"data.fraction={fraction}; expected 0 < fraction <= 1")
        counts = {label: max(1, round(fraction * len(members))) for label, members in ranked.items()}
    elif per_class is not None:  # exactly one of the two is given (checked above)
        if per_class < 1:
            raise ValueError(f"data.per_class={per_class}; expected at least 1")
        short = {label: len(members) for label, members in ranked.items() if len(members) < per_class}
        if short:
            shown = ", ".join(f"class {label}: {count}" for label, count in sorted(short.items()))
            raise ValueError(
                f"data.per_class={per_class} is more than some classes hold ({shown}); "
                f"the smallest class has {min(short.values())} samples"
            )
        counts = dict.fromkeys(ranked, per_class)
    chosen = np.concatenate([members[: counts[label]] for label, members in ranked.items()])
    return np.sort(chosen)
