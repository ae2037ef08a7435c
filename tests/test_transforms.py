"""Aligned augmentation: one crop and flip for every modality, normalization, depth standardization."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.data.modalities import IMAGENET_MEAN, IMAGENET_STD
from guidedmae.data.transforms import (
    AugmentConfig,
    augment_sample,
    random_resized_crop_box,
    standardize_depth,
)

# Seven far-apart colours: a pixel's class can be read back from its colour.
PALETTE = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]],
    dtype=np.uint8,
)


def block_scene(height: int, width: int, block: int = 8) -> dict:
    """A scene whose rgb and depth are functions of its class map: rgb = PALETTE[class], depth = 1 + class."""
    y, x = np.mgrid[0:height, 0:width]
    semseg = (((y // block) * 3 + (x // block) * 5) % len(PALETTE)).astype(
        np.uint8
    )  # neighbours always differ
    return {"rgb": PALETTE[semseg], "depth": 1.0 + semseg.astype(np.float32), "semseg": semseg}


def ramp_scene(height: int, width: int) -> dict:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 10 % 256, y * 10 % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return {
        "rgb": rgb,
        "depth": (1 + x + 100 * y).astype(np.float32),
        "semseg": (x + y * width).astype(np.uint8),
    }


def denormalize(rgb: torch.Tensor) -> np.ndarray:
    """Model input [3, H, W] -> uint8-scale floats [H, W, 3]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb * std + mean) * 255).permute(1, 2, 0).numpy()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_standardize_depth_uses_the_middle_80_percent_of_each_map():
    depth = torch.rand(2, 10, 10, generator=generator(0)) * 5
    depth[0, 0, :3] = 1000.0  # outliers that the truncation must ignore
    out = standardize_depth(depth)
    for image, result in zip(depth, out):
        kept = np.sort(image.flatten().numpy())[10:90]
        expected = (image.numpy() - kept.mean()) / np.sqrt(kept.var(ddof=1) + 1e-6)
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_standardize_depth_selects_the_same_values_as_sorting_with_ties():
    # Quantized depth (millimetre files) repeats values across the 10% / 90% cut-offs; the CPU path sorts
    # with numpy, the autograd path with torch: both must give the same maps.
    depth = torch.randint(0, 6, (3, 1, 20, 20), generator=generator(1)).double()
    partitioned = standardize_depth(depth)
    sorted_path = standardize_depth(depth.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(partitioned, sorted_path, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1.0, 1000.0), offset=st.floats(-10.0, 10.0), seed=st.integers(0, 1000))
def test_standardize_depth_ignores_units_and_offset(scale, offset, seed):
    # (exactly so but for the 1e-6 added to the variance, negligible for variances far above it)
    depth = torch.rand(1, 8, 8, generator=generator(seed), dtype=torch.float64) + 0.5
    torch.testing.assert_close(
        standardize_depth(depth * scale + offset), standardize_depth(depth), atol=1e-3, rtol=0
    )


def test_standardize_depth_rejects_maps_too_small_for_statistics():
    with pytest.raises(ValueError, match="too small"):
        standardize_depth(torch.ones(1, 1, 2))


def test_eval_transform_takes_the_centre_square_without_randomness():
    scene = ramp_scene(6, 8)
    config = AugmentConfig(size=6, depth="metres", semseg_stride=2, train=False)
    out = augment_sample({**scene, "label": 3}, config, generator(0))
    np.testing.assert_allclose(denormalize(out["rgb"]), scene["rgb"][:, 1:7], atol=1e-3)
    np.testing.assert_allclose(out["depth"][0].numpy(), scene["depth"][:, 1:7])
    # nearest at half resolution samples the second pixel of every 2x2 cell
    np.testing.assert_array_equal(out["semseg"].numpy(), scene["semseg"][:, 1:7][1::2, 1::2])
    assert (
        out["semseg"].dtype == torch.int64 and out["label"].dtype == torch.int64 and out["label"].item() == 3
    )


def test_horizontal_flip_mirrors_every_modality():
    scene = ramp_scene(8, 8)
    config = AugmentConfig(
        size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, depth="metres", semseg_stride=1
    )
    out = augment_sample(scene, config, generator(0))
    np.testing.assert_allclose(denormalize(out["rgb"]), scene["rgb"][:, ::-1], atol=1e-3)
    np.testing.assert_array_equal(out["depth"][0].numpy(), scene["depth"][:, ::-1])
    np.testing.assert_array_equal(out["semseg"].numpy(), scene["semseg"][:, ::-1])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    height=st.integers(64, 96),
    width=st.integers(64, 96),
    min_scale=st.sampled_from([0.2, 0.5, 1.0]),
    size=st.sampled_from([16, 24]),
    hflip=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_every_augmentation_keeps_modalities_aligned(seed, height, width, min_scale, size, hflip):
    """rgb and depth are functions of the class map; after any crop and flip they still agree with it."""
    config = AugmentConfig(size=size, scale=(min_scale, 1.0), hflip=hflip, depth="metres", semseg_stride=1)
    out = augment_sample(block_scene(height, width, block=16), config, generator(seed))
    semseg = out["semseg"].numpy()
    distances = ((denormalize(out["rgb"])[:, :, None, :] - PALETTE[None, None].astype(np.float32)) ** 2).sum(
        -1
    )
    class_from_rgb = distances.argmin(-1)
    class_from_depth = np.rint(out["depth"][0].numpy() - 1)
    # These sizes only ever downsample, so a pixel's bilinear support ends at its neighbours' centres:
    # where the 3x3 neighbourhood is one class, rgb and depth are that class's exact value.
    interior = np.zeros_like(semseg, dtype=bool)
    interior[1:-1, 1:-1] = True
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(semseg, (dy, dx), axis=(0, 1)) == semseg
    assert interior.sum() >= size  # something to check
    np.testing.assert_array_equal(class_from_rgb[interior], semseg[interior])
    np.testing.assert_array_equal(class_from_depth[interior], semseg[interior])


def test_semseg_comes_out_at_the_configured_stride():
    scene = block_scene(64, 64)
    out = augment_sample(scene, AugmentConfig(size=32, semseg_stride=4), generator(1))
    assert out["rgb"].shape == (3, 32, 32) and out["depth"].shape == (1, 32, 32)
    assert out["semseg"].shape == (8, 8)
    assert set(out["semseg"].unique().tolist()) <= set(np.unique(scene["semseg"]).tolist())


def test_depth_is_standardized_by_default():
    out = augment_sample(block_scene(64, 64), AugmentConfig(size=32), generator(2))
    torch.testing.assert_close(out["depth"], standardize_depth(out["depth"]), atol=1e-4, rtol=0)
    kept = out["depth"].flatten().sort().values[102:921]  # the middle 80% of 1024 values has mean 0, var 1
    assert abs(kept.mean().item()) < 1e-4 and abs(kept.var().item() - 1) < 1e-3


def test_color_jitter_changes_rgb_only_and_keeps_the_crop():
    scene = block_scene(64, 64)
    plain = augment_sample(scene, AugmentConfig(size=32), generator(3))
    jittered = augment_sample(scene, AugmentConfig(size=32, color_jitter=0.4), generator(3))
    torch.testing.assert_close(jittered["depth"], plain["depth"])
    torch.testing.assert_close(jittered["semseg"], plain["semseg"])
    assert (jittered["rgb"] - plain["rgb"]).abs().max() > 0.05


def test_the_generator_alone_decides_the_augmentation():
    scene, config = ramp_scene(40, 50), AugmentConfig(size=16, color_jitter=0.3)
    first, again = augment_sample(scene, config, generator(7)), augment_sample(scene, config, generator(7))
    other = augment_sample(scene, config, generator(8))
    for name in first:
        torch.testing.assert_close(first[name], again[name])
    assert not torch.equal(first["depth"], other["depth"])


@settings(max_examples=50, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_random_crop_box_lies_inside_the_image(height, width, seed):
    box = random_resized_crop_box(height, width, (0.08, 1.0), (3 / 4, 4 / 3), generator(seed))
    assert box.top >= 0 and box.top + box.height <= height and box.height >= 1
    assert box.left >= 0 and box.left + box.width <= width and box.width >= 1


def test_crop_box_falls_back_to_the_centre_when_no_try_fits():
    # A 1x100 strip cannot hold a box of aspect ratio at most 4/3 covering >= 50% of it.
    box = random_resized_crop_box(1, 100, (0.5, 1.0), (3 / 4, 4 / 3), generator(0))
    assert box == (0, 49, 1, 1)


def test_modalities_of_different_sizes_are_rejected():
    scene = {"rgb": np.zeros((8, 8, 3), np.uint8), "depth": np.ones((8, 9), np.float32)}
    with pytest.raises(ValueError, match="same height and width"):
        augment_sample(scene, AugmentConfig(size=8), generator(0))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("scale", (0.5, 0.2)),
        ("ratio", (0.0, 1.0)),
        ("hflip", 1.5),
        ("color_jitter", -0.1),
        ("depth", "millimetres"),
        ("semseg_stride", 3),
    ],
)
def test_config_rejects_invalid_values_by_name(field, value):
    with pytest.raises(ValueError, match=f"augment.{field}"):
        AugmentConfig(size=32, **{field: value}) if field != "size" else AugmentConfig(size=value)
