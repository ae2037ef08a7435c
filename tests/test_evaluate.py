"""Evaluation views: whole images (letterboxed), shorter-side resizing, and sliding-window averaging."""

import numpy as np
import pytest
import torch

from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.evaluate import EvalConfig, resize_for_eval, sliding_window, window_starts


def raw_sample(height: int = 40, width: int = 60) -> dict:
    rng = np.random.default_rng(0)
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": rng.uniform(1.0, 5.0, (height, width)).astype(np.float32),
        "semseg": rng.integers(0, 3, (height, width), dtype=np.uint8),
        "label": 2,
    }


def test_window_starts_cover_the_length_with_the_last_window_flush():
    assert window_starts(32, 32, 16) == [0]
    assert window_starts(20, 32, 16) == [0]
    assert window_starts(80, 32, 24) == [0, 24, 48]
    assert window_starts(70, 32, 24) == [0, 24, 38]


def test_whole_image_is_letterboxed_with_ignore_and_missing_depth_padding():
    out = resize_for_eval(
        raw_sample(), AugmentConfig(size=32, depth="metres", semseg_stride=1), "whole", ignore_index=255
    )
    assert (
        out["rgb"].shape == (3, 32, 32)
        and out["depth"].shape == (1, 32, 32)
        and out["semseg"].shape == (32, 32)
    )
    # 40 x 60 -> 21 x 32 (longer side to 32), then rows 21..31 are padding
    assert torch.all(out["semseg"][21:] == 255) and torch.all(out["semseg"][:21] < 3)
    assert torch.all(out["depth"][:, 21:] == 0) and torch.all(out["depth"][:, :21] >= 1.0)
    assert torch.all(out["rgb"][:, 21:] == 0)  # the mean colour, after ImageNet normalization
    assert out["label"].item() == 2


def test_sliding_view_resizes_the_shorter_side_and_keeps_the_aspect():
    out = resize_for_eval(raw_sample(), AugmentConfig(size=32, semseg_stride=1), "sliding", ignore_index=255)
    assert out["rgb"].shape == (3, 32, 48) and out["semseg"].shape == (32, 48)
    middle = out["depth"].flatten().sort().values[int(0.1 * 32 * 48) : int(0.9 * 32 * 48)]
    assert abs(middle.mean().item()) < 1e-4  # standardized as MultiMAE feeds depth inputs


def test_sliding_window_of_an_exact_predictor_reproduces_its_input():
    image = torch.randn(2, 3, 32, 80)
    out = sliding_window(lambda crop: crop["rgb"] * 2, {"rgb": image}, window=32, stride=20)
    assert torch.allclose(out, image * 2, atol=1e-6)


def test_sliding_window_averages_overlapping_windows():
    image = torch.zeros(1, 1, 8, 12)
    calls = []

    def predict(crop):
        calls.append(len(calls))
        return torch.full_like(crop["depth"], float(len(calls)))  # 1 for the first window, 2 for the second

    out = sliding_window(predict, {"depth": image}, window=8, stride=4)
    assert len(calls) == 2  # starts 0 and 4 along the width
    assert out[0, 0, 0, :4].tolist() == [1.0] * 4
    assert out[0, 0, 0, 4:8].tolist() == [1.5] * 4  # both windows
    assert out[0, 0, 0, 8:].tolist() == [2.0] * 4


def test_eval_config_names_bad_values():
    with pytest.raises(ValueError, match="eval.mode='tiles'"):
        EvalConfig(mode="tiles")
    with pytest.raises(ValueError, match="eval.every=-1"):
        EvalConfig(every=-1)
