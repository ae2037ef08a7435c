"""Files, as a hostile user gives them: two shard writers on one folder, shard tables that lie about their
tars, NaN in a .npy modality file, outputs named like their inputs, symbolic links in a run folder. Every
case is one line on stderr (exit status 1) or one named error, and nothing already written changes."""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from guidedmae.cli import main
from guidedmae.data.folder import read_image
from guidedmae.data.modalities import declare
from guidedmae.data.shards import read_shard_index, write_shards
from guidedmae.data.writers import write_synthetic
from guidedmae.infra.checkpoints import save_checkpoint
from guidedmae.infra.files import LOCK_FILE, write_json
from guidedmae.infra.run_log import RunLogger, read_metrics
from guidedmae.masking import MaskingConfig
from tests.test_modalities import FLOW, PRETRAIN, config_file, write_layout
from tests.test_pretrain import ROOT, tiny_config
from tests.test_reliability import RUN, folder_digest, one_line_error
from tests.test_visualize import write_run_checkpoint

MODALITIES = ("rgb", "depth", "semseg")


# -- shards: one writer at a time ---------------------------------------------------------------


@pytest.fixture
def scenes(tmp_path) -> Path:
    write_synthetic(tmp_path / "folder", n=11, size=20, split="train", seed=3, progress=False)
    return tmp_path / "folder"


def shard_command(root: Path, out: Path, *options: str) -> list[str]:
    return ["data", "shard", "--root", str(root), "--out", str(out), "--samples-per-shard", "4", *options]


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s writer lock until it is killed; returns once it holds it."""
    code = (
        "import sys\nfrom guidedmae.infra.files import lock_folder\n"
        f"with lock_folder({str(folder)!r}, 'shard writer', '--out'):\n"
        "    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_shard_writer_is_refused_and_a_killed_ones_lock_and_temps_are_recovered(
    scenes, tmp_path, capsys
):
    out = tmp_path / "shards"
    assert main(shard_command(scenes, out)) == 0
    before = folder_digest(out)
    holder = hold_lock(out / "train")
    try:
        assert main(shard_command(scenes, out, "--seed", "1")) == 1
        line = one_line_error(capsys, f"{out / 'train'} is in use by another shard writer")
        assert f"pid {holder.pid}" in line and "choose another --out" in line
        assert {k: v for k, v in folder_digest(out).items() if k != f"train/{LOCK_FILE}"} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed writer left its lock file and a temp file: the next writer takes over and cleans up.
    assert (out / "train" / LOCK_FILE).is_file()
    (out / "train" / ".shard-000000.tar.k1ll3d.tmp").write_bytes(b"half a shard")
    assert main(shard_command(scenes, out)) == 0
    assert folder_digest(out) == before  # the same bytes again, no lock file, no temp file


def test_two_writers_started_together_leave_one_whole_writing(scenes, tmp_path):
    out = tmp_path / "shards"
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "guidedmae", *shard_command(scenes, out, "--seed", str(seed))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )  # fmt: skip
        for seed in (1, 2)
    ]
    outcomes = [(writer.wait(timeout=300), writer.stderr.read()) for writer in writers]
    for code, error in outcomes:  # the later one either waited for nothing (ran after) or was refused
        assert code == 0 or (code == 1 and "is in use by another shard writer" in error), error
        assert "Traceback" not in error
    index = read_shard_index(out, "train")  # the tables agree with the tars
    seeds = {seed for seed, (code, _) in zip((1, 2), outcomes, strict=True) if code == 0}
    expected = {}
    for seed in seeds:
        write_shards(scenes, "train", tmp_path / f"alone-{seed}", MODALITIES, 4, seed=seed, progress=False)
        expected[seed] = folder_digest(tmp_path / f"alone-{seed}")
    assert folder_digest(out) in expected.values() and len(index.labels) == 11


# -- shards: tables checked against the tars when opened ------------------------------------------


@pytest.fixture
def shards(scenes, tmp_path) -> Path:
    write_shards(scenes, "train", tmp_path / "shards", MODALITIES, samples_per_shard=4, progress=False)
    return tmp_path / "shards" / "train"


def save_table(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:
        np.save(file, array, allow_pickle=True)


def edit_members(folder: Path, edit) -> None:
    members = np.load(folder / "members.npy")
    edit(members)
    save_table(folder / "members.npy", members)


def edit_index(folder: Path, edit) -> None:
    index = json.loads((folder / "index.json").read_text())
    edit(index)
    (folder / "index.json").write_text(json.dumps(index))


def huge_member(folder: Path) -> None:
    edit_members(folder, lambda members: members.__setitem__((5, 1, 1), 2**40))


def negative_offset(folder: Path) -> None:
    edit_members(folder, lambda members: members.__setitem__((2, 0, 0), -4096))


def header_of_4_tib(folder: Path) -> None:
    header = {"descr": "<i8", "fortran_order": False, "shape": (2**39,)}  # 2^39 x 8 bytes: 4 TiB
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    (folder / "members.npy").write_bytes(buffer.getvalue() + bytes(64))


def object_members(folder: Path) -> None:
    save_table(folder / "members.npy", np.array([{"offset": 0}] * 11, dtype=object))


def labels_out_of_range(folder: Path) -> None:
    labels = np.load(folder / "labels.npy")
    labels[7] = 99
    save_table(folder / "labels.npy", labels)


def float_labels(folder: Path) -> None:
    save_table(folder / "labels.npy", np.load(folder / "labels.npy").astype(np.float64))


def shard_outside(name: str):
    def damage(folder: Path) -> None:
        edit_index(folder, lambda index: index["shards"][0].__setitem__("file", name))

    damage.__name__ = f"shard_named_{name}"
    return damage


def members_of_another_writing(folder: Path) -> None:
    # The race of two writers: tars of one writing beside the member table of another (other shard sizes).
    other = folder.parent.parent / "other"
    write_shards(
        folder.parent.parent / "folder", "train", other, MODALITIES, samples_per_shard=3, progress=False
    )
    (folder / "members.npy").write_bytes((other / "train" / "members.npy").read_bytes())


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (huge_member, "members.npy", "sample 5's depth file at byte .* of size 1099511627776 lies outside"),
        (
            negative_offset,
            "members.npy",
            "sample 2's rgb file at byte -4096 .* lies outside shard-000000.tar",
        ),
        (
            header_of_4_tib,
            "members.npy",
            r"declares int64 \[549755813888\] \(4398046511104 bytes of data\), the file holds 64",
        ),
        (object_members, "members.npy", "a .npy of Python objects"),
        (labels_out_of_range, "labels.npy", r"sample 7 has label 99; expected 0..\d"),
        (float_labels, "labels.npy", r"holds float64 \[11\]; expected integers \[11\]"),
        (shard_outside("/etc/passwd"), "index.json", "shard file '/etc/passwd'; expected a plain file name"),
        (shard_outside("../../x"), "index.json", "shard file '../../x'; expected a plain file name"),
        (members_of_another_writing, "members.npy", "the table and the tars come from different writings"),
    ],
)
def test_shard_tables_that_disagree_with_the_tars_are_refused_at_open(shards, damage, file, message):
    damage(shards)
    with pytest.raises(ValueError, match=message) as refused:
        read_shard_index(shards.parent, "train")
    assert str(refused.value).startswith(str(shards / file)) and "\n" not in str(refused.value)


def test_a_training_run_on_lying_shards_is_one_named_line(shards, tmp_path, capsys):
    shard_outside("/etc/passwd")(shards)
    overrides = [f"out_dir={tmp_path / 'run'}", "data.source=shards", f"data.root={shards.parent}"]
    assert main(["pretrain", str(tiny_config(tmp_path)), *overrides, "eval.num_samples=0", *RUN]) == 1
    one_line_error(capsys, f"{shards / 'index.json'}: shard file '/etc/passwd'; expected a plain file name")


# -- .npy modality files -----------------------------------------------------------------------

FLOW_RECORD = declare("flow", FLOW)


def test_a_nan_in_a_npy_file_stops_training_with_one_line_naming_it(tmp_path, capsys):
    root = tmp_path / "layout"
    write_layout(root, "train", 16, seed=0)
    broken = root / "train" / "flow" / "b" / "0005.npy"
    flow = np.load(broken)
    flow[3, 4, 1] = np.nan
    np.save(broken, flow)
    config = config_file(tmp_path, PRETRAIN, root, ["rgb", "flow"], ["rgb", "flow"], {"flow": FLOW})
    assert main(["pretrain", str(config), f"out_dir={tmp_path / 'run'}", "eval.num_samples=0"]) == 1
    one_line_error(capsys, f"{broken}: 1 NaN or infinite value(s) in flow; expected finite numbers")
    assert not (tmp_path / "run" / "checkpoint-last.pt").exists()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((4, 5, 2), np.inf, np.float32), r"40 NaN or infinite value\(s\) in flow"),
        (np.zeros((4, 5, 2), np.complex64), r"flow declares 2 channel\(s\) of real numbers"),
        (np.zeros((4, 5, 2), np.longdouble), r"floats of at most 64 bits\), .* the file holds float128"),
        (np.zeros((4, 5, 2), bool), "the file holds bool"),
    ],
    ids=["inf", "complex", "longdouble", "bool"],
)
def test_npy_values_a_model_cannot_take_are_refused_naming_the_file(tmp_path, array, message):
    path = tmp_path / "a.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message) as refused:
        read_image(path, FLOW_RECORD)
    assert str(refused.value).startswith(f"{path}: ")


def test_a_big_endian_npy_reads_as_its_values(tmp_path):
    values = np.arange(40, dtype=">f4").reshape(4, 5, 2)
    np.save(tmp_path / "big.npy", values)
    array = read_image(tmp_path / "big.npy", FLOW_RECORD)
    assert array.dtype == np.float32 and array.dtype.isnative
    np.testing.assert_array_equal(array, values)
    assert torch.from_numpy(array).sum() == 780  # what failed, unnamed, further down


def test_a_npy_header_declaring_more_than_its_file_holds_is_not_allocated(tmp_path):
    path = tmp_path / "liar.npy"
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20, 2)}
    )
    path.write_bytes(buffer.getvalue() + bytes(80))
    with pytest.raises(ValueError, match=rf"{path}: its header declares float32 \[1048576, 1048576, 2\]"):
        read_image(path, FLOW_RECORD)


def test_results_json_holds_null_for_a_metric_that_is_not_a_number(tmp_path, capsys):
    run = tmp_path / "run"
    write_json(run / "results.json", {"metrics": {"top1": float("nan"), "rmse": [float("inf"), 1.5]}})
    strict = json.loads((run / "results.json").read_text(), parse_constant=lambda word: pytest.fail(word))
    assert strict == {"metrics": {"top1": None, "rmse": [None, 1.5]}}
    assert main(["report", str(run)]) == 0  # and a report reads it


# -- outputs never overwrite inputs --------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "run" / "checkpoint-last.pt"
    path.parent.mkdir()
    write_run_checkpoint(path, MaskingConfig(num_visible=12))
    return path


def other_names(checkpoint: Path) -> list[Path]:
    """The checkpoint by a symbolic link, a hard link and a longer spelling."""
    (checkpoint.parent / "link.pt").symlink_to(checkpoint)
    os.link(checkpoint, checkpoint.parent / "hard.pt")
    return [
        checkpoint,
        checkpoint.parent / "link.pt",
        checkpoint.parent / "hard.pt",
        checkpoint.parent / "." / checkpoint.name,
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{checkpoint}", "--to", "safetensors", "--out", "{out}"],
        ["export", "{checkpoint}", "--to", "timm", "--out", "{out}"],
        ["visualize", "{checkpoint}", "--out", "{out}"],
        ["evaluate", "{checkpoint}", "--out", "{out}"],
    ],
    ids=["export", "export-timm", "visualize", "evaluate"],
)
def test_an_output_that_is_the_input_is_refused(checkpoint, capsys, command):
    before = checkpoint.read_bytes()
    for out in other_names(checkpoint):
        argv = [word.format(checkpoint=checkpoint, out=out) for word in command]
        assert main(argv) == 1
        one_line_error(capsys, f"--out {out} is the input {checkpoint}: writing it would destroy it")
    assert checkpoint.read_bytes() == before


def test_schedule_and_report_refuse_to_plot_over_what_they_read(tmp_path, capsys):
    config = tiny_config(tmp_path)
    before = config.read_text()
    assert main(["schedule", str(config), "--out", str(config)]) == 1
    one_line_error(capsys, f"--out {config} is the input {config}")
    assert config.read_text() == before
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    metrics.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n')
    assert main(["report", str(metrics.parent), "--out", str(metrics)]) == 1
    one_line_error(capsys, f"--out {metrics} is the input {metrics}")
    assert read_metrics(metrics) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]


def test_export_to_hf_takes_a_new_or_empty_folder_only(checkpoint, tmp_path, capsys):
    held = tmp_path / "held"
    held.mkdir()
    (held / "config.json").write_text('{"model_type": "someone else\'s"}')
    assert main(["export", str(checkpoint), "--to", "hf", "--out", str(held)]) == 1
    one_line_error(
        capsys, f"--out {held} is a folder that already holds files; expected a new or empty folder"
    )
    assert [p.name for p in held.iterdir()] == ["config.json"]
    assert (
        main(["export", str(checkpoint), "--to", "hf", "--out", str(checkpoint.parent)]) == 1
    )  # the run's own
    one_line_error(capsys, "already holds files")
    (tmp_path / "empty").mkdir()
    assert main(["export", str(checkpoint), "--to", "hf", "--out", str(tmp_path / "empty")]) == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["config.json", "model.safetensors"]


# -- symbolic links in and as run folders --------------------------------------------------------


@pytest.mark.parametrize(
    "name", [LOCK_FILE, "metrics.jsonl", "checkpoint-last.pt", "results.json", "pictures"]
)
def test_a_link_in_a_run_folder_is_refused_and_its_target_untouched(tmp_path, capsys, name):
    out, target = tmp_path / "run", tmp_path / "precious.txt"
    out.mkdir()
    target.write_text("keep me\n")
    (out / name).symlink_to(target)
    assert main(["pretrain", str(tiny_config(tmp_path)), f"out_dir={out}", *RUN]) == 1
    one_line_error(capsys, f"{out / name} is a symbolic link")
    assert target.read_text() == "keep me\n"
    assert not list(out.glob("checkpoint-0*.pt"))  # refused before the first step


def test_the_run_files_refuse_links_where_they_are_opened(tmp_path):
    """Below the run folder's check at the start: a link made while a run is on is not followed either."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    for name in ("metrics.jsonl", "checkpoint-last.pt", "results.json"):
        (tmp_path / name).symlink_to(target)
    with pytest.raises(OSError, match=f"{tmp_path / 'metrics.jsonl'} is a symbolic link"):
        RunLogger(tmp_path, total_steps=1)
    with pytest.raises(OSError, match=f"{tmp_path / 'checkpoint-last.pt'} is a symbolic link"):
        save_checkpoint({"step": 1}, tmp_path, 1, keep=1)
    with pytest.raises(OSError, match=f"{tmp_path / 'results.json'} is a symbolic link"):
        write_json(tmp_path / "results.json", {"metrics": {}})
    assert target.read_text() == "keep me\n"


def dangling(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    return tmp_path / "run", f"out_dir={tmp_path / 'run'} is a symbolic link to {tmp_path / 'gone'}, which"


def looping(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "run").symlink_to(tmp_path / "run")
    return tmp_path / "run", f"out_dir={tmp_path / 'run'} is a symbolic link to {tmp_path / 'run'}, which"


def below_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "run"
    return out, f"out_dir={out}: {tmp_path / 'notes.txt'} is a file, not a folder"


@pytest.mark.parametrize("make", [dangling, looping, below_a_file])
def test_an_out_dir_that_cannot_be_a_folder_is_named(tmp_path, capsys, make):
    out, message = make(tmp_path)
    assert main(["pretrain", str(tiny_config(tmp_path)), f"out_dir={out}", *RUN]) == 1
    line = one_line_error(capsys, message)
    assert "Errno" not in line and "choose another out_dir" in line
    assert not (tmp_path / "gone").exists()
