"""Masked reconstruction losses: hand-computed values and agreement with the official formulas, all
through the training path (reconstruction_losses)."""

import pytest
import torch
import torch.nn.functional as F

from guidedmae.losses import normalize_patches, reconstruction_losses


def _one_output(output: str, source: str, pred, target, mask, patch_size: int) -> torch.Tensor:
    """The training path's loss of one output (None mask: every patch counts)."""
    masks = {} if mask is None else {source: mask}
    return reconstruction_losses({output: pred}, {source: target}, masks, patch_size)[output]


def masked_mse(pred, target, mask, patch, normalize_target=False):
    """rgb's loss (MSE), or norm_rgb's (MSE to the patch-normalized target)."""
    return _one_output("norm_rgb" if normalize_target else "rgb", "rgb", pred, target, mask, patch)


def masked_l1(pred, target, mask, patch):
    """depth's loss."""
    return _one_output("depth", "depth", pred, target, mask, patch)


def masked_cross_entropy(logits, target, mask, patch):
    """semseg's loss: its class map is at 1/4 of the image, so the model's patch is 4x the map's."""
    return _one_output("semseg", "semseg", logits, target, mask, 4 * patch)


def official_masked_loss(per_pixel_loss: torch.Tensor, mask: torch.Tensor, patch: int) -> torch.Tensor:
    """The official criterion's reduction, written the way the official code does it (nearest upsampling)."""
    batch, height, width = per_pixel_loss.shape
    grid = mask.view(batch, height // patch, width // patch).float()
    pixels = F.interpolate(grid[:, None], size=(height, width), mode="nearest")[:, 0]
    per_sample = (per_pixel_loss * pixels).flatten(1).sum(1) / pixels.flatten(1).sum(1)
    return per_sample.nanmean()


def official_norm_target(images: torch.Tensor, patch: int) -> torch.Tensor:
    batch, channels, height, width = images.shape
    nh, nw = height // patch, width // patch
    x = (
        images.reshape(batch, channels, nh, patch, nw, patch)
        .permute(0, 2, 4, 3, 5, 1)
        .reshape(batch, nh * nw, -1)
    )
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-6)
    return x.reshape(batch, nh, nw, patch, patch, channels).permute(0, 5, 1, 3, 2, 4).reshape(images.shape)


def test_hand_computed_masked_mse():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 2.0  # patch 0 (2x2 patches): squared error 4 everywhere
    target[..., 2:, 2:] = 1.0  # patch 3: squared error 1
    mask = torch.tensor([[True, False, False, True]])
    assert masked_mse(pred, target, mask, patch=2).item() == pytest.approx((4 + 1) / 2)
    assert masked_mse(pred, target, None, patch=2).item() == pytest.approx((4 * 4 + 1 * 4) / 16)
    assert masked_l1(pred, target, mask, patch=2).item() == pytest.approx((2 + 1) / 2)


def test_only_masked_patches_count():
    pred, target = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    mask = torch.tensor([[True, False, False, False], [False, True, True, False]])
    base = masked_mse(pred, target, mask, patch=4)
    visible_changed = pred.clone()
    visible_changed[0, :, :4, 4:] += 5  # sample 0, patch 1: visible
    assert masked_mse(visible_changed, target, mask, patch=4) == base
    masked_changed = pred.clone()
    masked_changed[0, :, :4, :4] += 5  # sample 0, patch 0: masked
    assert masked_mse(masked_changed, target, mask, patch=4) > base


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_the_official_criterion(seed):
    generator = torch.Generator().manual_seed(seed)
    pred, target = (
        torch.randn(3, 3, 16, 16, generator=generator),
        torch.randn(3, 3, 16, 16, generator=generator),
    )
    mask = torch.rand(3, 16, generator=generator) > 0.5
    mask[0] = False  # a sample without masked patches is left out (nanmean)
    torch.testing.assert_close(
        masked_mse(pred, target, mask, 4), official_masked_loss((pred - target).square().mean(1), mask, 4)
    )
    torch.testing.assert_close(
        masked_l1(pred[:, :1], target[:, :1], mask, 4),
        official_masked_loss((pred - target)[:, :1].abs()[:, 0], mask, 4),
    )
    torch.testing.assert_close(
        masked_mse(pred, target, mask, 4, normalize_target=True),
        official_masked_loss((pred - official_norm_target(target, 4)).square().mean(1), mask, 4),
    )
    logits, labels = (
        torch.randn(3, 5, 16, 16, generator=generator),
        torch.randint(0, 5, (3, 16, 16), generator=generator),
    )
    torch.testing.assert_close(
        masked_cross_entropy(logits, labels, mask, 4),
        official_masked_loss(F.cross_entropy(logits, labels, reduction="none"), mask, 4),
    )


def test_patch_normalization_standardizes_each_patch():
    images = torch.randn(2, 3, 8, 8) * 5 + 3
    normalized = normalize_patches(images, patch=4)
    patches = normalized.unfold(2, 4, 4).unfold(3, 4, 4)  # [B, C, 2, 2, 4, 4]
    per_patch = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 4, -1)
    assert torch.allclose(per_patch.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(per_patch.var(-1), torch.ones(2, 4), atol=1e-4)


def test_no_masked_patch_at_all_gives_a_zero_that_keeps_the_graph():
    pred = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = masked_l1(pred, torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, dtype=torch.bool), patch=4)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_reconstruction_losses_route_each_output_to_its_loss_and_weight():
    generator = torch.Generator().manual_seed(0)
    targets = {
        "rgb": torch.randn(2, 3, 32, 32, generator=generator),
        "depth": torch.randn(2, 1, 32, 32, generator=generator),
        "semseg": torch.randint(0, 5, (2, 8, 8), generator=generator),
    }
    preds = {
        "rgb": torch.randn(2, 3, 32, 32, generator=generator),
        "norm_rgb": torch.randn(2, 3, 32, 32, generator=generator),
        "depth": torch.randn(2, 1, 32, 32, generator=generator),
        "semseg": torch.randn(2, 5, 8, 8, generator=generator),
    }
    masks = {name: torch.rand(2, 16, generator=generator) > 0.5 for name in targets}
    losses = reconstruction_losses(preds, targets, masks, patch_size=8, weights={"depth": 2.0})
    assert losses["rgb"] == masked_mse(preds["rgb"], targets["rgb"], masks["rgb"], 8)
    assert losses["norm_rgb"] == masked_mse(
        preds["norm_rgb"], targets["rgb"], masks["rgb"], 8, normalize_target=True
    )
    assert losses["depth"] == masked_l1(preds["depth"], targets["depth"], masks["depth"], 8)
    assert losses["semseg"] == masked_cross_entropy(preds["semseg"], targets["semseg"], masks["semseg"], 2)
    expected_total = losses["rgb"] + losses["norm_rgb"] + 2 * losses["depth"] + losses["semseg"]
    torch.testing.assert_close(losses["total"], expected_total)

    everywhere = reconstruction_losses(preds, targets, masks, patch_size=8, on_unmasked=True)
    assert everywhere["depth"] == masked_l1(preds["depth"], targets["depth"], None, 8)
    with pytest.raises(ValueError, match=r"loss weights given for \['normals'\]"):
        reconstruction_losses(preds, targets, masks, patch_size=8, weights={"normals": 1.0})
    with pytest.raises(ValueError, match="no target for output 'depth'"):
        reconstruction_losses(
            preds, {"rgb": targets["rgb"], "semseg": targets["semseg"]}, masks, patch_size=8
        )
