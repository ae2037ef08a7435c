"""Class-balanced seeded subsets (the low-data regime)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.data.subset import balanced_subset

# 5 classes of 100, 100, 100, 100 and 40 samples, interleaved.
LABELS = np.concatenate([np.repeat(np.arange(4), 100), np.full(40, 4)])[
    np.random.default_rng(0).permutation(440)
]


def class_counts(indices: np.ndarray) -> list[int]:
    return np.bincount(LABELS[indices], minlength=5).tolist()


def test_per_class_takes_exactly_that_many_of_every_class():
    indices = balanced_subset(LABELS, seed=0, per_class=13)
    assert class_counts(indices) == [13] * 5
    assert len(set(indices.tolist())) == 65 and np.all(np.diff(indices) > 0)


def test_fraction_keeps_that_share_of_each_class():
    assert class_counts(balanced_subset(LABELS, seed=0, fraction=0.1)) == [10, 10, 10, 10, 4]
    # At least one sample per class, however small the fraction.
    assert class_counts(balanced_subset(LABELS, seed=0, fraction=0.001)) == [1] * 5
    assert len(balanced_subset(LABELS, seed=0, fraction=1.0)) == 440


def test_the_subset_is_a_function_of_the_seed():
    first = balanced_subset(LABELS, seed=3, per_class=5)
    assert np.array_equal(first, balanced_subset(LABELS.tolist(), seed=3, per_class=5))
    assert not np.array_equal(first, balanced_subset(LABELS, seed=4, per_class=5))


def test_impossible_requests_name_the_values():
    with pytest.raises(ValueError, match=r"data.per_class=50 .*class 4: 40.*smallest class has 40"):
        balanced_subset(LABELS, seed=0, per_class=50)
    with pytest.raises(ValueError, match="data.fraction=1.5"):
        balanced_subset(LABELS, seed=0, fraction=1.5)
    with pytest.raises(ValueError, match="data.per_class=0"):
        balanced_subset(LABELS, seed=0, per_class=0)
    with pytest.raises(ValueError, match="exactly one of fraction and per_class"):
        balanced_subset(LABELS, seed=0, fraction=0.5, per_class=3)
    with pytest.raises(ValueError, match="integer class ids"):
        balanced_subset(np.array([0.5, 1.0]), seed=0, per_class=1)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 1000), st.integers(1, 20), st.integers(1, 20))
def test_a_smaller_request_picks_a_subset_of_a_larger_one(seed, small, extra):
    smaller = set(balanced_subset(LABELS, seed=seed, per_class=small).tolist())
    larger = set(balanced_subset(LABELS, seed=seed, per_class=min(small + extra, 40)).tolist())
    assert smaller <= larger
