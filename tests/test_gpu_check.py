"""benchmarks/gpu_check.py, run as on a GPU machine but on this CPU (--device cpu --quick): every part of
the check runs, the table and the JSON hold every row, and the cuda tests say why they skip."""

import json
import subprocess
import sys

import torch

from tests.test_pretrain import ROOT


def test_the_gpu_check_runs_every_part_on_a_cpu(tmp_path):
    out = tmp_path / "check"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    tests = report["cuda_tests"]
    if not torch.cuda.is_available():
        assert tests.get("passed", 0) == 0 and tests["skipped"] > 0 and not tests["failures"]
        assert tests["skip_reasons"] == ["no CUDA device: the GPU checks need one"]
    assert set(report["steps"]) == {"fp32", "bf16", "bf16 compiled"}
    for row in report["steps"].values():
        assert row["batch"] == 4 and row["seconds"] > 0 and row["tflop_per_step"] > 0
        assert row["attention"] in ("CPU flash", "explicit products", "math") and row["mfu"] is None
    assert set(report["guidance"]) == {"random", "exact attention-high", "scout", "cached"}
    assert report["guidance"]["random"]["ratio"] == 1.0
    assert len(report["loader"]) == 9 and all(rate > 0 for rate in report["loader"].values())
    markdown = (out / "gpu_check.md").read_text()
    for goal in (">= 45%", "<= 1.5", "<= 1.15", ">= 1 with <= 8 workers"):
        assert goal in markdown
