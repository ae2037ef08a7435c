"""Numbers, as a hostile user gives them: seeds past any generator's range, thread counts, sample counts and
model sizes no machine holds. Each is one line naming the key or option, before anything is allocated."""

import resource
import subprocess
import sys

import pytest

from guidedmae.cli import main
from guidedmae.config.presets import CONFIG_ROOT
from tests.test_pretrain import ROOT, tiny_config
from tests.test_reliability import one_line_error

TOO_BIG = 2**64 + 1  # past torch's and numpy's generators alike
SEED_RANGE = "expected a whole number 0 <= seed < 2^32"
FINETUNE_CONFIG = CONFIG_ROOT / "finetune" / "synthetic_cls_probe.yaml"


# -- seeds, threads, sample counts: refused when the config is loaded ----------------------------


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        ("pretrain", f"seed={TOO_BIG}", f"seed={TOO_BIG}; {SEED_RANGE}"),
        ("pretrain", "seed=-1", f"seed=-1; {SEED_RANGE}"),
        ("pretrain", "seed=4294967296", f"seed=4294967296; {SEED_RANGE}"),
        ("pretrain", f"data.scene_seed={TOO_BIG}", f"data.scene_seed={TOO_BIG}; {SEED_RANGE}"),
        ("pretrain", f"eval.scene_seed={TOO_BIG}", f"eval.scene_seed={TOO_BIG}; {SEED_RANGE}"),
        ("pretrain", f"eval.mask_seed={TOO_BIG}", f"eval.mask_seed={TOO_BIG}; {SEED_RANGE}"),
        ("finetune", f"data.eval_scene_seed={TOO_BIG}", f"data.eval_scene_seed={TOO_BIG}; {SEED_RANGE}"),
    ],
)
def test_a_seed_out_of_range_is_refused_at_load(tmp_path, capsys, command, override, message):
    config = tiny_config(tmp_path) if command == "pretrain" else FINETUNE_CONFIG
    out = tmp_path / "run"
    assert main([command, str(config), f"out_dir={out}", override]) == 1
    one_line_error(capsys, message)
    assert not out.exists()


def limit_address_space():
    """Should a check let a value through, what it allocates fails in its process instead of the machine
    running out of memory."""
    resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))


def run_guidedmae(*words: str, preexec_fn=limit_address_space) -> subprocess.CompletedProcess:
    """The command in a process of its own: a value that got through (threads that crash OpenMP, an
    evaluation of 10^14 scenes) fails it within the timeout, not the test session."""
    command = [sys.executable, "-m", "guidedmae", *words]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, preexec_fn=preexec_fn, timeout=120
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The command's one error line, after it failed with exit status 1 and no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if "error:" in line]
    return line


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        ("pretrain", "run.threads=100000", "run.threads=100000; expected 0 (the cores divided among"),
        ("pretrain", "run.threads=20000", "run.threads=20000; expected 0 (the cores divided among"),
        (
            "pretrain",
            "data.num_samples=99999999999999",
            "data.num_samples=99999999999999; expected 1..10000000",
        ),
        (
            "pretrain",
            "eval.num_samples=99999999999999",
            "eval.num_samples=99999999999999; expected 0..10000000",
        ),
        (
            "finetune",
            "data.eval_num_samples=10000001",
            "data.eval_num_samples=10000001; expected 1..10000000",
        ),
    ],
)
def test_counts_no_machine_runs_are_refused_at_load(tmp_path, command, override, message):
    config = tiny_config(tmp_path) if command == "pretrain" else FINETUNE_CONFIG
    out = tmp_path / "run"
    assert message in error_line(run_guidedmae(command, str(config), f"out_dir={out}", override))
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["data", "synth", "--out", "OUT", "--n", "1", "--size", "16"],
        ["data", "shard", "--root", "OUT", "--out", "OUT/shards"],
        ["bench", "--preset", "tiny", "--image-size", "32", "--patch-size", "8", "--rounds", "1"],
    ],
    ids=["synth", "shard", "bench"],
)
@pytest.mark.parametrize("seed", [str(TOO_BIG), "-1"])
def test_a_seed_option_out_of_range_is_named(tmp_path, capsys, command, seed):
    command = [str(tmp_path / "data") if word.startswith("OUT") else word for word in command]
    assert main([*command, "--seed", seed]) == 1
    one_line_error(capsys, f"--seed={seed}; {SEED_RANGE}")
    assert not (tmp_path / "data").exists()


# -- memory: what the config asks for, estimated before anything is allocated ----------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.dim=16384", "model.depth=64"], "model.dim=16384, model.depth=64"),
        (
            ["model.image_size=16384", "data.augment.size=16384", "data.batch_size=64"],
            "model.image_size=16384",
        ),
    ],
    ids=["dim", "image_size"],
)
def test_a_model_no_machine_holds_is_refused_before_it_is_built(tmp_path, overrides, named):
    out = tmp_path / "run"
    line = error_line(run_guidedmae("pretrain", str(tiny_config(tmp_path)), f"out_dir={out}", *overrides))
    assert named in line and "training needs at least" in line and "GiB of cpu" in line
    assert not [path for path in out.rglob("*") if path.is_file()]
