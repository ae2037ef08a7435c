"""`guidedmae finetune` / `evaluate` end to end at toy size: probe, fine-tune, resume, dense tasks, data sources."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import tiny_config

from guidedmae.cli import main
from guidedmae.config import ConfigError, FinetuneConfig, load_config
from guidedmae.config.presets import CONFIG_ROOT
from guidedmae.data.writers import write_synthetic
from guidedmae.engine.finetune import evaluate_checkpoint, finetune
from guidedmae.engine.finetune_setup import build_model, training_set
from guidedmae.engine.knn import knn_votes
from guidedmae.infra.checkpoints import read_checkpoint
from guidedmae.infra.optim import layer_decay_groups
from guidedmae.models import MultiMAE
from guidedmae.models.pretrained import load_pretrained

ENCODER = [
    "model.image_size=32",
    "model.patch_size=8",
    "model.dim=32",
    "model.depth=2",
    "model.num_heads=4",
    "model.semseg_classes=8",
    "model.semseg_class_dim=8",
]
SMALL_RUN = [
    *ENCODER,
    "data.augment.size=32",
    "data.num_samples=16",
    "data.eval_num_samples=8",
    "data.batch_size=8",
    "data.num_workers=0",
    "schedule.total_epochs=2",
    "schedule.warmup_epochs=1",
    "run.precision=fp32",
    "run.threads=1",
    "log.every=1",
]
CLASSIFICATION = ["head.num_classes=5", "optim.lr=1e-3"]
DENSE = [
    "head.dim=64",
    "head.preds_per_patch=16",
    "head.depth=1",
    "head.feature_dim=16",
    "head.layer_dims=[8,8,16,16]",
]


def config_of(tmp_path, *overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, [f"out_dir={tmp_path / 'run'}", *SMALL_RUN, *overrides])


def pretraining_checkpoint(tmp_path):
    """A MultiMAE with every input and decoder, saved as our pretraining saves its weights and config."""
    config = tiny_config(semseg_classes=8)
    model = MultiMAE(config)
    path = tmp_path / "pretrained.pt"
    torch.save({"model": model.state_dict(), "config": {"model": asdict(config)}, "step": 1}, path)
    return model, path


def test_linear_probe_trains_the_head_only_and_writes_results(tmp_path):
    pretrained, path = pretraining_checkpoint(tmp_path)
    config = config_of(tmp_path, *CLASSIFICATION, f"model.init={path}", "model.freeze_encoder=true")
    result = finetune(config)
    assert result.steps == 4  # 16 samples / batch 8 = 2 steps per epoch, 2 epochs
    weights = read_checkpoint(result.checkpoint)["model"]
    for name, value in pretrained.state_dict().items():
        if name.startswith(("encoder.", "global_tokens", "input_adapters.rgb.")):
            assert torch.equal(weights[f"encoder.{name}"], value), name
    assert not torch.equal(weights["head.head.weight"], build_model(config).head.head.weight)
    results = json.loads(result.results.read_text())
    assert results["task"] == "classification" and results["step"] == 4
    assert set(results["metrics"]) == {"top1", "top5"} and 0 <= results["metrics"]["top1"] <= 100
    logged = [json.loads(line) for line in result.metrics.read_text().splitlines()]
    assert [line["step"] for line in logged if "eval/top1" in line] == [2, 4]  # every epoch (eval.every=1)


def test_full_finetuning_with_layer_decay_mixup_and_drop_path_updates_the_encoder(tmp_path):
    _, path = pretraining_checkpoint(tmp_path)
    config = config_of(
        tmp_path, *CLASSIFICATION, f"model.init={path}", "mixup.mixup=0.8", "mixup.cutmix=1.0",
        "mixup.label_smoothing=0.1", "model.drop_path=0.1", "optim.layer_decay=0.5",
    )  # fmt: skip
    result = finetune(config)
    weights = read_checkpoint(result.checkpoint)["model"]
    initial = build_model(config)
    load_pretrained(initial.encoder, path)
    assert not torch.equal(
        weights["encoder.encoder.0.attn.qkv.weight"], initial.encoder.encoder[0].attn.qkv.weight
    )


def test_layer_decay_groups_scale_lr_by_depth_and_keep_weight_decay_exemptions(tmp_path):
    model = build_model(config_of(tmp_path, *CLASSIFICATION))
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=0.5)
    scale_of, decay_of = {}, {}
    for group in groups:
        for param in group["params"]:
            scale_of[id(param)], decay_of[id(param)] = group["lr_scale"], group["weight_decay"]
    # depth 2: input adapters 0.5^3, block 0 0.5^2, block 1 0.5, head 1
    assert scale_of[id(model.encoder.input_adapters["rgb"].proj.weight)] == 0.125
    assert scale_of[id(model.encoder.global_tokens)] == 0.125
    assert scale_of[id(model.encoder.encoder[0].mlp.fc1.weight)] == 0.25
    assert scale_of[id(model.encoder.encoder[1].attn.proj.weight)] == 0.5
    assert scale_of[id(model.head.head.weight)] == 1.0
    assert decay_of[id(model.encoder.encoder[1].attn.proj.weight)] == 0.05
    assert decay_of[id(model.encoder.encoder[1].norm1.weight)] == 0.0
    assert decay_of[id(model.encoder.global_tokens)] == 0.0
    assert len(scale_of) == sum(p.requires_grad for p in model.parameters())


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    overrides = [
        *CLASSIFICATION,
        "checkpoint.every=2",
        "checkpoint.keep=5",
        "mixup.mixup=0.8",
        "model.drop_path=0.2",
    ]
    whole = finetune(config_of(tmp_path / "whole", *overrides))
    # A run killed after its step-2 checkpoint: only that checkpoint is left in its folder.
    interrupted = tmp_path / "interrupted" / "run"
    interrupted.mkdir(parents=True)
    (interrupted / "checkpoint-00000002.pt").write_bytes(
        (whole.out_dir / "checkpoint-00000002.pt").read_bytes()
    )
    resumed = finetune(config_of(tmp_path / "interrupted", *overrides, "resume=auto"))
    assert resumed.steps == 4
    final, expected = read_checkpoint(resumed.checkpoint)["model"], read_checkpoint(whole.checkpoint)["model"]
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert (
        json.loads(resumed.results.read_text())["metrics"] == json.loads(whole.results.read_text())["metrics"]
    )


def test_semseg_reports_miou_and_per_class_iou_of_the_synthetic_classes(tmp_path):
    config = config_of(
        tmp_path, *DENSE, "head.task=semseg", "head.num_classes=8", "data.augment.semseg_stride=1",
        "mixup.mixup=0", "optim.lr=1e-3", "eval.every=0",
    )  # fmt: skip
    result = finetune(config)
    assert {"miou", "pixel_accuracy", "mean_accuracy"} <= set(result.scores["metrics"])
    assert list(result.scores["per_class_iou"]) == [
        "background",
        "floor",
        "wall",
        "sphere",
        "box",
        "cylinder",
        "cone",
        "torus",
    ]
    assert "| floor |" in result.scores["iou_table"]
    # The objects' IoU are metrics (studies tabulate them), apart from floor, wall and sky.
    metrics, per_class = result.scores["metrics"], result.scores["per_class_iou"]
    objects = {name: per_class[name] for name in ("sphere", "box", "cylinder", "cone", "torus")}
    assert {key: metrics[key] for key in metrics if key.startswith("iou/")} == {
        f"iou/{name}": iou for name, iou in objects.items() if iou is not None
    }
    found = [iou for iou in objects.values() if iou is not None]
    assert metrics["miou_objects"] == pytest.approx(sum(found) / len(found))


@pytest.mark.parametrize("inputs", [["rgb"], ["rgb", "semseg"]])
def test_depth_regression_from_rgb_or_rgb_and_semseg_reports_depth_errors(tmp_path, inputs):
    config = config_of(
        tmp_path, *DENSE, "head.task=depth", "data.augment.depth=metres", f"model.inputs={inputs}",
        "task.max_depth=15", "optim.lr=1e-3", "eval.every=0",
    )  # fmt: skip
    metrics = finetune(config).scores["metrics"]
    assert set(metrics) == {"rmse", "abs_rel", "delta1", "delta2", "delta3"}
    assert metrics["rmse"] > 0 and 0 <= metrics["delta1"] <= metrics["delta2"] <= metrics["delta3"] <= 100


def test_evaluate_reproduces_the_final_evaluation_and_can_switch_to_whole_images(tmp_path, capsys):
    config = config_of(
        tmp_path, *DENSE, "head.task=semseg", "head.num_classes=8", "data.augment.semseg_stride=1", "eval.every=0",
    )  # fmt: skip
    result = finetune(config)
    _, scores = evaluate_checkpoint(result.checkpoint)
    assert scores["metrics"] == pytest.approx(result.scores["metrics"])
    _, whole = evaluate_checkpoint(result.checkpoint, ["eval.mode=whole"])
    assert whole["metrics"] == pytest.approx(result.scores["metrics"])  # square scenes: the same pixels
    assert (
        main(["evaluate", str(result.checkpoint), "eval.mode=sliding", "--out", str(tmp_path / "eval.json")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| miou |" in printed and "per-class IoU" in printed
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["miou"] == pytest.approx(
        result.scores["metrics"]["miou"]
    )


def test_evaluate_refuses_a_pretraining_checkpoint(tmp_path, capsys):
    _, path = pretraining_checkpoint(tmp_path)
    assert main(["evaluate", str(path)]) == 1
    assert "not a fine-tuning checkpoint" in capsys.readouterr().err


def test_low_data_regime_trains_on_a_balanced_seeded_subset(tmp_path):
    config = config_of(tmp_path, *CLASSIFICATION, "data.num_samples=40", "data.per_class=2")
    subset = training_set(config)
    labels = [int(subset[index]["label"]) for index in range(len(subset))]
    assert np.bincount(labels, minlength=5).tolist() == [2] * 5
    assert training_set(config).indices == subset.indices  # seeded
    with pytest.raises(ValueError, match="data.per_class=9 is more than some classes hold"):
        training_set(config_of(tmp_path, *CLASSIFICATION, "data.num_samples=40", "data.per_class=9"))


def test_folder_layout_classification(tmp_path):
    write_synthetic(tmp_path / "data", n=16, size=32, split="train", seed=0)
    write_synthetic(tmp_path / "data", n=8, size=32, split="val", seed=1)
    config = config_of(tmp_path, *CLASSIFICATION, "data.source=folder", f"data.root={tmp_path / 'data'}")
    assert set(finetune(config).scores["metrics"]) == {"top1", "top5"}


def test_ade20k_layout_semseg_with_reduce_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for split, count in (("training", 8), ("validation", 4)):
        for index in range(count):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{index}.jpg"
            )
            Image.fromarray(rng.integers(0, 4, (40, 48), dtype=np.uint8)).save(
                root / "annotations" / split / f"{index}.png"
            )
    config = config_of(
        tmp_path, *DENSE, "data.source=ade20k", f"data.root={root}", "data.split=training", "data.eval_split=validation",
        "head.task=semseg", "head.num_classes=3", "task.reduce_zero_label=true", "data.augment.semseg_stride=1",
        "data.num_samples=8", "data.batch_size=4", "eval.mode=whole", "eval.every=0",
    )  # fmt: skip
    scores = finetune(config).scores
    assert len(scores["per_class_iou"]) == 3  # ids 1..3 -> classes 0..2; 0 is ignored


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["head.task=depth", "model.inputs=[rgb,depth]"], "cannot also be in model.inputs"),
        (["head.task=depth"], "data.augment.depth='standardize'; the depth target"),
        (["head.task=semseg", "head.num_classes=8"], "semseg_stride=4; semseg targets are full resolution"),
        (
            ["head.task=semseg", "data.augment.semseg_stride=1", "mixup.cutmix=1"],
            "mixup / cutmix mix image labels",
        ),
        (["model.outputs=[rgb]"], "a fine-tuning encoder has no decoders"),
        (["optim.layer_decay=0"], "optim.layer_decay=0"),
    ],
)
def test_inconsistent_configs_are_refused_naming_the_keys(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_of(tmp_path, *overrides)


@pytest.mark.parametrize(
    "path", sorted((CONFIG_ROOT / "finetune").glob("*.yaml")), ids=lambda path: path.stem
)
def test_every_shipped_finetune_config_loads(path):
    # The official recipes read a data root; the synthetic ones render their scenes and refuse one.
    config = load_config(
        FinetuneConfig, path, [] if path.stem.startswith("synthetic") else ["data.root=/data"]
    )
    assert config.head.task in ("classification", "semseg", "depth")


def test_official_recipes_ask_for_their_data_root(tmp_path):
    with pytest.raises(ConfigError, match=r"required values not set \('\?\?\?'\): data.root"):
        load_config(FinetuneConfig, "ade20k")


def test_the_knn_probe_trains_nothing_and_votes_with_its_neighbours(tmp_path):
    _, path = pretraining_checkpoint(tmp_path)
    config = config_of(tmp_path, *CLASSIFICATION, f"model.init={path}", "head.kind=knn", "head.knn_k=3")
    result = finetune(config)
    assert result.steps == 0 and not result.checkpoint.exists()
    results = json.loads(result.results.read_text())
    assert 0 <= results["metrics"]["top1"] <= 100 and results["metrics"]["top5"] == 100  # 5 classes
    # Votes weigh exp(similarity / T): the nearest neighbours' labels win.
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    votes = knn_votes(torch.tensor([[1.0, 0.05]]), bank, torch.tensor([2, 2, 0]), 3, k=2, temperature=0.07)
    assert votes.argmax().item() == 2 and votes[0, 0] == 0


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_linear_dense_probes_train_only_a_per_token_linear_map(tmp_path, task):
    task_settings = {
        "semseg": ["head.num_classes=8", "data.augment.semseg_stride=1"],
        "depth": ["data.augment.depth=metres"],
    }[task]
    config = config_of(
        tmp_path, f"head.task={task}", "head.kind=linear", "model.freeze_encoder=true", *task_settings
    )
    result = finetune(config)
    weights = read_checkpoint(result.checkpoint)["model"]
    head = {key for key in weights if key.startswith("head.")}
    assert head == {
        "head.norm.weight", "head.norm.bias", "head.norm.running_mean", "head.norm.running_var",
        "head.norm.num_batches_tracked", "head.classifier.weight", "head.classifier.bias",
    }  # fmt: skip
    assert weights["head.classifier.weight"].shape[:2] == ((8, 32) if task == "semseg" else (1, 32))
    assert set(result.scores["metrics"]) >= ({"miou"} if task == "semseg" else {"rmse", "delta1"})


def test_the_mae_linear_probe_normalizes_with_batchnorm_without_affine(tmp_path):
    config = config_of(tmp_path, *CLASSIFICATION, "model.freeze_encoder=true", "head.norm=batchnorm")
    model = build_model(config)
    assert isinstance(model.head.norm, torch.nn.BatchNorm1d) and model.head.norm.weight is None
    assert 0 <= finetune(config).scores["metrics"]["top1"] <= 100
