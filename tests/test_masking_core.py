"""Dirichlet budgets and the one selection routine: invariants and MultiMAE's random masking."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.masking import from_masks, from_priorities, random_priorities, sample_visible_counts
from guidedmae.masking.budget import round_to_budget, sample_proportions


@st.composite
def budgets(draw):
    capacity = draw(st.lists(st.integers(1, 40), min_size=1, max_size=4))
    num_visible = draw(st.integers(0, sum(capacity)))
    alphas = draw(
        st.one_of(
            st.floats(0.05, 5.0),
            st.lists(st.floats(0.05, 5.0), min_size=len(capacity), max_size=len(capacity)),
        )
    )
    return capacity, num_visible, alphas


@settings(max_examples=60, deadline=None)
@given(budgets(), st.integers(1, 16), st.booleans(), st.integers(0, 2**31))
def test_counts_sum_to_the_budget_and_fit_every_modality(budget, batch, uniform_tasks, seed):
    capacity, num_visible, alphas = budget
    generator = torch.Generator().manual_seed(seed)
    counts = sample_visible_counts(batch, capacity, num_visible, alphas, uniform_tasks, generator)
    assert counts.shape == (batch, len(capacity)) and counts.dtype == torch.int64
    assert (counts.sum(dim=1) == num_visible).all()
    assert (counts >= 0).all() and (counts <= torch.tensor(capacity)).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=4), st.integers(0, 60))
def test_rounding_stays_within_one_token_of_the_proportion_when_nothing_overflows(weights, num_visible):
    proportions = torch.tensor(weights, dtype=torch.float64) + 1e-3
    proportions = (proportions / proportions.sum())[None]
    counts = round_to_budget(proportions, num_visible, [1000] * len(weights))
    assert (counts.double() - proportions * num_visible).abs().max() < 1.0 + 1e-9
    assert counts.sum() == num_visible


def test_overflow_of_one_modality_goes_to_the_others():
    counts = round_to_budget(torch.tensor([[0.9, 0.05, 0.05]]), 20, [10, 16, 16])
    assert counts.tolist() == [[10, 5, 5]]


def test_same_seed_same_budget_and_symmetric_alpha_is_fair():
    def draw(seed):
        return sample_visible_counts(
            4000, [196, 196, 196], 98, 1.0, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    mean_share = draw(3).double().mean(dim=0) / 98
    assert torch.allclose(mean_share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)


def test_per_modality_alphas_shift_the_budget():
    counts = sample_visible_counts(
        4000, [196] * 3, 98, [8.0, 1.0, 1.0], generator=torch.Generator().manual_seed(0)
    )
    share = counts.double().mean(dim=0) / 98
    assert share[0] == pytest.approx(0.8, abs=0.02)  # Dirichlet mean alpha_m / sum(alpha)


def test_uniform_task_sampling_leaves_whole_modalities_out():
    proportions = sample_proportions(
        3000, 3, 1.0, sample_tasks_uniformly=True, generator=torch.Generator().manual_seed(0)
    )
    empty = (proportions < 1e-3).sum(dim=1)
    # Subsets of size 1, 2, 3 are drawn with probability 3/7, 3/7, 1/7 -> 2, 1, 0 modalities left out.
    assert (empty == 2).double().mean() == pytest.approx(3 / 7, abs=0.03)
    assert (empty == 0).double().mean() == pytest.approx(1 / 7, abs=0.03)


def test_bad_budgets_are_rejected_with_the_values():
    with pytest.raises(ValueError, match=r"cannot keep 50 visible tokens out of 20"):
        sample_visible_counts(2, [10, 10], 50)
    with pytest.raises(ValueError, match="alphas must be positive"):
        sample_visible_counts(2, [10, 10], 5, alphas=[1.0, -1.0])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(1, 12), min_size=1, max_size=3), st.integers(0, 2**31))
def test_selection_keeps_the_lowest_priorities_and_inverts_exactly(batch, sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(len(sizes))]
    total = sum(sizes)
    num_visible = int(torch.randint(0, total + 1, (1,), generator=generator))
    counts = sample_visible_counts(batch, sizes, num_visible, generator=generator)
    priorities = {n: torch.randn(batch, s, generator=generator) for n, s in zip(names, sizes)}
    selection = from_priorities(priorities, counts)

    for column, name in enumerate(names):
        mask, priority = selection.masks[name], priorities[name]
        assert ((~mask).sum(dim=1) == counts[:, column]).all()
        for b in range(batch):  # every kept token ranks below every masked one
            if (~mask[b]).any() and mask[b].any():
                assert priority[b][~mask[b]].max() < priority[b][mask[b]].min()

    mask_all = torch.cat([selection.masks[n] for n in names], dim=1)
    assert selection.ids_keep.shape == (batch, num_visible)
    assert (~mask_all.gather(1, selection.ids_keep)).all()  # ids_keep are exactly the visible tokens
    # ids_restore undoes [visible..., masked...]: gathering the shuffled positions restores 0..N-1.
    masked_ids = mask_all.to(torch.uint8).argsort(dim=1, stable=True)[:, num_visible:]
    shuffled = torch.cat([selection.ids_keep, masked_ids], dim=1)
    assert torch.equal(shuffled.gather(1, selection.ids_restore), torch.arange(total).expand(batch, -1))


def test_random_priorities_give_multimae_random_masking():
    # Within a modality every token is equally likely to stay visible (MultiMAE's noise + argsort).
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([[5, 3]]).repeat(20000, 1)
    selection = from_priorities(random_priorities(20000, {"rgb": 16, "depth": 16}, generator), counts)
    visible_rate = {name: (~mask).double().mean(dim=0) for name, mask in selection.masks.items()}
    assert torch.allclose(visible_rate["rgb"], torch.full((16,), 5 / 16, dtype=torch.float64), atol=0.015)
    assert torch.allclose(visible_rate["depth"], torch.full((16,), 3 / 16, dtype=torch.float64), atol=0.015)
    again = from_priorities(
        random_priorities(20000, {"rgb": 16, "depth": 16}, torch.Generator().manual_seed(0)), counts
    )
    assert torch.equal(again.ids_keep, selection.ids_keep)


def test_selection_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"visible_counts has shape \(2, 1\), expected \[batch, 2\]"):
        from_priorities({"a": torch.rand(2, 4), "b": torch.rand(2, 4)}, torch.ones(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="visible count for 'a' outside"):
        from_priorities({"a": torch.rand(1, 4)}, torch.tensor([[5]]))
    with pytest.raises(ValueError, match="no token masks given"):
        from_masks({})
