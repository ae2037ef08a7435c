"""Configs by name: every shipped config is package data, loaded by its name wherever a config is taken; a
file wins over a name; an unknown name is one line with the close ones; `guidedmae configs` lists and shows."""

import pytest

from guidedmae.cli import main
from guidedmae.config import FinetuneConfig, PretrainConfig, load_config
from guidedmae.config.presets import CONFIG_KINDS, CONFIG_ROOT, find_config, list_configs
from guidedmae.study.plan import load_study, plan


@pytest.mark.parametrize("kind", CONFIG_KINDS)
def test_every_shipped_config_is_listed_and_found_by_name(kind):
    configs = list_configs(kind)
    assert configs and all(description and len(description) <= 100 for description in configs.values())
    for name in configs:
        assert find_config(kind, name) == CONFIG_ROOT / kind / f"{name}.yaml"


def test_configs_load_and_studies_plan_by_name(tmp_path):
    assert load_config(PretrainConfig, "demo").model.image_size == 64
    assert load_config(FinetuneConfig, "synthetic_semseg_probe").head.kind == "linear"  # extends siblings
    study, folder = load_study("reference_cpu_quick", [f"out_dir={tmp_path}"])
    runs = plan(study, folder)
    assert {run.config for run in runs} <= {str(path) for path in CONFIG_ROOT.rglob("*.yaml")}
    # A file of the user's extends a shipped config by its name.
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: demo\nmodel: {dim: 64}\n")
    config = load_config(PretrainConfig, mine)
    assert (config.model.dim, config.model.image_size) == (64, 64)


def test_a_file_wins_over_a_name_and_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthetic_knn").write_text("extends: synthetic_cls\nhead: {kind: knn, knn_k: 3}\n")
    assert load_config(FinetuneConfig, "synthetic_knn").head.knn_k == 3
    assert load_config(FinetuneConfig, "synthetic_knn").head.knn_k == 3
    notes = capsys.readouterr().err
    assert notes.count("is a file and also a shipped finetune config's name; the file is read") == 1


def test_unknown_or_misplaced_names_are_one_line(capsys):
    assert main(["pretrain", "dmeo"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == "guidedmae pretrain: error: no pretrain config file or name 'dmeo' (close: demo)"
    )
    assert main(["pretrain", "synthetic_cls"]) == 1
    assert "'synthetic_cls' is a shipped finetune config, not a pretrain config" in capsys.readouterr().err
    assert main(["pretrain", "missing/run.yaml"]) == 1
    assert "config file not found: missing/run.yaml" in capsys.readouterr().err
    assert main(["configs", "show", "refrence_cpu"]) == 1
    assert "no shipped config named 'refrence_cpu' (close: reference_cpu" in capsys.readouterr().err


def test_the_configs_command_lists_and_shows(capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{kind} (" in listing for kind in CONFIG_KINDS) and "  demo " in listing
    assert main(["configs", "study"]) == 0
    assert "reference_cpu" in capsys.readouterr().out
    assert main(["configs", "show", "demo"]) == 0
    assert capsys.readouterr().out == (CONFIG_ROOT / "pretrain" / "demo.yaml").read_text()
