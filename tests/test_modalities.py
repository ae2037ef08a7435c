"""Modalities by configuration: declarations, files of every format, and pretraining and fine-tuning end to
end with surface normals (built in) and a 2-channel modality read from .npy files (declared)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from guidedmae.cli import main
from guidedmae.config import ConfigError, FinetuneConfig, PretrainConfig, load_config
from guidedmae.data.datasets import FolderDataset, ShardDataset
from guidedmae.data.folder import read_image
from guidedmae.data.modalities import BUILTIN, declare
from guidedmae.data.transforms import AugmentConfig, augment_sample
from guidedmae.data.writers import save_image_atomic, write_sample
from guidedmae.infra.run_log import read_metrics
from guidedmae.models import MultiMAE

SIZE = 32
FLOW = {"channels": 2, "format": "npy", "normalize": "standardize", "loss": "l1", "flip_negates": [0]}
TINY_MODEL = (
    "model: {image_size: 32, patch_size: 8, dim: 32, depth: 2, num_heads: 4, decoder_dim: 16, decoder_depth: 1,\n"
    "        decoder_heads: 2, semseg_classes: 8, semseg_class_dim: 8, inputs: INPUTS, outputs: OUTPUTS}\n"
)
PRETRAIN = """
masking: {num_visible: 12}
data: {source: folder, root: ROOT, batch_size: 8, num_workers: 0, augment: {size: 32}}
optim: {blr: 2.0e-3}
schedule: {total_epochs: 2, warmup_epochs: 1}
run: {precision: fp32, threads: 1}
log: {every: 2, picture_every: 0}
checkpoint: {every: 4, keep: 1}
eval: {num_samples: 8}
"""
FINETUNE = """
head: {num_classes: 2}
data: {source: folder, root: ROOT, batch_size: 8, num_workers: 0, augment: {size: 32, semseg_stride: 4}}
optim: {lr: 1.0e-3}
schedule: {total_epochs: 2, warmup_epochs: 1}
run: {precision: fp32, threads: 1}
log: {every: 1}
"""


def unit_normals(rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] uint8 normals as Omnidata stores them: (n + 1) / 2 * 255."""
    normals = rng.normal(size=(SIZE, SIZE, 3)) + [0, 0, 2]
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return np.rint((normals + 1) / 2 * 255).astype(np.uint8)


def write_layout(root, split: str, count: int, seed: int) -> None:
    """rgb, depth, semseg and normals as PNG, flow as .npy, in two class folders."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        class_name, name = ("a", "b")[index % 2], f"{index:04d}"
        sample = {
            "rgb": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
            "depth": rng.uniform(0.5, 5.0, (SIZE, SIZE)).astype(np.float32),
            "semseg": rng.integers(0, 8, (SIZE, SIZE), dtype=np.uint8),
        }
        write_sample(root, split, class_name, name, sample)
        save_image_atomic(unit_normals(rng), root / split / "normals" / class_name / f"{name}.png")
        flow = rng.normal(size=(SIZE, SIZE, 2)).astype(np.float32)
        (root / split / "flow" / class_name).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "flow" / class_name / f"{name}.npy", flow)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    write_layout(root, "train", 16, seed=0)
    write_layout(root, "val", 8, seed=1)
    return root


def config_file(tmp_path, body: str, root, inputs, outputs=(), declared: dict | None = None):
    text = TINY_MODEL.replace("INPUTS", json.dumps(list(inputs))).replace(
        "OUTPUTS", json.dumps(list(outputs))
    )
    text += body.replace("ROOT", str(root))
    if declared:
        text += "modalities: " + json.dumps(declared) + "\n"
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(text)
    return path


def test_a_declaration_changes_a_builtin_or_adds_a_modality_and_bad_ones_name_the_key():
    assert declare("depth", {"scale": 256}).scale == 256 and declare("depth", {}).format == "png16"
    flow = declare("flow", FLOW)
    assert (flow.channels, flow.extensions, flow.flip_negates) == (2, (".npy",), (0,))
    problems = {
        "modalities.x.format='exr'": {"format": "exr"},
        "16-bit PNGs hold one channel": {"channels": 2, "format": "png16"},
        "normalize=fixed needs mean and std with one value per channel": {"normalize": "fixed", "mean": [0]},
        "modalities.x: unknown keys \\['chanels'\\]": {"chanels": 2},
        "a class map needs 1..65536 classes": {"kind": "class_map", "loss": "cross_entropy"},
        "class ids need a lossless format": {
            "kind": "class_map",
            "loss": "cross_entropy",
            "classes": 3,
            "format": "jpg",
        },
        "flip_negates=\\[3\\]: no channel 3": {"channels": 3, "format": "npy", "flip_negates": [3]},
    }
    for message, values in problems.items():
        with pytest.raises(ValueError, match=message):
            declare("x", values)


def test_every_format_reads_as_declared_and_a_channel_mismatch_names_the_file(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 5, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", values)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy", declare("flow", FLOW)), values)
    heights = rng.integers(0, 4000, (4, 5), dtype=np.uint16)
    Image.fromarray(heights).save(tmp_path / "h.tiff")
    elevation = declare("elevation", {"format": "tiff", "scale": 10})
    np.testing.assert_allclose(read_image(tmp_path / "h.tiff", elevation), heights / 10, rtol=1e-6)
    grey = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert (
        read_image(tmp_path / "g.png", declare("ir", {"scale": 255})).dtype == np.uint8
    )  # scaled after resize

    with pytest.raises(ValueError, match=r"a\.npy: flow3 declares 3 channel\(s\).*holds float32 \[4, 5, 2\]"):
        read_image(tmp_path / "a.npy", declare("flow3", {**FLOW, "channels": 3, "flip_negates": []}))
    with pytest.raises(ValueError, match=r"g\.png: ir3 must be an 8-bit 3-channel image, got PIL mode L"):
        read_image(tmp_path / "g.png", declare("ir3", {"channels": 3, "scale": 255}))
    with pytest.raises(ValueError, match=r"h\.tiff: ir must be an 8-bit 1-channel image"):
        read_image(tmp_path / "h.tiff", declare("ir", {"format": "png8"}))


def test_a_flip_turns_the_normals_x_component_and_nothing_else():
    normals = np.zeros((8, 8, 3), np.uint8)
    normals[..., 0], normals[..., 1], normals[..., 2] = 204, 128, 230  # n ~ (0.6, 0.004, 0.8)
    sample = {"rgb": np.zeros((8, 8, 3), np.uint8), "normals": normals}
    modalities = {"rgb": BUILTIN["rgb"], "normals": BUILTIN["normals"]}
    generator = torch.Generator().manual_seed(0)
    for hflip, sign in ((0.0, 1), (1.0, -1)):
        augment = AugmentConfig(size=8, scale=(1, 1), ratio=(1, 1), hflip=hflip)
        out = augment_sample(sample, augment, generator, modalities)["normals"]
        x, y, z = (value / 255 * 2 - 1 for value in (204, 128, 230))
        expected = torch.tensor([sign * x, y, z]).view(3, 1, 1).expand(3, 8, 8)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_a_folder_dataset_returns_declared_modalities_as_model_tensors(layout):
    modalities = ["rgb", "normals", declare("flow", FLOW)]
    sample = FolderDataset(layout, "train", modalities, AugmentConfig(size=16))[0]
    assert sample["normals"].shape == (3, 16, 16) and sample["flow"].shape == (2, 16, 16)
    assert sample["normals"].abs().max() <= 1.0 + 1e-6  # unit vectors, centred by the fixed normalization


def pretrain_and_finetune(tmp_path, root, inputs, declared=None):
    """Pretrain on `inputs` (every one also an output, plus norm_rgb), then fine-tune a classifier on them
    from that checkpoint; returns the pretraining run folder and the fine-tuning scores."""
    outputs = [*inputs, "norm_rgb"]
    pretrain = config_file(tmp_path, PRETRAIN, root, inputs, outputs, declared)
    run = tmp_path / "pretrain"
    assert main(["pretrain", str(pretrain), f"out_dir={run}"]) == 0
    finetune = config_file(tmp_path, FINETUNE, root, inputs, (), declared)
    tuned = tmp_path / "finetune"
    assert (
        main(["finetune", str(finetune), f"out_dir={tuned}", f"model.init={run / 'checkpoint-last.pt'}"]) == 0
    )
    return run, json.loads((tuned / "results.json").read_text())


def test_pretraining_and_finetuning_with_rgb_depth_semseg_and_normals(tmp_path, layout):
    run, results = pretrain_and_finetune(tmp_path, layout, ["rgb", "depth", "semseg", "normals"])
    lines = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert {"loss_rgb", "loss_depth", "loss_semseg", "loss_normals", "loss_norm_rgb"} <= set(lines[-1])
    assert all(np.isfinite(r["loss_normals"]) for r in lines)
    weights = torch.load(run / "checkpoint-last.pt", weights_only=True)["model"]
    assert weights["input_adapters.normals.proj.weight"].shape == (32, 3, 8, 8)
    assert weights["output_adapters.normals.out_proj.weight"].shape == (3 * 8 * 8, 16)
    assert Image.open(sorted((run / "pictures").glob("*.png"))[-1]).size[1] > 0
    assert set(results["metrics"]) == {"top1", "top5"}


def test_surface_normals_are_a_fine_tuning_task_scored_in_degrees(tmp_path, layout):
    config = config_file(tmp_path, FINETUNE, layout, ["rgb"])
    overrides = [f"out_dir={tmp_path / 'normals'}", "head.task=normals", "head.kind=linear",
                 "data.augment.semseg_stride=1"]  # fmt: skip
    assert main(["finetune", str(config), *overrides]) == 0
    results = json.loads((tmp_path / "normals" / "results.json").read_text())
    metrics = results["metrics"]
    assert results["task"] == "normals"
    assert set(metrics) == {
        "angle_mean",
        "angle_median",
        "angle_rmse",
        "within_11.25",
        "within_22.5",
        "within_30",
    }
    assert 0 < metrics["angle_mean"] < 180 and 0 <= metrics["within_11.25"] <= metrics["within_30"] <= 100
    weights = torch.load(tmp_path / "normals" / "checkpoint-last.pt", weights_only=True)["model"]
    assert weights["head.classifier.weight"].shape[:2] == (3, 32)  # x, y, z per pixel


def test_pretraining_finetuning_and_export_with_a_declared_two_channel_npy_modality(tmp_path, layout):
    run, results = pretrain_and_finetune(tmp_path, layout, ["rgb", "flow"], {"flow": FLOW})
    lines = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert "loss_flow" in lines[-1] and np.isfinite(lines[-1]["loss_flow"])
    weights = torch.load(run / "checkpoint-last.pt", weights_only=True)["model"]
    assert weights["input_adapters.flow.proj.weight"].shape == (32, 2, 8, 8)
    assert 0 <= results["metrics"]["top1"] <= 100

    # The exported model says what its adapters take: it loads with no config beside it.
    assert main(["export", str(run / "checkpoint-last.pt"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    model = MultiMAE.from_pretrained(tmp_path / "hf")
    assert model.config.modality("flow").channels == 2 and model.config.inputs == ("rgb", "flow")


def test_bad_declarations_and_files_that_disagree_are_clear_errors(tmp_path, layout, capsys):
    flow = ["rgb", "flow"]
    with pytest.raises(
        ConfigError, match="unknown modality 'flow'.*declare others in the modalities: section"
    ):
        load_config(PretrainConfig, config_file(tmp_path, PRETRAIN, layout, flow, flow))
    with pytest.raises(ConfigError, match="modalities.flow.format='exr'"):
        load_config(
            PretrainConfig,
            config_file(tmp_path, PRETRAIN, layout, flow, flow, {"flow": {**FLOW, "format": "exr"}}),
        )
    with pytest.raises(ConfigError, match="data.source=synthetic has no normals"):
        load_config(FinetuneConfig, None, ["model.inputs=[rgb,normals]", "head.num_classes=5"])
    with pytest.raises(ConfigError, match="declare modalities in the top-level `modalities:` section"):
        load_config(PretrainConfig, None, ["model.modalities={flow: {channels: 2}}"])

    wrong = {"flow": {**FLOW, "channels": 3, "flip_negates": []}}
    config = config_file(tmp_path, PRETRAIN, layout, flow, flow, wrong)
    assert main(["pretrain", str(config), f"out_dir={tmp_path / 'run'}"]) != 0
    error = capsys.readouterr().err
    assert "flow declares 3 channel(s)" in error and ".npy" in error and "[32, 32, 2]" in error


def test_shards_of_a_declared_modality_read_back_as_the_folder(tmp_path, layout):
    config = tmp_path / "modalities.yaml"
    config.write_text("modalities: " + json.dumps({"flow": FLOW}) + "\n")
    arguments = ["--root", str(layout), "--out", str(tmp_path / "shards"), "--samples-per-shard", "8"]
    assert main(["data", "shard", *arguments, "--modalities", "rgb", "flow", "--config", str(config)]) == 0
    modalities = ["rgb", declare("flow", FLOW)]
    augment = AugmentConfig(size=16, train=False)
    folder = FolderDataset(layout, "train", modalities, augment)
    shards = ShardDataset(tmp_path / "shards", "train", modalities, augment)
    assert len(shards) == len(folder)
    from_folder = [folder[index] for index in range(len(folder))]
    for index in range(len(shards)):  # shards hold the samples shuffled: match them by their flow
        sample = shards[index]
        same = [other for other in from_folder if torch.equal(other["flow"], sample["flow"])]
        assert len(same) == 1 and torch.equal(same[0]["rgb"], sample["rgb"])
