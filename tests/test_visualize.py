"""`guidedmae visualize CHECKPOINT`: pictures of a run's (or an official model's) masks and reconstructions."""

import numpy as np
import pytest
import torch
from PIL import Image

from guidedmae.cli import main
from guidedmae.config import DataConfig, ModelSettings, PretrainConfig, config_to_dict
from guidedmae.data.transforms import AugmentConfig
from guidedmae.masking import MaskingConfig
from guidedmae.models import MultiMAE, MultiMAEConfig
from guidedmae.pictures import GAP, HEADER, LABEL, PANEL

TINY = dict(
    image_size=32,
    patch_size=8,
    dim=64,
    depth=2,
    num_heads=4,
    decoder_dim=16,
    decoder_depth=1,
    decoder_heads=8,
    semseg_classes=8,  # the synthetic scenes' classes
    semseg_class_dim=8,
)


def write_run_checkpoint(path, masking: MaskingConfig) -> MultiMAE:
    """A checkpoint as a pretraining run writes it: weights and the run's resolved config."""
    config = PretrainConfig(
        model=ModelSettings(**TINY),
        masking=masking,
        data=DataConfig(num_samples=16, batch_size=4, augment=AugmentConfig(size=32)),
    )
    model = MultiMAE(config.model.architecture(config.modalities))
    torch.save({"model": model.state_dict(), "config": config_to_dict(config), "step": 10}, path)
    return model


def attention_column(path) -> np.ndarray:
    """The pixels of the figure's second column (the attention heat maps), below the header."""
    picture = np.asarray(Image.open(path).convert("RGB"))
    left = LABEL + PANEL + GAP
    return picture[HEADER:, left : left + PANEL]


def test_visualize_pictures_the_runs_own_attention_masking(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoint-last.pt"
    checkpoint.parent.mkdir()
    write_run_checkpoint(checkpoint, MaskingConfig(strategy="attention", num_visible=8))
    assert main(["visualize", str(checkpoint), "--samples", "2"]) == 0
    picture = tmp_path / "run" / "visualize-attention-high.png"
    assert f"wrote {picture} (attention-high, 2 samples)" in capsys.readouterr().out
    assert (attention_column(picture) < 250).mean() > 0.3  # heat maps drawn

    assert main(["visualize", str(checkpoint), "--samples", "2", "masking.strategy=random"]) == 0
    random_picture = tmp_path / "run" / "visualize-random.png"
    assert (attention_column(random_picture) == 255).all()  # random masking has no scores to show
    assert Image.open(random_picture).size == Image.open(picture).size


def test_flags_change_the_masking_and_the_same_command_draws_the_same_picture(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    write_run_checkpoint(checkpoint, MaskingConfig(strategy="random", num_visible=8))
    flags = [
        "masking.strategy=attention",
        "masking.attention.select=low",
        "masking.attention.noise=0.5",
        "--samples",
        "3",
    ]
    first, second, high = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "high.png"
    assert main(["visualize", str(checkpoint), *flags, "--out", str(first)]) == 0
    assert "(attention-low-noise0.5, 3 samples)" in capsys.readouterr().out
    assert main(["visualize", str(checkpoint), *flags, "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert (
        main(
            ["visualize", str(checkpoint), "masking.strategy=attention", "--samples", "3", "--out", str(high)]
        )
        == 0
    )
    assert not np.array_equal(np.asarray(Image.open(high)), np.asarray(Image.open(first)))


def test_an_official_checkpoint_is_shown_on_synthetic_scenes(tmp_path, capsys):
    checkpoint = tmp_path / "official.pth"
    torch.save({"model": MultiMAE(MultiMAEConfig(**TINY)).state_dict(), "epoch": 1599}, checkpoint)
    out = tmp_path / "official.png"
    assert main(["visualize", str(checkpoint), "masking.strategy=attention", "--out", str(out)]) == 0
    # 48 tokens: the official budget of 1/6 visible is 8 tokens.
    assert "(attention-high, 4 samples)" in capsys.readouterr().out
    assert (attention_column(out) < 250).mean() > 0.3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["masking.attention.heads=9"], "masking.attention.heads=9; expected 0 (all) .. 4 heads"),
        (["masking.attention.noise=2"], "masking.attention.noise=2.0; expected a value in [0, 1]"),
        (["masking.num_visible=100"], "masking.num_visible=100; expected 0..48"),
        (["--samples", "0"], "--samples 0; expected at least 1"),
    ],
)
def test_bad_settings_are_named(tmp_path, capsys, flags, message):
    checkpoint = tmp_path / "checkpoint.pt"
    write_run_checkpoint(checkpoint, MaskingConfig(strategy="attention", num_visible=8))
    assert main(["visualize", str(checkpoint), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    assert main(["visualize", str(tmp_path / "nowhere.pt")]) == 1
    assert f"checkpoint not found: {tmp_path / 'nowhere.pt'}" in capsys.readouterr().err
