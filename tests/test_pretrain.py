"""`guidedmae pretrain` end to end on a tiny model and synthetic scenes: outputs, resume after SIGKILL
(bit-exact), continuation, initialization from weights, precisions and errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from guidedmae.cli import main
from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.pretrain import PretrainJob, held_out_losses
from guidedmae.infra.distributed import DistributedContext
from guidedmae.infra.memory import TRAINING_TRIM_THRESHOLD
from guidedmae.infra.optim import set_lr
from guidedmae.infra.run_log import read_metrics
from guidedmae.infra.schedule import START, LRSchedule
from guidedmae.models import MultiMAE

ROOT = Path(__file__).resolve().parents[1]

TINY = """
model: {image_size: 32, patch_size: 8, dim: 32, depth: 2, num_heads: 4, decoder_dim: 16, decoder_depth: 1,
        decoder_heads: 2, semseg_classes: 8, semseg_class_dim: 8}
masking: {num_visible: 12}
data: {num_samples: 64, batch_size: 8, num_workers: 0, augment: {size: 32}}
optim: {blr: 2.0e-3}
schedule: {total_epochs: 3, warmup_epochs: 1}
run: {precision: fp32, threads: 1}
log: {every: 4, picture_every: 8}
checkpoint: {every: 4, keep: 2}
eval: {num_samples: 16}
"""


def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "checkpoint-last.pt", weights_only=True)["model"]


def losses_by_step(out_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r}


def test_a_run_leaves_checkpoint_metrics_tensorboard_pictures_and_its_config(tmp_path, capsys):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert (
        f"checkpoint:  {out / 'checkpoint-last.pt'}" in printed
        and f"pictures:    {out / 'pictures'}" in printed
    )

    records = read_metrics(out / "metrics.jsonl")
    start = next(r for r in records if r.get("event") == "start")
    assert start["total_batch"] == 8 and start["peak_lr"] == pytest.approx(2e-3 * 8 / 256)
    assert start["steps"] == 24 and start["steps_per_epoch"] == 8
    lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in lines] == [4, 8, 12, 16, 20, 24]
    assert {"loss_rgb", "loss_depth", "loss_semseg", "loss_norm_rgb", "lr", "samples_per_s", "epoch"} <= set(
        lines[0]
    )
    for r in lines:  # the total is the sum of the per-output losses (weights 1)
        parts = r["loss_rgb"] + r["loss_depth"] + r["loss_semseg"] + r["loss_norm_rgb"]
        assert r["loss"] == pytest.approx(parts, rel=1e-5)
    assert next(r for r in records if r.get("event") == "weights_check")["identical"] is True

    checkpoint = torch.load(out / "checkpoint-last.pt", weights_only=True)
    assert checkpoint["step"] == 24 and checkpoint["data"] == {
        "epoch": 3,
        "batch": 0,
        "nonfinite_in_a_row": 0,
        "world_size": 1,
        "batch_size": 8,
    }
    assert set(checkpoint) >= {"model", "optimizer", "scaler", "schedule", "rng", "config"}
    assert sorted(p.name for p in out.glob("checkpoint-0*.pt")) == [
        "checkpoint-00000020.pt",
        "checkpoint-00000024.pt",
    ]
    assert load_config(PretrainConfig, out / "config.yaml") == load_config(
        PretrainConfig, config, [f"out_dir={out}"]
    )
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    pictures = sorted(p.name for p in (out / "pictures").iterdir())
    assert pictures == ["step-00000008.png", "step-00000016.png", "step-00000024.png"]
    with Image.open(out / "pictures" / pictures[-1]) as image:
        assert image.format == "PNG" and image.height > image.width  # 4 samples x 4 outputs, stacked


def run_until_killed(command: list[str], checkpoint: Path) -> None:
    """Start `command`, SIGKILL it as soon as `checkpoint` exists (polling the file), check it was mid-run."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 300  # a guard against a hung child, not a timing assumption
    while not checkpoint.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"the run ended before its checkpoint: {process.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {checkpoint.name} after 300 s")
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


STATEFUL_MASKING = {
    "random": [],
    # a predictor trained by the optimizer, loss averages driving the budget, a curriculum over the run
    "learned": [
        "masking.strategy=predicted_loss",
        "masking.budget=adaptive",
        "masking.curriculum.shape=linear",
        "masking.curriculum.end=0.5",
    ],
    # a memory of every sample's patch losses, Gumbel sampling, random images, a mixture budget
    "remembered": [
        "masking.strategy=loss_memory",
        "masking.sampling=gumbel",
        "masking.random_images=0.3",
        "masking.budget=mixture",
        "masking.alpha_mixture=[[1,1,1],[4,1,1]]",
    ],
    # remembered attention maps refreshed on every second visit, and the visit counts
    "cached": ["masking.strategy=cached_attention", "masking.cached_attention.refresh=2"],
    # a scout encoder trained by the optimizer on a share of each batch
    "scout": [
        "masking.strategy=scout_attention",
        "masking.scout_attention.dim=16",
        "masking.scout_attention.heads=2",
    ],
}


# Every strategy whose state lives beside the model resumes bit-exactly; two of them (about 15 s each on
# 2 cores) run with the slow tests only: the cache and the scout restore through the same saved-state path.
SLOW_RESUMES = ("cached", "scout")


@pytest.mark.parametrize(
    "masking",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_RESUMES else name
        for name in STATEFUL_MASKING
    ],
)
def test_resume_after_sigkill_ends_bit_exactly_where_an_uninterrupted_run_ends(tmp_path, masking):
    config = tiny_config(tmp_path)
    settings = ["schedule.total_epochs=6", "log.picture_every=0", "log.every=1", *STATEFUL_MASKING[masking]]
    runs = uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert main(["pretrain", str(config), f"out_dir={uninterrupted}", *settings]) == 0

    command = [sys.executable, "-m", "guidedmae", "pretrain", str(config), f"out_dir={killed}", *settings]
    run_until_killed(command, killed / "checkpoint-00000008.pt")
    assert main(["pretrain", str(config), f"out_dir={killed}", "resume=auto", *settings]) == 0

    for part in ("model", "strategy"):  # the strategy's weights and buffers too (NaN: unseen memory cells)
        expected, resumed = (torch.load(out / "checkpoint-last.pt", weights_only=True)[part] for out in runs)
        assert expected.keys() == resumed.keys()
        for key in expected:
            torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, equal_nan=True)
    # metrics.jsonl kept the killed run's lines; every step's loss equals the uninterrupted run's.
    records = read_metrics(killed / "metrics.jsonl")
    [resumed_at] = [r["step"] for r in records if r.get("event") == "resumed"]
    assert 8 <= resumed_at < 48
    assert losses_by_step(killed) == losses_by_step(uninterrupted)
    assert [r["step"] for r in records if "loss" in r][:8] == list(range(1, 9))


def test_resume_refuses_a_changed_layout_and_a_fresh_run_refuses_a_used_folder(tmp_path, capsys):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    assert (
        main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=1", "log.picture_every=0"])
        == 0
    )
    assert main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=1"]) == 1
    assert "already holds checkpoints (checkpoint-00000008.pt); pass resume=auto" in capsys.readouterr().err
    assert main(["pretrain", str(config), f"out_dir={out}", "resume=auto", "data.batch_size=4"]) == 1
    error = capsys.readouterr().err
    assert "cannot resume exactly, the run's layout changed" in error and "batch_size: 8 -> 4" in error
    # Resuming a finished run does nothing and leaves it as it was.
    before = (out / "checkpoint-last.pt").stat().st_mtime_ns
    assert main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=1", "resume=auto"]) == 0
    assert (out / "checkpoint-last.pt").stat().st_mtime_ns == before


def test_continuation_runs_the_tail_of_the_longer_schedule_from_earlier_weights(tmp_path):
    config = tiny_config(tmp_path)
    first = tmp_path / "first"
    assert (
        main(["pretrain", str(config), f"out_dir={first}", "schedule.total_epochs=2", "log.picture_every=0"])
        == 0
    )
    tail = tmp_path / "tail"
    settings = [
        f"model.init={first / 'checkpoint-last.pt'}",
        "schedule.start_epoch=2",
        "schedule.total_epochs=3",
    ]
    assert (
        main(["pretrain", str(config), f"out_dir={tail}", "log.every=1", "log.picture_every=0", *settings])
        == 0
    )
    records = read_metrics(tail / "metrics.jsonl")
    init = next(r for r in records if r.get("event") == "init")
    assert init["loaded_decoders"] == ["rgb", "depth", "semseg", "norm_rgb"] and init["fresh_decoders"] == []
    schedule = LRSchedule(load_config(PretrainConfig, config, settings).schedule, 2e-3 * 8 / 256, 8)
    assert [r["lr"] for r in records if "lr" in r] == [schedule.lr(16 + step) for step in range(8)]
    assert torch.load(tail / "checkpoint-last.pt", weights_only=True)["step"] == 8


def test_init_from_an_encoder_only_file_reports_the_fresh_decoders(tmp_path, capsys):
    config = tiny_config(tmp_path)
    loaded = load_config(PretrainConfig, config)
    architecture = loaded.model.architecture(loaded.modalities)
    encoder = MultiMAE(type(architecture)(**{**vars(architecture), "outputs": ()}))
    weights = tmp_path / "multivit.pth"
    torch.save({"model": encoder.state_dict(), "epoch": 1599}, weights)
    out = tmp_path / "run"
    assert (
        main(["pretrain", str(config), f"out_dir={out}", f"model.init={weights}", "schedule.total_epochs=1"])
        == 0
    )
    assert (
        "decoders not in the file, starting from random init: rgb, depth, semseg, norm_rgb"
        in capsys.readouterr().out
    )


def test_bf16_autocast_trains_on_cpu(tmp_path):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    overrides = [f"out_dir={out}", "run.precision=bf16", "schedule.total_epochs=1", "log.every=1"]
    assert main(["pretrain", str(config), *overrides, "data.num_samples=16"]) == 0
    losses = losses_by_step(out)
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses.values())


def test_the_training_process_keeps_freed_memory_for_its_next_step(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("guidedmae.engine.start.keep_freed_memory", calls.append)
    overrides = [f"out_dir={tmp_path / 'run'}", "schedule.total_epochs=1", "data.num_samples=8"]
    assert main(["pretrain", str(tiny_config(tmp_path)), *overrides]) == 0
    assert calls == [TRAINING_TRIM_THRESHOLD]


def test_config_errors_exit_with_a_message_naming_the_key(tmp_path, capsys):
    config = tiny_config(tmp_path)
    assert main(["pretrain", str(config), "optim.blrr=1"]) == 1
    assert "unknown key 'optim.blrr'" in capsys.readouterr().err
    assert main(["pretrain", str(config), f"out_dir={tmp_path / 'x'}", "run.precision=fp16"]) == 1
    assert "run.precision=fp16 needs CUDA" in capsys.readouterr().err


def test_python_dash_m_guidedmae_is_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "guidedmae", "pretrain", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "resume=auto" in result.stdout


@pytest.mark.slow  # inductor compiles C++ kernels: minutes on 2 cores
def test_compiled_step_trains_like_the_eager_one(tmp_path, monkeypatch):
    # A frame compiled again at every step (the masking's generator draws, traced) fails the run.
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 4)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    config = tiny_config(tmp_path)
    settings = ["schedule.total_epochs=1", "log.every=1", "log.picture_every=0"]
    assert main(["pretrain", str(config), f"out_dir={tmp_path / 'eager'}", *settings]) == 0
    assert (
        main(["pretrain", str(config), f"out_dir={tmp_path / 'compiled'}", "run.compile=true", *settings])
        == 0
    )
    eager, compiled = losses_by_step(tmp_path / "eager"), losses_by_step(tmp_path / "compiled")
    assert eager.keys() == compiled.keys() == set(range(1, 9))
    assert all(compiled[step] == pytest.approx(eager[step], rel=1e-3) for step in eager)


def test_the_held_out_losses_use_the_same_random_and_block_masks_in_every_run(tmp_path):
    config = tiny_config(tmp_path)
    runs = {}
    for strategy in ("random", "attention"):
        out = tmp_path / strategy
        overrides = [
            f"out_dir={out}",
            f"masking.strategy={strategy}",
            "eval.every=8",
            "schedule.total_epochs=2",
        ]
        assert main(["pretrain", str(config), *overrides, "log.picture_every=0"]) == 0
        runs[strategy] = out
    records = read_metrics(runs["attention"] / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("event") == "eval"] == [8, 16]
    results = json.loads((runs["attention"] / "results.json").read_text())
    assert results["task"] == "pretraining" and results["step"] == 16
    metrics = results["metrics"]
    assert {"eval_random/loss", "eval_own/loss", "eval_random/loss_semseg", "eval_own/loss_rgb"} <= set(
        metrics
    )
    assert metrics["eval_own/loss"] != metrics["eval_random/loss"]  # attention masks other patches
    assert metrics["eval_block/loss"] not in (metrics["eval_random/loss"], metrics["eval_own/loss"])
    # The premise on the held-out scenes: shares of tokens and AUCs per input modality, the random-init
    # encoder's shares, the objects' share (chance) and the best ranking by position alone.
    premise = {key: value for key, value in metrics.items() if key.startswith("premise/")}
    modalities = ("rgb", "depth", "semseg")
    assert set(premise) == {
        *(f"premise/{kind}{name}" for kind in ("", "auc_", "init_") for name in modalities),
        "premise/chance",
        "premise/position",
    }
    assert all(0 <= value <= 1 for value in premise.values()) and 0 < premise["premise/chance"] < 0.5
    assert premise["premise/position"] > premise["premise/chance"]  # objects sit mid-image
    # What each kind of mask hides of the object tokens, per modality: random masks hide about the
    # masked share (12 of 48 tokens visible: 3/4) of them.
    for masks in ("random", "block", "own"):
        assert all(0 <= metrics[f"eval_{masks}/hidden_objects_{name}"] <= 1 for name in modalities)
    hidden_by_random = [metrics[f"eval_random/hidden_objects_{name}"] for name in modalities]
    assert 0.6 < sum(hidden_by_random) / 3 < 0.9
    # Scored on the same random (block) masks, the same weights give the same loss in any run: score one
    # run's final weights with the other run's set-up.
    config_a = load_config(PretrainConfig, runs["attention"] / "config.yaml")
    config_r = load_config(PretrainConfig, runs["random"] / "config.yaml")
    weights = torch.load(runs["attention"] / "checkpoint-last.pt", weights_only=True)["model"]
    for masks in ("random", "block"):
        scores = []
        for run_config in (config_a, config_r):
            job = PretrainJob(run_config)
            job.build(DistributedContext())
            job.step.model.load_state_dict(weights)
            losses = held_out_losses(
                job.eval_steps[masks], job.held_out, run_config, DistributedContext(), START
            )
            scores.append(losses["loss"])
        assert scores[0] == scores[1] == pytest.approx(metrics[f"eval_{masks}/loss"], rel=1e-6)


def test_the_scouts_parameters_learn_at_its_own_multiple_of_the_runs_lr(tmp_path):
    overrides = ["masking.strategy=scout_attention", "masking.scout_attention.lr_scale=50"]
    config = load_config(PretrainConfig, tiny_config(tmp_path), overrides)
    parts = PretrainJob(config).build(DistributedContext())
    optimizer = torch.optim.AdamW(parts.param_groups)
    set_lr(optimizer, 1e-5)
    scout = {id(p) for p in parts.saved["strategy"].scout.parameters()}
    for group in optimizer.param_groups:
        in_scout = {id(p) in scout for p in group["params"]}
        assert len(in_scout) == 1  # a group is all scout or all model
        assert group["lr"] == pytest.approx(5e-4 if in_scout.pop() else 1e-5)
