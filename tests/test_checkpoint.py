"""Atomic checkpoint files, keeping the last K, choosing what to resume, and model.init from weights."""

import json

import pytest
import torch

from guidedmae.infra.checkpoints import (
    LAST,
    CheckpointError,
    atomic_save,
    read_training_checkpoint,
    resolve_resume,
    resume_candidates,
    save_checkpoint,
    step_checkpoints,
)
from guidedmae.infra.run_folder import remove_stale_temps
from guidedmae.models import MultiMAE
from guidedmae.models.pretrained import load_pretrained
from tests.conftest import tiny_config


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temp(tmp_path):
    path = tmp_path / "checkpoint-last.pt"
    atomic_save({"step": 1, "weights": torch.arange(4.0)}, path)
    with pytest.raises(OSError, match=r"cannot write .*checkpoint-last.pt: .*disk full"):
        atomic_save({"step": 2, "oops": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pt"]


def test_keeps_the_last_k_and_last_names_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint({"step": step}, tmp_path, step, keep=2)
    assert [p.name for p in step_checkpoints(tmp_path)] == [
        "checkpoint-00000030.pt",
        "checkpoint-00000040.pt",
    ]
    assert torch.load(tmp_path / LAST, weights_only=True) == {"step": 40}
    assert [p.name for p in resume_candidates(tmp_path)] == [
        "checkpoint-00000040.pt",
        LAST,
        "checkpoint-00000030.pt",
    ]
    # Killed between writing a step file and copying it to checkpoint-last.pt: the step file comes first.
    atomic_save({"step": 50}, tmp_path / "checkpoint-00000050.pt")
    assert resume_candidates(tmp_path)[0].name == "checkpoint-00000050.pt"
    # Numeric, not text, order of steps; checkpoint-last.pt alone is found too.
    save_checkpoint({"step": 100}, tmp_path / "other", 100, keep=5)
    save_checkpoint({"step": 99}, tmp_path / "other", 99, keep=5)
    assert resume_candidates(tmp_path / "other")[0].name == "checkpoint-00000100.pt"
    for path in step_checkpoints(tmp_path / "other"):
        path.unlink()
    assert resume_candidates(tmp_path / "other") == [tmp_path / "other" / LAST]


def test_checkpoint_last_is_a_file_of_its_own(tmp_path):
    save_checkpoint({"step": 7}, tmp_path, 7, keep=2)
    (tmp_path / LAST).write_bytes(b"edited in place")  # damaging the copy leaves the step file whole
    assert torch.load(tmp_path / "checkpoint-00000007.pt", weights_only=True) == {"step": 7}


def test_resume_choices(tmp_path):
    assert resolve_resume("auto", tmp_path) == []  # first launch of a requeued job
    assert resolve_resume("", tmp_path) == []
    save_checkpoint({"step": 5}, tmp_path, 5, keep=1)
    assert resolve_resume("auto", tmp_path) == [tmp_path / "checkpoint-00000005.pt", tmp_path / LAST]
    with pytest.raises(
        ValueError, match=r"already holds checkpoints \(checkpoint-00000005.pt\); pass resume=auto"
    ):
        resolve_resume("", tmp_path)
    with pytest.raises(FileNotFoundError, match="resume=/nowhere.pt: no such checkpoint file"):
        resolve_resume("/nowhere.pt", tmp_path)
    other = tmp_path / "other"
    save_checkpoint({"step": 3}, other, 3, keep=1)
    assert resolve_resume(str(other / LAST), other) == [other / LAST]  # a run's own folder
    with pytest.raises(ValueError, match="which holds another run's checkpoints"):
        resolve_resume(str(other / LAST), tmp_path)


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".checkpoint-00000010.pt.abc123.tmp").write_bytes(b"half")
    save_checkpoint({"step": 5}, tmp_path, 5, keep=1)
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".checkpoint-00000010.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000005.pt", LAST]


def test_weights_only_files_cannot_be_resumed_from(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": MultiMAE(tiny_config()).state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a training checkpoint .*use model.init=PATH"):
        read_training_checkpoint(path)


def test_init_from_an_own_checkpoint_loads_every_weight(tmp_path):
    source = MultiMAE(tiny_config())
    path = tmp_path / "run" / "checkpoint-last.pt"
    atomic_save({"model": source.state_dict(), "step": 7, "config": {}}, path)
    torch.manual_seed(1)
    target = MultiMAE(tiny_config())
    report = load_pretrained(target, path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    assert report.loaded_decoders == ["rgb", "depth", "semseg", "norm_rgb"] and not report.fresh_decoders


def test_init_from_an_encoder_only_file_starts_the_decoders_fresh_and_says_so(tmp_path):
    encoder_only = MultiMAE(tiny_config(outputs=()))
    path = tmp_path / "multivit.pth"
    torch.save({"model": encoder_only.state_dict(), "epoch": 1599}, path)
    model = MultiMAE(tiny_config(outputs=("rgb", "depth")))
    fresh_rgb_decoder = model.output_adapters["rgb"].out_proj.weight.detach().clone()
    report = load_pretrained(model, path)
    assert torch.equal(model.encoder[0].attn.qkv.weight, encoder_only.encoder[0].attn.qkv.weight)
    assert torch.equal(model.output_adapters["rgb"].out_proj.weight, fresh_rgb_decoder)
    assert report.fresh_decoders == ["rgb", "depth"] and report.loaded_decoders == []
    assert "decoders not in the file, starting from random init: rgb, depth" in report.describe()


def test_init_drops_decoders_the_config_does_not_have(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": MultiMAE(tiny_config()).state_dict()}, path)
    report = load_pretrained(MultiMAE(tiny_config(outputs=("rgb",))), path)
    assert report.ignored_decoders == ["depth", "semseg", "norm_rgb"] and report.loaded_decoders == ["rgb"]


def test_init_from_an_official_checkpoint(fixtures_dir):
    config = json.loads((fixtures_dir / "official-multimae-small" / "config.json").read_text())
    model = MultiMAE(
        tiny_config(
            image_size=config["image"],
            patch_size=config["patch"],
            dim=config["dim"],
            depth=config["depth"],
            num_heads=config["heads"],
            decoder_dim=config["dec_dim"],
            decoder_depth=config["dec_depth"],
            decoder_heads=config["dec_heads"],
            semseg_classes=config["classes"],
            semseg_class_dim=config["class_emb"],
        )
    )
    report = load_pretrained(model, fixtures_dir / "official-multimae-small" / "checkpoint.pth")
    official = torch.load(fixtures_dir / "official-multimae-small" / "checkpoint.pth", weights_only=False)[
        "model"
    ]
    assert torch.equal(model.state_dict()["encoder.1.mlp.fc2.weight"], official["encoder.1.mlp.fc2.weight"])
    assert report.loaded_decoders == ["rgb", "depth", "semseg", "norm_rgb"]


def test_init_with_a_different_encoder_lists_the_mismatches(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save({"model": MultiMAE(tiny_config(dim=48, outputs=())).state_dict()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the model: .*mis-shaped .*global_tokens: checkpoint \(1, 1, 48\)",
    ):
        load_pretrained(MultiMAE(tiny_config(outputs=("rgb",))), path)
