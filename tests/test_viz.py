"""Reconstruction pictures: masked patches are grey, visible ones show the input, heat follows scores."""

import numpy as np
import pytest
import torch
from PIL import Image

from guidedmae.losses import normalize_patches
from guidedmae.masking import MaskChoice, from_masks
from guidedmae.pictures import MASKED_GREY, reconstruction_figure, sample_panels, save_png


def test_panels_show_the_mask_the_heat_and_the_pasted_reconstruction():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(1, 8, 8, generator=generator)  # depth, 2x2 tokens of 4x4 pixels
    pred = torch.randn(1, 8, 8, generator=generator)
    mask = torch.tensor([True, False, False, True])  # tokens 0 (top-left) and 3 (bottom-right) hidden
    score = torch.tensor([0.1, 0.9, 0.2, 0.3])
    shown, heat, masked, predicted, pasted = sample_panels("depth", target, pred, mask, score, patch=4)
    assert np.all(masked[:4, :4] == MASKED_GREY) and np.all(masked[4:, 4:] == MASKED_GREY)
    np.testing.assert_array_equal(masked[:4, 4:], shown[:4, 4:])
    np.testing.assert_array_equal(pasted[:4, :4], predicted[:4, :4])  # masked: the prediction
    np.testing.assert_array_equal(pasted[4:, :4], shown[4:, :4])  # visible: the input
    brightness = heat.sum(axis=-1)
    cells = [brightness[r : r + 4, c : c + 4].mean() for r in (0, 4) for c in (0, 4)]
    assert int(np.argmax(cells)) == 1 and int(np.argmin(cells)) == 0


def test_figure_has_a_row_per_output_and_sample():
    batch = {"rgb": torch.randn(3, 3, 16, 16), "semseg": torch.randint(0, 4, (3, 4, 4))}
    preds = {
        "rgb": torch.randn(3, 3, 16, 16),
        "norm_rgb": torch.randn(3, 3, 16, 16),
        "semseg": torch.randn(3, 4, 4, 4),
    }
    selection = from_masks(
        {"rgb": torch.rand(3, 4).argsort(1) < 2, "semseg": torch.rand(3, 4).argsort(1) < 2}
    )
    figure = reconstruction_figure(batch, MaskChoice(selection, None), preds, max_samples=2, patch_size=8)
    assert figure.mode == "RGB" and figure.width > 5 * 128
    assert figure.height > 2 * 3 * 128  # 2 samples x 3 outputs


def test_save_png_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "pics" / "step.png"
    save_png(Image.new("RGB", (4, 4), "red"), path)
    save_png(Image.new("RGB", (6, 6), "blue"), path)
    assert Image.open(path).size == (6, 6)

    class Broken:
        def save(self, file, format):
            file.write(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_png(Broken(), path)
    assert Image.open(path).size == (6, 6)  # the old picture survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["step.png"]


def test_patch_normalized_predictions_are_shown_with_the_inputs_patch_statistics():
    torch.manual_seed(0)
    rgb = torch.randn(3, 16, 16)
    perfect = normalize_patches(rgb[None], 8)[0]  # what a perfect norm_rgb decoder predicts
    shown, _, _, predicted, _ = sample_panels("norm_rgb", rgb, perfect, None, None, 8)
    plain, *_ = sample_panels("rgb", rgb, rgb, None, None, 8)
    np.testing.assert_allclose(shown, plain)  # the input column is the rgb input itself
    np.testing.assert_allclose(predicted, plain, atol=1e-3)  # un-normalized: the input again
