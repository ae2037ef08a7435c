"""Official MultiMAE checkpoints load safely and reproduce the official model's outputs."""

import argparse
import json

import numpy as np
import pytest
import torch

from guidedmae import load_official_checkpoint
from guidedmae.infra.checkpoints import CheckpointError, read_checkpoint
from guidedmae.models import MultiMAE
from tests.conftest import random_inputs, tiny_config

MODALITIES = ("rgb", "depth", "semseg")
OUTPUTS = ("rgb", "depth", "semseg", "norm_rgb")


def load_fixture(fixtures_dir):
    folder = fixtures_dir / "official-multimae-small"
    config = json.loads((folder / "config.json").read_text())
    # Head counts are not stored in official files: they come from the caller.
    model = load_official_checkpoint(
        folder / "checkpoint.pth", num_heads=config["heads"], decoder_heads=config["dec_heads"]
    ).eval()
    cases = np.load(folder / "cases.npz")
    return model, config, cases


def case(cases, index: int):
    inputs = {name: torch.from_numpy(cases[f"{index}/{name}"]) for name in MODALITIES}
    masks = {name: torch.from_numpy(cases[f"{index}/mask/{name}"]).bool() for name in MODALITIES}
    expected = {name: torch.from_numpy(cases[f"{index}/pred/{name}"]) for name in OUTPUTS}
    return inputs, masks, expected


def test_fixture_architecture_is_read_from_the_checkpoint(fixtures_dir):
    model, config, _ = load_fixture(fixtures_dir)
    built = model.config
    assert (built.image_size, built.patch_size, built.dim, built.depth) == (64, 16, 64, 2)
    assert (built.decoder_dim, built.decoder_depth, built.decoder_heads) == (32, 1, 2)
    assert (built.semseg_classes, built.semseg_class_dim) == (config["classes"], config["class_emb"])
    assert built.inputs == tuple(config["tasks"]) and set(built.outputs) == set(config["out_tasks"])


def test_every_fixture_case_matches_the_official_outputs(fixtures_dir):
    model, config, cases = load_fixture(fixtures_dir)
    for index in range(config["samples"]):
        inputs, masks, expected = case(cases, index)
        with torch.no_grad():
            preds = model(inputs, masks)
        for name in OUTPUTS:
            assert preds[name].shape == expected[name].shape
            difference = (preds[name] - expected[name]).abs().max().item()
            assert difference <= 1e-5, f"case {index}, output {name}: max abs difference {difference}"


def test_stacking_the_cases_into_one_batch_gives_the_same_outputs(fixtures_dir):
    model, config, cases = load_fixture(fixtures_dir)
    per_case = [case(cases, i) for i in range(config["samples"])]
    inputs = {name: torch.cat([c[0][name] for c in per_case]) for name in MODALITIES}
    masks = {name: torch.cat([c[1][name] for c in per_case]) for name in MODALITIES}
    with torch.no_grad():
        preds = model(inputs, masks)
    for index, (_, _, expected) in enumerate(per_case):
        for name in OUTPUTS:
            difference = (preds[name][index] - expected[name][0]).abs().max().item()
            assert difference <= 1e-5, f"case {index} in a batch, output {name}: {difference}"


def save_official_style(model: MultiMAE, path, **args) -> None:
    """Write a checkpoint the way the official training script does."""
    torch.save({"model": model.state_dict(), "epoch": 3, "args": argparse.Namespace(**args)}, path)


def test_round_trip_through_an_official_style_file(tmp_path):
    config = tiny_config()
    model = MultiMAE(config).eval()
    save_official_style(model, tmp_path / "ckpt.pth", input_size=32, patch_size=8, decoder_num_heads=2)
    loaded = load_official_checkpoint(tmp_path / "ckpt.pth", num_heads=4).eval()
    assert loaded.config == config
    inputs = random_inputs(config)
    masks = {name: torch.rand(2, 16).argsort(1) >= 4 for name in config.inputs}
    with torch.no_grad():
        a, b = model(inputs, masks), loaded(inputs, masks)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_a_bare_state_dict_and_an_encoder_only_load(tmp_path):
    model = MultiMAE(tiny_config())
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    encoder_only = load_official_checkpoint(tmp_path / "bare.pth", num_heads=4, decoder_heads=2, outputs=())
    assert len(encoder_only.output_adapters) == 0
    torch.testing.assert_close(encoder_only.encoder.state_dict(), model.encoder.state_dict())


def test_a_mismatch_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    model = MultiMAE(tiny_config())
    state = model.state_dict()
    del state["encoder.1.norm1.bias"]
    state["encoder.1.extra.weight"] = torch.zeros(3)
    state["output_adapters.rgb.out_proj.bias"] = torch.zeros(7)
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as error:
        load_official_checkpoint(tmp_path / "broken.pth", num_heads=4, decoder_heads=2)
    message = str(error.value)
    assert "broken.pth does not fit the model" in message
    assert "missing (1): encoder.1.norm1.bias" in message
    assert "unexpected (1): encoder.1.extra.weight" in message
    assert "output_adapters.rgb.out_proj.bias: checkpoint (7,) vs model (192,)" in message


class Payload:
    """Pickles as a call that would write a file: loading must never run it."""

    target = None

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_pickled_code_is_refused_not_executed(tmp_path):
    Payload.target = tmp_path / "pwned"
    torch.save({"model": {}, "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not Payload.target.exists()


def test_unreadable_and_missing_files_are_named(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        read_checkpoint(tmp_path / "nothing.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="odd.pth: no state dict found"):
        load_official_checkpoint(tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"unknown model settings \['heads'\]"):
        torch.save(MultiMAE(tiny_config()).state_dict(), tmp_path / "ok.pth")
        load_official_checkpoint(tmp_path / "ok.pth", heads=4)
