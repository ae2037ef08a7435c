"""Files, as a hostile user gives them: pickles given as checkpoints or model weights, a checkpoint that stores
an impossible model, a full disk under the data writers, a broken held-out file. Each is one line naming the
file or key, and nothing is run, half-written or trained first."""

import os
import pickle
import re
import resource
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from guidedmae.cli import main
from guidedmae.data.writers import write_synthetic
from guidedmae.masking import MaskingConfig
from tests.test_modalities import FLOW, PRETRAIN, config_file, write_layout
from tests.test_reliability import one_line_error
from tests.test_reliability_bounds import error_line, run_guidedmae
from tests.test_visualize import write_run_checkpoint

# -- checkpoints and model folders that are pickles ------------------------------------------------


def test_a_plain_pickle_given_as_a_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys):
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as file:
        pickle.dump({"model": {"weight": [1.0, 2.0]}}, file, protocol=4)
    assert main(["visualize", str(path)]) == 1
    error = capsys.readouterr().err
    assert "weights_only" not in error and "protocol" not in error
    [line] = [line for line in error.splitlines() if "error:" in line]
    assert line.startswith(
        f"guidedmae visualize: error: {path}: not a readable torch checkpoint (empty, truncated"
    )
    assert (
        "a plain pickle: UnpicklingError: Unsupported operand 149); loading never executes pickled code"
        in line
    )


def test_a_pickled_model_file_in_a_pseudolabel_folder_is_refused_not_run(
    tmp_path, capsys, pseudolabel_models
):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = tmp_path / "depth-model"
    shutil.copytree(pseudolabel_models["depth"], model)
    (model / "model.safetensors").unlink()
    torch.save({"payload": Evil()}, model / "pytorch_model.bin")
    rgb = tmp_path / "data" / "train" / "rgb" / "things"
    rgb.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb / "000.png")
    assert main(["pseudolabel", str(tmp_path / "data"), "--depth", str(model)]) == 1
    one_line_error(
        capsys, f"--depth {model}: its pickled weights (pytorch_model.bin) are refused by the safe"
    )
    assert not marker.exists() and not (tmp_path / "data" / "train" / "depth").exists()


def test_a_checkpoints_stored_model_is_named_as_the_checkpoints_not_the_command_lines(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    write_run_checkpoint(path, MaskingConfig(num_visible=8))
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["model"]["dim"] = 1000000
    torch.save(checkpoint, path)
    assert main(["visualize", str(path)]) == 1
    line = one_line_error(capsys, f"{path} (its stored config): model.dim=1000000; expected 1..16384")
    assert "command line" not in line
    assert main(["visualize", str(path), "model.dim=2000000"]) == 1
    one_line_error(capsys, f"{path} (its stored config) + command line: model.dim=2000000")


# -- a full disk under the data writers ----------------------------------------------------------


def limit_file_size(limit: int):
    def limit_it():  # every write beyond `limit` bytes fails as on a full disk (EFBIG, not a signal)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_it


@pytest.mark.parametrize(
    ("command", "limit", "named"),
    [
        (
            ["data", "synth", "--out", "OUT", "--n", "2", "--size", "32"],
            1000,
            r"OUT/train/\w+/\w+/\d{6}\.png",
        ),
        (["data", "shard", "--root", "SCENES", "--out", "OUT"], 0, r"OUT/train/\.lock"),
    ],
    ids=["synth", "shard"],
)
def test_a_full_disk_under_a_data_writer_names_the_file(tmp_path, command, limit, named):
    write_synthetic(tmp_path / "scenes", n=2, size=16, progress=False)
    out = tmp_path / "out"
    words = [
        str(out) if word == "OUT" else str(tmp_path / "scenes") if word == "SCENES" else word
        for word in command
    ]
    line = error_line(run_guidedmae(*words, preexec_fn=limit_file_size(limit)))
    assert re.search(f"cannot write {named.replace('OUT', re.escape(str(out)))}: ", line), line
    assert "it is as it was" in line
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temp file, no lock left


# -- a broken held-out file: found before the first step ----------------------------------------


def test_a_nan_in_a_held_out_npy_file_stops_the_run_before_its_first_step(tmp_path, capsys):
    root = tmp_path / "layout"
    write_layout(root, "train", 16, seed=0)
    write_layout(root, "val", 8, seed=1)
    broken = root / "val" / "flow" / "b" / "0003.npy"
    flow = np.load(broken)
    flow[2, 5, 0] = np.nan
    np.save(broken, flow)
    config = config_file(tmp_path, PRETRAIN, root, ["rgb", "flow"], ["rgb", "flow"], {"flow": FLOW})
    out = tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "eval.split=val"]) == 1
    one_line_error(capsys, f"{broken}: 1 NaN or infinite value(s) in flow; expected finite numbers")
    assert not list(out.glob("checkpoint-*.pt")) and not (out / "metrics.jsonl").exists()
