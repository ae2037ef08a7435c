"""Typed configs: YAML over dataclass defaults, dotted overrides, errors naming the key, the shipped recipes."""

import pytest

from guidedmae.config import (
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    config_differences,
    config_to_dict,
    load_config,
    save_config,
)
from guidedmae.config.presets import CONFIG_ROOT

CONFIGS = CONFIG_ROOT / "pretrain"


def test_the_official_recipe_holds_multimae_b_settings():
    config = load_config(PretrainConfig, CONFIGS / "multimae-b_1600e.yaml", ["data.root=/data/in1k"])
    model = config.model.architecture(config.modalities)
    assert (model.dim, model.depth, model.num_heads, model.image_size, model.patch_size) == (
        768,
        12,
        12,
        224,
        16,
    )
    assert (model.decoder_dim, model.decoder_depth) == (256, 2) and model.outputs[-1] == "norm_rgb"
    assert config.masking.num_visible == 98 and config.masking.alphas == [1.0]
    assert (config.data.batch_size, config.optim.blr, config.optim.betas, config.optim.weight_decay) == (
        256,
        1e-4,
        (0.9, 0.95),
        0.05,
    )
    assert (config.schedule.total_epochs, config.schedule.warmup_epochs, config.schedule.warmup_lr) == (
        1600,
        40,
        1e-6,
    )
    assert (
        config.run.precision == "bf16"
        and config.data.augment.hflip == 0.5
        and config.data.root == "/data/in1k"
    )


def test_continuation_extends_the_recipe_and_requires_its_weights():
    with pytest.raises(ConfigError, match=r"required values not set \('\?\?\?'\): data.root, model.init"):
        load_config(PretrainConfig, CONFIGS / "continue_100e.yaml")
    config = load_config(
        PretrainConfig, CONFIGS / "continue_100e.yaml", ["data.root=/d", "model.init=/w/1600e.pth"]
    )
    assert (config.schedule.start_epoch, config.schedule.total_epochs) == (1600, 1700)
    assert (
        config.model.init == "/w/1600e.pth"
        and config.model.dim == 768
        and config.out_dir == "runs/continue_100e"
    )


def test_demo_is_small_synthetic_and_fp32():
    config = load_config(PretrainConfig, CONFIGS / "demo.yaml")
    assert config.data.source == "synthetic" and config.model.image_size == config.data.augment.size == 64
    assert config.run.precision == "fp32" and config.run.device == "cpu"


def test_overrides_are_typed_and_win_over_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {blr: 1.0e-3}\nmodel: {inputs: [rgb, depth, semseg]}\n")
    config = load_config(
        PretrainConfig,
        path,
        ["optim.blr=2e-4", "model.inputs=[rgb,depth]", "loss.weights.depth=2", "run.compile=true"],
    )
    assert config.optim.blr == 2e-4 and isinstance(config.optim.blr, float)
    assert config.model.inputs == ("rgb", "depth") and config.loss.weights == {"depth": 2.0}
    assert config.run.compile is True


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("optim: {blrr: 1.0}\n", [], r"run.yaml: unknown key 'optim.blrr'"),
        ("", ["model.depthh=3"], r"command line 'model.depthh=3': unknown key 'model.depthh'"),
        (
            "model: {dim: wide}\n",
            [],
            r"run.yaml: 'model.dim': Value 'wide' of type 'str' could not be converted to Integer",
        ),
        ("", ["data.batch_size=1.5"], r"'data.batch_size'"),
        ("", ["optim.blr"], r"overrides must be key=value"),
        ("run: {precision: fp8}\n", [], r"run.precision='fp8'; expected one of \('fp32', 'bf16', 'fp16'\)"),
        ("data: {augment: {size: 64}}\n", [], r"data.augment.size=64 must equal model.image_size=224"),
        ("- a list\n", [], r"expected a mapping of keys at the top level"),
    ],
)
def test_bad_configs_name_the_key_and_the_source(tmp_path, text, overrides, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, path, overrides)


def test_the_synthetic_label_is_checked(tmp_path):
    assert load_config(FinetuneConfig, None, ["data.label=count", "head.num_classes=5"]).data.label == "count"
    with pytest.raises(ConfigError, match=r"data.label='colour'; expected one of \('shape', 'count'\)"):
        load_config(FinetuneConfig, None, ["data.label=colour"])
    with pytest.raises(ConfigError, match="data.label='count' is a label of the synthetic scenes"):
        load_config(FinetuneConfig, None, ["data.label=count", "data.source=folder", "data.root=x"])


def test_extends_is_relative_to_the_file_and_cycles_are_caught(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\noptim: {blr: 5.0e-4}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\noptim: {blr: 7.0e-4}\n")
    config = load_config(PretrainConfig, tmp_path / "sub" / "child.yaml")
    assert config.seed == 3 and config.optim.blr == 7e-4
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="'extends' forms a cycle"):
        load_config(PretrainConfig, tmp_path / "a.yaml")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")


def test_saved_config_loads_back_to_the_same_config(tmp_path):
    config = load_config(PretrainConfig, CONFIGS / "demo.yaml", ["optim.lr_scale=3", "model.init=/w.pth"])
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(PretrainConfig, path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_differences_list_the_dotted_keys_that_changed():
    old = config_to_dict(PretrainConfig())
    new = config_to_dict(load_config(PretrainConfig, None, ["optim.blr=3e-4", "resume=auto"]))
    assert config_differences(old, new) == ["optim.blr: 0.0001 -> 0.0003", "resume: '' -> 'auto'"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_pretraining_config_loads_with_its_required_values(path):
    # Every recipe but the synthetic demo reads a data root; continuations also name their weights.
    overrides = [] if path.stem == "demo" else ["data.root=/data/in1k-multimae", "model.init=weights.pth"]
    config = load_config(PretrainConfig, path, overrides)
    assert config.out_dir == f"runs/{path.stem}"  # each writes to a folder of its own name
