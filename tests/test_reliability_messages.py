"""Files, as a hostile user gives them: pickles given as checkpoints or model weights, a checkpoint that stores
an impossible model, a full disk under the data writers, a broken held-out file. Each is one line naming the
file or key, and nothing is run, half-written or trained first."""

import numpy as np

from guidedmae.cli import main
from tests.test_modalities import FLOW, PRETRAIN, config_file, write_layout
from tests.test_reliability import one_line_error

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
