"""Initialising a fine-tuning encoder from pretraining checkpoints (ours and official), decoders dropped."""

import argparse
from dataclasses import asdict, replace

import pytest
import torch
from conftest import random_inputs, tiny_config

from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.models import MultiMAE
from guidedmae.models.pretrained import load_pretrained


def pretrained(tmp_path, style: str = "ours"):
    """A pretrained-looking MultiMAE (every input, every decoder) saved the way `style` saves it."""
    config = tiny_config()
    model = MultiMAE(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))  # away from the init every fresh model shares
    path = tmp_path / f"{style}.pt"
    if style == "ours":
        torch.save({"model": model.state_dict(), "config": {"model": asdict(config)}, "step": 7}, path)
    else:
        torch.save({"model": model.state_dict(), "epoch": 3, "args": argparse.Namespace(input_size=32)}, path)
    return model, path


@pytest.mark.parametrize("style", ["ours", "official"])
def test_encoder_keeps_the_pretrained_features_of_its_inputs(tmp_path, style):
    source, path = pretrained(tmp_path, style)
    encoder = MultiMAE(replace(source.config, inputs=("rgb", "depth"), outputs=())).eval()
    described = load_pretrained(encoder, path).describe()
    assert "input adapters not in the model, dropped: semseg" in described
    assert "decoders not in the model, dropped: rgb, depth, semseg, norm_rgb" in described
    inputs = random_inputs(source.config)
    del inputs["semseg"]
    with torch.no_grad():
        assert torch.allclose(encoder.forward_features(inputs), source.forward_features(inputs), atol=1e-6)


def test_a_larger_fine_tuning_size_resizes_the_position_tables_as_the_forward_pass_would(tmp_path):
    source, path = pretrained(tmp_path)
    encoder = MultiMAE(replace(source.config, inputs=("rgb",), outputs=(), image_size=48)).eval()
    load_pretrained(encoder, path)
    assert encoder.input_adapters["rgb"].pos_emb.shape[-2:] == (6, 6)
    images = {"rgb": torch.randn(2, 3, 48, 48)}
    with torch.no_grad():
        # The pretrained model resizes its 4x4 table on the fly for a 48-pixel input: the same numbers.
        assert torch.allclose(encoder.forward_features(images), source.forward_features(images), atol=1e-5)


def test_another_architecture_in_our_checkpoint_is_named_field_by_field(tmp_path):
    _, path = pretrained(tmp_path)
    encoder = MultiMAE(tiny_config(inputs=("rgb",), outputs=(), num_heads=2))
    with pytest.raises(CheckpointError, match=r"model.num_heads: checkpoint 4, config 2"):
        load_pretrained(encoder, path)


def test_an_input_the_checkpoint_never_saw_is_an_error_naming_it(tmp_path):
    config = tiny_config(inputs=("rgb",))
    path = tmp_path / "rgb-only.pt"
    torch.save({"model": MultiMAE(config).state_dict()}, path)
    encoder = MultiMAE(replace(config, inputs=("rgb", "depth"), outputs=()))
    with pytest.raises(CheckpointError, match=r"no input adapter for \['depth'\]"):
        load_pretrained(encoder, path)
