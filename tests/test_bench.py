"""`guidedmae bench`: every strategy timed on one model, printed as a table.

Nothing here asserts a speed (speed targets live in the benchmark's own output); these tests check that
the benchmark runs what it claims and reports it in the promised form.
"""

import runpy
import sys
from pathlib import Path

import pytest

from guidedmae.cli import main
from guidedmae.config import config_to_dict
from guidedmae.masking import MaskingConfig, strategy_variants
from guidedmae.masking.strategies import AttentionOptions
from tests.conftest import tiny_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_CONFIG = """
model: {image_size: 32, patch_size: 8, dim: 32, depth: 2, num_heads: 4, decoder_dim: 16, decoder_depth: 1,
        decoder_heads: 2, semseg_classes: 8, semseg_class_dim: 8}
masking: {num_visible: 8}
data: {augment: {size: 32}}
"""


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """Bench flags for a MultiMAE small enough to time in a test, given as a pretraining config."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    return ["--config", str(config), "--batch-size", "2", "--rounds", "1"]


def table_rows(output: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def test_variants_change_only_the_strategy_keys_and_keep_the_budget():
    base = MaskingConfig(
        num_visible=40,
        alphas=[2.0, 1.0, 1.0],
        sample_tasks_uniformly=True,
        attention=AttentionOptions(noise=0.3),
    )
    variants = strategy_variants(base, tiny_config(dim=48, num_heads=12))
    assert list(variants) == [
        "random",
        "attention-high",
        "attention-low",
        "noise-0.5",
        "heads-6",
        "hint-0.1",
        "received",
        "grid-2",
        "block",
        "cached-10",
        "color-green",
        "color-red",
        "color-blue",
        "loss-memory",
        "multiblock",
        "objects-high",
        "objects-low",
        "objects-high-half",
        "predicted-loss",
        "scout",
    ]
    budget = ("num_visible", "alphas", "sample_tasks_uniformly")
    for name, variant in variants.items():
        assert all(getattr(variant, key) == getattr(base, key) for key in budget), name

    def flat(config: MaskingConfig) -> dict:
        sections = config_to_dict(config)
        return {
            f"{key}.{option}": value for key in ("attention",) for option, value in sections.pop(key).items()
        } | sections

    reference = flat(variants["attention-high"])
    differences = {
        name: {key for key, value in flat(variant).items() if value != reference[key]}
        for name, variant in variants.items()
    }
    assert differences == {
        "random": {"strategy", "attention.noise"},  # random keeps the base's (unused) attention options
        "attention-high": set(),
        "attention-low": {"attention.select"},
        "noise-0.5": {"attention.noise"},
        "heads-6": {"attention.heads"},
        "hint-0.1": {"attention.hint"},
        "received": {"attention.score"},
        "grid-2": {"attention.grid"},
        "block": {"strategy", "attention.noise"},
        "cached-10": {"strategy", "attention.noise"},
        "color-green": {"strategy", "attention.noise"},  # green is the section's default
        "color-red": {"strategy", "attention.noise", "color_noise"},
        "color-blue": {"strategy", "attention.noise", "color_noise"},
        "loss-memory": {"strategy", "attention.noise"},
        "multiblock": {"strategy", "attention.noise"},
        "objects-high": {"strategy", "attention.noise"},
        "objects-low": {"strategy", "attention.noise", "objects"},
        "objects-high-half": {"strategy", "attention.noise", "objects"},
        "predicted-loss": {"strategy", "attention.noise"},
        "scout": {"strategy", "attention.noise"},
    }


def test_bench_prints_a_row_per_strategy_with_its_ratio_to_random(capsys, tiny):
    assert main(["bench", *tiny, "--strategies", "random", "attention-high", "received", "grid-2"]) == 0
    captured = capsys.readouterr()
    assert "tiny.yaml: " in captured.out and "48 tokens (8 visible), batch 2, fp32, cpu" in captured.out
    rows = table_rows(captured.out)
    assert list(rows) == ["random", "attention-high", "received", "grid-2"]
    assert rows["random"][1] == rows["random"][3] == "1.00"
    for median, median_ratio, fastest, fastest_ratio, memory, lowest, per_modality in rows.values():
        assert float(median) == float(fastest) > 0  # one timed round: both are its time
        assert float(median_ratio) > 0 and float(fastest_ratio) > 0
        assert float(memory) > 0
        values = [float(value) for value in per_modality.split(" / ")]
        assert len(values) == 3 and float(lowest) == min(values) and all(0 <= v <= 1 for v in values)
    assert rows["attention-high"][5] == "1.00"  # the exact pass agrees with itself
    assert "round 2/2: random" in captured.err  # progress as the rounds run


def test_a_subset_of_strategies_without_warm_up_has_no_memory_reading(capsys, tiny):
    assert main(["bench", *tiny, "--warmup", "0", "--strategies", "random", "hint-0.1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["random", "hint-0.1"]
    assert rows["random"][4] == "n/a"  # without a warm-up round there is no CPU memory reading


@pytest.mark.slow  # a short pretraining first, then the benchmark: ~40 s on 2 cores
def test_a_trained_checkpoint_is_timed_with_its_own_model_and_budget(capsys, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    run = [
        f"out_dir={tmp_path / 'run'}",
        "data.num_samples=16",
        "data.batch_size=8",
        "schedule.total_epochs=1",
        "schedule.warmup_epochs=0",
    ]
    assert main(["pretrain", str(config), *run, "log.picture_every=0"]) == 0
    checkpoint = tmp_path / "run" / "checkpoint-last.pt"
    flags = ["--batch-size", "2", "--rounds", "1", "--strategies", "attention-high", "cached-10"]
    assert main(["bench", "--checkpoint", str(checkpoint), *flags]) == 0
    captured = capsys.readouterr()
    assert f"{checkpoint}: " in captured.out and "(8 visible)" in captured.out
    assert list(table_rows(captured.out)) == ["attention-high", "cached-10"]
    assert main(["bench", "--checkpoint", str(checkpoint), "--config", str(config), *flags]) == 1
    assert "give --checkpoint or --config, not both" in capsys.readouterr().err


def test_the_cheap_guidance_script_prints_cost_and_agreement_rows(capsys, monkeypatch, tiny):
    script = BENCHMARKS / "cheap_guidance.py"
    flags = ["--grids", "2", "--refresh", "4", "40", "--scout-steps", "2", "--scout-scenes", "8"]
    monkeypatch.setattr(sys, "argv", [str(script), *tiny, *flags, "--scout-shares", "0", "0.5"])
    with pytest.raises(SystemExit) as exit_code:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_code.value.code == 0
    captured = capsys.readouterr()
    assert "scout step 2/2: imitation loss" in captured.err
    second_table = captured.out.index("| scout, on scenes it was never taught |")
    main_table, unseen_table = captured.out[:second_table], captured.out[second_table:]
    rows = table_rows(main_table)
    assert list(rows) == [
        "random",
        "exact",
        "grid 2",
        "cached, refresh every 4",
        "cached, refresh every 40",
        "scout alone",
        "scout, exact share 0.5",
    ]
    # Half the batch masked exactly, the other half as the scout alone masks it.
    assert float(rows["scout, exact share 0.5"][2]) >= float(rows["scout alone"][2])
    unseen = table_rows(unseen_table)
    assert list(unseen) == ["scout alone", "scout, exact share 0.5"]
    assert all(0 <= float(value) <= 1 for cells in unseen.values() for value in cells[1].split(" / "))
    assert rows["random"][1] == "1.00" and rows["exact"][2] == "1.00"
    # A refresh every k visits adds 1/k of an exact step to the step between refreshes: both rows must
    # give back the same step between refreshes (to the printed rounding).
    exact = float(rows["exact"][0])
    between = [(k * float(rows[f"cached, refresh every {k}"][0]) - exact) / (k - 1) for k in (4, 40)]
    assert between[0] == pytest.approx(between[1], abs=0.003)
    for cells in rows.values():
        assert all(0 <= float(value) <= 1 for value in cells[3].split(" / "))


def test_the_cheap_guidance_script_scores_the_scout_a_run_trained(capsys, monkeypatch, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    scout = ["masking.strategy=scout_attention", "masking.scout_attention.exact_share=0.5"]
    run = [
        f"out_dir={tmp_path / 'run'}",
        "data.num_samples=16",
        "data.batch_size=8",
        "schedule.total_epochs=1",
    ]
    assert (
        main(["pretrain", str(config), *run, *scout, "schedule.warmup_epochs=0", "log.picture_every=0"]) == 0
    )
    checkpoint = tmp_path / "run" / "checkpoint-last.pt"
    script = BENCHMARKS / "cheap_guidance.py"
    flags = ["--checkpoint", str(checkpoint), "--batch-size", "2", "--rounds", "1", "--grids", "2"]
    monkeypatch.setattr(sys, "argv", [str(script), *flags, "--scout-steps", "0", "--scout-shares", "0"])
    with pytest.raises(SystemExit) as exit_code:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_code.value.code == 0
    captured = capsys.readouterr()
    assert f"scout: the one its run trained, from {checkpoint}" in captured.out
    assert "scout alone" in table_rows(captured.out[: captured.out.index("| scout, on scenes")])

    # Without a checkpoint there is no trained scout to take.
    monkeypatch.setattr(sys, "argv", [str(script), "--config", str(config), *flags[2:], "--scout-steps", "0"])
    with pytest.raises(SystemExit) as exit_code:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_code.value.code == 2
    assert (
        "--scout-steps 0 takes the scout a scout_attention run trained; no --checkpoint"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategies", "random", "loss"], "unknown strategies ['loss']"),
        (["--rounds", "0"], "--rounds and --batch-size must be >= 1"),
        (["--config", "missing.yaml"], "config file not found"),
    ],
)
def test_bad_settings_are_named(capsys, tiny, flags, message):
    assert main(["bench", *tiny, *flags]) == 1
    assert message in capsys.readouterr().err
