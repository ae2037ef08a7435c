"""Mixup / CutMix on multi-modal batches, and label smoothing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.data.mixup import MixupConfig, mix_batch, smooth_one_hot, soft_cross_entropy


def constant_batch(batch: int = 4, size: int = 8) -> dict[str, torch.Tensor]:
    """Sample i is the constant i in every pixel of both modalities: a mixed pixel tells its sources."""
    values = torch.arange(batch, dtype=torch.float32)[:, None, None, None]
    return {
        "rgb": values.expand(batch, 3, size, size).clone(),
        "depth": values.expand(batch, 1, size, size).clone(),
    }


def test_smooth_one_hot_puts_the_smoothing_mass_evenly():
    soft = smooth_one_hot(torch.tensor([2, 0]), num_classes=4, smoothing=0.1)
    assert soft[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    assert soft.sum(1).tolist() == pytest.approx([1.0, 1.0])


def test_disabled_mixing_returns_the_images_and_smoothed_targets():
    images = constant_batch()
    mixed, soft = mix_batch(
        images, torch.tensor([0, 1, 2, 3]), 4, MixupConfig(label_smoothing=0.0), torch.Generator()
    )
    assert mixed is images
    assert torch.equal(soft, torch.eye(4))


def test_mixup_blends_both_modalities_with_the_weight_the_targets_carry():
    images = constant_batch()
    targets = torch.tensor([0, 1, 2, 3])
    mixed, soft = mix_batch(images, targets, 4, MixupConfig(mixup=0.8), torch.Generator().manual_seed(3))
    # sample 0 = lam * 0 + (1 - lam) * 3 everywhere, in rgb and depth alike
    lam = 1 - mixed["rgb"][0, 0, 0, 0].item() / 3
    assert torch.allclose(mixed["depth"][0], torch.full_like(mixed["depth"][0], 3 * (1 - lam)))
    assert soft[0, 0].item() == pytest.approx(lam, abs=1e-6)
    assert soft[0, 3].item() == pytest.approx(1 - lam, abs=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(4))


def test_cutmix_pastes_one_box_from_the_partner_into_every_modality_and_weights_targets_by_area():
    images = constant_batch(size=16)
    targets = torch.tensor([0, 1, 2, 3])
    config = MixupConfig(cutmix=1.0)
    for seed in range(5):
        mixed, soft = mix_batch(images, targets, 4, config, torch.Generator().manual_seed(seed))
        from_partner = mixed["rgb"][1, 0] == 2  # sample 1's partner is sample 2
        assert torch.equal(from_partner, mixed["depth"][1, 0] == 2)
        rows, cols = from_partner.any(1).nonzero(), from_partner.any(0).nonzero()
        if rows.numel():  # the pasted region is one rectangle
            box = from_partner[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all()
        assert soft[1, 2].item() == pytest.approx(from_partner.float().mean().item(), abs=1e-6)
        assert soft[1, 1].item() == pytest.approx(1 - from_partner.float().mean().item(), abs=1e-6)


def test_mixing_is_reproducible_from_the_generator():
    images, targets = constant_batch(), torch.tensor([0, 1, 2, 3])
    config = MixupConfig(mixup=0.8, cutmix=1.0)
    first = mix_batch(images, targets, 4, config, torch.Generator().manual_seed(7))
    second = mix_batch(images, targets, 4, config, torch.Generator().manual_seed(7))
    assert torch.equal(first[0]["rgb"], second[0]["rgb"]) and torch.equal(first[1], second[1])


def test_mixing_refuses_class_maps_and_mismatched_sizes():
    config = MixupConfig(mixup=0.8)
    with pytest.raises(ValueError, match=r"\['semseg'\] are not"):
        mix_batch(
            {"semseg": torch.zeros(2, 4, 4, dtype=torch.long)},
            torch.tensor([0, 1]),
            2,
            config,
            torch.Generator(),
        )
    with pytest.raises(ValueError, match="same size"):
        mix_batch(
            {"rgb": torch.zeros(2, 3, 8, 8), "depth": torch.zeros(2, 1, 4, 4)},
            torch.tensor([0, 1]),
            2,
            config,
            torch.Generator(),
        )


def test_mixup_config_names_the_bad_key():
    with pytest.raises(ValueError, match="mixup.switch_prob=1.5"):
        MixupConfig(switch_prob=1.5)


def test_soft_cross_entropy_equals_cross_entropy_with_label_smoothing():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=generator)
    targets = torch.randint(0, 5, (6,), generator=generator)
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    assert soft_cross_entropy(logits, smooth_one_hot(targets, 5, 0.1)).item() == pytest.approx(
        expected.item()
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(0, 2**16), st.floats(0.0, 0.3))
def test_mixed_targets_are_distributions(batch, seed, smoothing):
    images = {"rgb": torch.rand(batch, 3, 8, 8)}
    targets = torch.randint(0, 3, (batch,))
    config = MixupConfig(mixup=0.8, cutmix=1.0, label_smoothing=smoothing)
    _, soft = mix_batch(images, targets, 3, config, torch.Generator().manual_seed(seed))
    assert torch.all(soft >= 0) and torch.allclose(soft.sum(1), torch.ones(batch))
