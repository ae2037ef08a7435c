"""Distributed pretraining and fine-tuning: torchrun --nproc_per_node 2 on CPU (gloo), and the context helpers."""

import json
import socket
import subprocess
import sys

import pytest
import torch

from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.finetune import evaluate_checkpoint
from guidedmae.infra.distributed import (
    DistributedContext,
    init_distributed,
    resolve_device,
    threads_per_process,
    weights_digest,
)
from guidedmae.infra.run_log import read_metrics
from guidedmae.models import MultiMAE
from tests.test_finetune import DENSE, SMALL_RUN
from tests.test_pretrain import ROOT, tiny_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*arguments: str) -> None:
    """`torchrun --nproc_per_node 2 -m guidedmae ARGUMENTS` on this machine's CPU."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "guidedmae", *arguments,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_torchrun_with_two_processes_trains_identical_weights(tmp_path):
    config = tiny_config(tmp_path)
    out = tmp_path / "ddp"
    torchrun(
        "pretrain",
        str(config),
        f"out_dir={out}",
        "run.threads=0",  # automatic: the cores shared by the two processes
        "log.every=1",
        "log.picture_every=0",
        "checkpoint.every=100",
    )

    records = read_metrics(out / "metrics.jsonl")
    # Rank 0 alone logs: one start event, one line per step.
    [start] = [r for r in records if r.get("event") == "start"]
    assert start["world_size"] == 2 and start["total_batch"] == 16  # 8 per process x 2
    assert start["peak_lr"] == pytest.approx(2e-3 * 16 / 256)
    assert start["steps_per_epoch"] == 4 and start["steps"] == 12  # 64 samples / (8 x 2)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    [check] = [r for r in records if r.get("event") == "weights_check"]
    assert check["identical"] is True and check["world_size"] == 2
    assert len(check["digests"]) == 2 and check["digests"][0] == check["digests"][1]

    # The checkpoint rank 0 wrote holds exactly the weights both ranks ended with.
    checkpoint = torch.load(out / "checkpoint-last.pt", weights_only=True)
    loaded = load_config(PretrainConfig, config)
    model = MultiMAE(loaded.model.architecture(loaded.modalities))
    model.load_state_dict(checkpoint["model"])
    assert weights_digest(model) == check["digests"][0]
    assert checkpoint["data"]["world_size"] == 2 and len(checkpoint["rng"]["step"]) == 2
    # Each rank masks with its own generator stream.
    assert not torch.equal(checkpoint["rng"]["step"][0], checkpoint["rng"]["step"][1])
    assert len(list(out.glob("checkpoint-*.pt"))) == 2  # step 12 and last: rank 1 wrote nothing


@pytest.mark.parametrize(
    "masking",
    [
        # A memory of per-sample losses and loss averages driving the budget.
        ["masking.strategy=loss_memory", "masking.budget=adaptive"],
        # A memory of per-sample attention maps, refreshed on every second visit, and visit counts.
        ["masking.strategy=cached_attention", "masking.cached_attention.refresh=2"],
    ],
    ids=["loss_memory", "cached_attention"],
)
def test_torchrun_strategy_state_agrees_across_processes(tmp_path, masking):
    # Each rank sees its own samples, and every rank must end with the same state (the weights check
    # compares the strategy's digests too).
    config = tiny_config(tmp_path)
    out = tmp_path / "ddp-memory"
    torchrun(
        "pretrain", str(config), f"out_dir={out}", "run.threads=0", "log.every=1", "log.picture_every=0",
        *masking, "schedule.total_epochs=1",
    )  # fmt: skip
    records = read_metrics(out / "metrics.jsonl")
    [check] = [r for r in records if r.get("event") == "weights_check"]
    assert check["identical"] is True and check["world_size"] == 2
    if "masking.budget=adaptive" in masking:
        assert {"alpha_rgb", "alpha_depth", "alpha_semseg"} <= set(next(r for r in records if "loss" in r))
    state = torch.load(out / "checkpoint-last.pt", weights_only=True)["strategy"]
    # One epoch: each rank sees its own 32 of the 64 scenes once; rank 0's file holds all 64.
    assert (~state["memory"].isnan()).any(dim=(1, 2)).all()
    if "visits" in state:
        assert state["visits"].tolist() == [1] * 64


def test_torchrun_finetuning_trains_identical_weights_and_evaluates_every_sample_once(tmp_path):
    out = tmp_path / "ddp-semseg"
    config = tmp_path / "semseg.yaml"
    config.write_text(f"out_dir: {out}\n")
    torchrun(
        "finetune", str(config), *SMALL_RUN, *DENSE, "head.task=semseg", "head.num_classes=8",
        "data.augment.semseg_stride=1", "data.batch_size=4", "data.eval_num_samples=7", "eval.every=0",
        "run.threads=0",
    )  # fmt: skip

    records = read_metrics(out / "metrics.jsonl")
    [check] = [r for r in records if r.get("event") == "weights_check"]
    assert check["identical"] is True and check["world_size"] == 2
    # 7 held-out scenes on 2 ranks: 4 + 3, no padding, no duplicates. The meters summed over the ranks
    # must give exactly what one process computes over the whole split.
    distributed = json.loads((out / "results.json").read_text())["metrics"]
    _, single = evaluate_checkpoint(out / "checkpoint-last.pt", ["run.threads=1"])
    assert single["metrics"] == pytest.approx(distributed, abs=1e-6)


def test_torchrun_batchnorm_probe_keeps_one_set_of_statistics(tmp_path):
    # gloo has no SyncBatchNorm: rank 0's running statistics are broadcast, so the ranks end identical.
    out = tmp_path / "ddp-probe"
    config = tmp_path / "probe.yaml"
    config.write_text(f"out_dir: {out}\n")
    torchrun(
        "finetune", str(config), *SMALL_RUN, "head.task=semseg", "head.num_classes=8", "head.kind=linear",
        "model.freeze_encoder=true", "data.augment.semseg_stride=1", "data.batch_size=4", "eval.every=0",
        "run.threads=0",
    )  # fmt: skip
    [check] = [r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "weights_check"]
    assert check["identical"] is True and check["world_size"] == 2


def test_without_torchrun_the_context_is_one_process():
    context = init_distributed("cpu", env={})
    assert context == DistributedContext(0, 1, 0, 1, torch.device("cpu"))
    assert context.is_main and not context.is_distributed


def test_environment_errors_are_named():
    with pytest.raises(ValueError, match="RANK=2 is outside WORLD_SIZE=2"):
        init_distributed("cpu", env={"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed("cpu", env={"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="run.device='tpu'"):
        resolve_device("tpu")


def test_threads_are_shared_among_the_local_processes(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert threads_per_process(0, DistributedContext(local_world_size=8)) == 2
    assert threads_per_process(0, DistributedContext(local_world_size=32)) == 1
    assert threads_per_process(3, DistributedContext(local_world_size=8)) == 3


def test_weight_digest_sees_a_single_changed_value():
    model = torch.nn.Linear(4, 4)
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():
        model.weight[2, 3] += 1e-7
    assert weights_digest(model) != before
