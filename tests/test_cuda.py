"""What a GPU changes, checked on one (marker `cuda`; every test skips, with its reason, where there is
none). `python benchmarks/gpu_check.py` runs them first, then times the step; `pytest -m cuda` alone too.

bf16 autocast against fp32 (forward losses within 5%, gradient directions within 0.99 cosine), every
registered strategy in a pretraining step on the GPU (every output and mask on the card, no host sync in
the step's forward and backward: CUDA's sync debug mode makes one an error), the loader's pinned batches
and non-blocking copies, a pretraining killed and resumed bit-exactly (run.deterministic), a fine-tuning
run, DDP on nccl (one process), and the compiled step."""

import subprocess
import sys

import pytest
import torch

from guidedmae.cli import main
from guidedmae.engine.bench_setup import synthetic_batch
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.run_log import read_metrics
from guidedmae.losses import LossConfig
from guidedmae.masking import MaskingConfig, build_strategy, strategy_variants
from guidedmae.models import MultiMAE
from tests.conftest import tiny_config
from tests.test_distributed import free_port
from tests.test_finetune import SMALL_RUN
from tests.test_pretrain import ROOT, run_until_killed
from tests.test_pretrain import tiny_config as tiny_config_file

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU checks need one"),
]
CUDA = ["run.device=cuda", "data.num_workers=2"]


def batch_on(device: torch.device, size: int = 32, count: int = 8) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in synthetic_batch(count, size).items()}


def test_bf16_autocast_agrees_with_fp32():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(semseg_classes=8)).to(device).train()
    batch = batch_on(device)
    results = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        strategy = build_strategy(MaskingConfig(num_visible=12), model.config).to(device)
        step = MaskedAutoencoderStep(model, strategy, LossConfig())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            output = step(batch, torch.Generator(device).manual_seed(0))
        output.losses["total"].backward()
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        results[precision] = (output.losses["total"].item(), grads)
    (loss32, grad32), (loss16, grad16) = results["fp32"], results["bf16"]
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) > 0.99


@pytest.mark.parametrize("row", list(strategy_variants(MaskingConfig(), tiny_config())))
def test_every_strategy_steps_on_the_gpu_without_a_host_sync(row):
    device = torch.device("cuda")
    model = MultiMAE(tiny_config(semseg_classes=8)).to(device).train()
    masking = strategy_variants(MaskingConfig(num_visible=12), model.config)[row]
    step = MaskedAutoencoderStep(model, build_strategy(masking, model.config, 8).to(device), LossConfig())
    batch = batch_on(device)
    generator = torch.Generator(device).manual_seed(0)
    step(batch, generator)  # a first step: lazy state (memories, caches) is allocated outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        output = step(batch, generator)
        output.losses["total"].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(value.device.type == "cuda" for value in output.preds.values())
    assert all(mask.device.type == "cuda" for mask in output.choice.selection.masks.values())


def test_the_loader_pins_its_batches_and_copies_them_without_blocking():
    from guidedmae.data.datasets import SyntheticScenes
    from guidedmae.data.loader import build_loader
    from guidedmae.data.transforms import AugmentConfig

    scenes = SyntheticScenes(8, 32, 0, ("rgb", "depth", "semseg"), AugmentConfig(size=32))
    loader = build_loader(scenes, batch_size=4, num_workers=2, shuffle=True, drop_last=True, seed=0,
                          pin_memory=True)  # fmt: skip
    for batch in loader:
        assert all(value.is_pinned() for value in batch.values())
        copied = {name: value.to("cuda", non_blocking=True) for name, value in batch.items()}
        torch.cuda.synchronize()
        assert all(torch.equal(copied[name].cpu(), batch[name]) for name in batch)


def test_a_killed_pretraining_resumes_bit_exactly_on_the_gpu(tmp_path):
    config = tiny_config_file(tmp_path)
    settings = [*CUDA, "run.deterministic=true", "run.precision=bf16", "schedule.total_epochs=3",
                "log.picture_every=0", "log.every=1", "checkpoint.every=10"]  # fmt: skip
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert main(["pretrain", str(config), f"out_dir={uninterrupted}", *settings]) == 0
    command = [sys.executable, "-m", "guidedmae", "pretrain", str(config), f"out_dir={killed}", *settings]
    run_until_killed(command, killed / "checkpoint-00000010.pt")
    assert main(["pretrain", str(config), f"out_dir={killed}", "resume=auto", *settings]) == 0
    expected, resumed = (
        torch.load(out / "checkpoint-last.pt", weights_only=True)["model"] for out in (uninterrupted, killed)
    )
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0)


def test_a_fine_tuning_runs_on_the_gpu(tmp_path):
    overrides = [f"out_dir={tmp_path / 'run'}", *SMALL_RUN, "head.num_classes=5", "run.device=cuda"]
    assert main(["finetune", "synthetic_cls", *overrides]) == 0
    start = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "start")
    assert "cuda" in start["message"]


def test_ddp_on_nccl_with_one_process(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), "-m", "guidedmae", "pretrain",
               str(tiny_config_file(tmp_path)), f"out_dir={tmp_path / 'run'}", *CUDA, "schedule.total_epochs=1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    start = next(r for r in records if r.get("event") == "start")
    assert start["world_size"] == 1 and "nccl" in start["message"]


def test_the_compiled_step_trains_on_the_gpu(tmp_path):
    out = tmp_path / "run"
    overrides = [
        f"out_dir={out}",
        *CUDA,
        "run.compile=true",
        "schedule.total_epochs=1",
        "log.picture_every=0",
    ]
    assert main(["pretrain", str(tiny_config_file(tmp_path)), *overrides]) == 0
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert losses and all(loss == loss for loss in losses)  # finite, no NaN
