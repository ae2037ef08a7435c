"""The shared training loop with any step module: non-finite losses, accumulation, the lr per step."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.fit import NonFiniteLossError, train
from guidedmae.engine.job import LoopState, Training
from guidedmae.engine.start import steps_per_epoch
from guidedmae.infra.distributed import DistributedContext
from guidedmae.infra.optim import build_optimizer
from guidedmae.infra.precision import grad_scaler
from guidedmae.infra.run_log import RunLogger, read_metrics
from guidedmae.infra.schedule import LRSchedule


class Points(Dataset):
    """y = x . (1, -2) + 0.5 on n fixed points."""

    def __init__(self, n: int):
        self.x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ torch.tensor([[1.0], [-2.0]]) + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index]}


class RegressionStep(nn.Module):
    """A step module like MaskedAutoencoderStep: (batch, generator, progress) -> output with .losses.
    Calls listed in `nan_calls` (1-based) return a NaN loss."""

    def __init__(self, nan_calls=()):
        super().__init__()
        self.model = nn.Linear(2, 1)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, batch, generator, progress):
        self.calls += 1
        loss = (self.model(batch["x"]) - batch["y"]).square().mean()
        if self.calls in self.nan_calls:
            loss = loss * float("nan")
        return SimpleNamespace(losses={"total": loss, "mse": loss.detach()}, scalars={})


def make_job(tmp_path, step: RegressionStep, *overrides: str, samples: int = 32) -> Training:
    config = load_config(
        PretrainConfig,
        None,
        [
            f"out_dir={tmp_path}",
            "data.batch_size=8",
            "data.num_workers=0",
            "optim.lr=0.1",
            "optim.weight_decay=0",
            "schedule.total_epochs=3",
            "schedule.warmup_epochs=1",
            "log.every=1",
            "checkpoint.every=1000",
            "run.precision=fp32",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    dataset = Points(samples)
    per_epoch = steps_per_epoch(len(dataset), config.data.batch_size, 1, config.optim.accum_steps)
    return Training(
        context=DistributedContext(),
        config=config,
        model=step.model,
        step=step,
        optimizer=build_optimizer(step.model, config.optim),
        scaler=None,
        schedule=LRSchedule(config.schedule, config.optim.lr, per_epoch),
        dataset=dataset,
        generator=torch.Generator().manual_seed(0),
    )


def run(job: Training) -> tuple[LoopState, list[dict]]:
    logger = RunLogger(job.out_dir, job.schedule.run_steps, enabled=True)
    try:
        state = train(job, LoopState(), logger)
    finally:
        logger.close()
    return state, read_metrics(job.out_dir / "metrics.jsonl")


def test_a_nonfinite_step_is_skipped_without_touching_the_weights(tmp_path):
    job = make_job(tmp_path, RegressionStep(nan_calls={3}))
    weights = []
    job.after_step = lambda state: weights.append(job.model.weight.detach().clone())
    state, records = run(job)
    assert state.step == 12 and len(weights) == 12
    assert torch.equal(weights[2], weights[1])  # step 3 was skipped
    assert not torch.equal(weights[3], weights[2])  # and training went on
    skipped = [r for r in records if r.get("event") == "nonfinite_loss"]
    assert len(skipped) == 1 and skipped[0]["step"] == 3 and skipped[0]["losses"]["total"] == "nan"
    assert "1 in a row" in skipped[0]["message"]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def test_too_many_nonfinite_steps_in_a_row_abort_with_a_clear_message(tmp_path):
    job = make_job(tmp_path, RegressionStep(nan_calls={2, 3, 4}), "run.max_nonfinite=3")
    job.after_step = lambda state: None
    logger = RunLogger(tmp_path, job.schedule.run_steps)
    try:
        with pytest.raises(
            NonFiniteLossError,
            match=r"non-finite for 3 steps in a row \(steps 2..4, lr .*try run.precision=fp32",
        ):
            train(job, LoopState(), logger)
    finally:
        logger.close()
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "nonfinite_loss"]
    assert [e["step"] for e in events] == [2, 3, 4]


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    full = make_job(tmp_path / "full", RegressionStep())
    accumulated = make_job(tmp_path / "accum", RegressionStep(), "data.batch_size=4", "optim.accum_steps=2")
    assert full.total_batch == accumulated.total_batch == 8
    run(full)
    _, records = run(accumulated)
    assert accumulated.step.calls == 2 * full.step.calls == 24
    assert torch.allclose(full.model.weight, accumulated.model.weight, atol=1e-6)
    assert torch.allclose(full.model.bias, accumulated.model.bias, atol=1e-6)
    last = [r for r in records if "loss" in r][-1]
    assert last["step"] == 12 and last["samples_per_s"] > 0


def test_every_step_uses_the_schedules_lr_and_the_loss_falls(tmp_path):
    job = make_job(tmp_path, RegressionStep())
    _, records = run(job)
    logged = [r for r in records if "loss" in r]
    assert [r["lr"] for r in logged] == [job.schedule.run_lr(step) for step in range(12)]
    assert [r["epoch"] for r in logged][:4] == [0.25, 0.5, 0.75, 1.0]
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    assert set(logged[0]) == {"step", "loss", "loss_mse", "lr", "epoch", "samples_per_s"}


def test_a_run_leaves_a_last_checkpoint_at_its_final_position(tmp_path):
    job = make_job(tmp_path, RegressionStep(), "schedule.start_epoch=1")
    logger = RunLogger(tmp_path, job.schedule.run_steps)
    try:
        state = train(job, LoopState(epoch=1), logger)
    finally:
        logger.close()
    checkpoint = torch.load(tmp_path / "checkpoint-last.pt", weights_only=True)
    assert state == LoopState(step=8, epoch=3, batch=0)
    assert (
        checkpoint["step"] == 8
        and checkpoint["data"]["epoch"] == 3
        and checkpoint["schedule"]["first_step"] == 4
    )
    assert torch.equal(checkpoint["model"]["weight"], job.model.weight)


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="run.precision=fp16 needs CUDA"):
        grad_scaler(torch.device("cpu"), "fp16")
    assert grad_scaler(torch.device("cpu"), "bf16") is None


def test_a_data_set_too_small_for_one_step_is_an_error():
    with pytest.raises(ValueError, match="give no full optimizer step of 8 x 2 processes x 4"):
        steps_per_epoch(60, 8, 2, 4)
    assert steps_per_epoch(64, 8, 2, 4) == 1 and steps_per_epoch(1000, 8, 2, 4) == 15
