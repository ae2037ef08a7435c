"""Bad input, as a careful user and as an attacker would give it: every case is one line on stderr with
exit status 1, naming the file, key or value, and nothing already written changes. Plus a fuzzed
checkpoint loader, two runs on one folder, a killed torchrun agent and a full disk."""

import argparse
import hashlib
import io
import os
import random
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from guidedmae.cli import main
from guidedmae.config import PretrainConfig, load_config
from guidedmae.data.writers import write_sample
from guidedmae.infra.checkpoints import CheckpointError, read_checkpoint
from guidedmae.infra.run_folder import lock_run_folder
from guidedmae.infra.run_log import read_metrics
from guidedmae.models import MultiMAE
from guidedmae.models.official import load_official_checkpoint
from guidedmae.models.pretrained import load_pretrained
from tests.test_distributed import free_port
from tests.test_pretrain import ROOT, tiny_config

RUN = ["log.picture_every=0", "log.every=1"]


def folder_digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `folder`."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def one_line_error(capsys, fragment: str) -> str:
    """The command's error on stderr: one line (beside the progress bar), holding `fragment`; no traceback."""
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert lines[0].startswith("guidedmae ") and fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny finished pretraining run (config file, run folder)."""
    tmp_path = tmp_path_factory.mktemp("finished")
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=2", *RUN]) == 0
    return config, out


# -- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr="], "'optim.lr=': no value after '='"),
        (["model.init="], "'model.init=': no value after '='"),
        (["optim.lr=inf"], "optim.lr=inf; expected a finite number"),
        (["masking.alphas=[1.0,nan,1.0]"], "masking.alphas[1]=nan; expected a finite number"),
        (["optim.blrr=1"], "unknown key 'optim.blrr'"),
        (["data.root=/does-not-exist"], "data.root='/does-not-exist' is not read: data.source=synthetic"),
        (["data.split=val"], "data.split='val' does not apply to data.source=synthetic"),
        (["masking.strategy=loss"], "masking.strategy='loss'; expected one of"),
        (["masking.curriculum.shape=linear"], "masking.curriculum apply to guided strategies"),
        (["data.on_error=ignore"], "data.on_error='ignore'; expected one of"),
        (["schedule.start_epoch=9"], "schedule.start_epoch=9"),
    ],
)
def test_bad_configs_are_refused_before_anything_is_written(finished_run, capsys, overrides, message):
    config, out = finished_run
    before = folder_digest(out)
    assert main(["pretrain", str(config), f"out_dir={out}", "resume=auto", *RUN, *overrides]) == 1
    one_line_error(capsys, message)
    assert folder_digest(out) == before


def test_an_out_dir_that_is_a_file_is_named(tmp_path, capsys):
    config, target = tiny_config(tmp_path), tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["pretrain", str(config), f"out_dir={target}", *RUN]) == 1
    one_line_error(capsys, f"out_dir={target} is a file, not a folder")
    assert target.read_text() == "mine"


# -- data --------------------------------------------------------------------------------------


def write_folder(root: Path, count: int = 16, size: int = 32) -> list[Path]:
    """A folder-layout data set of random images; returns the rgb files."""
    rng = np.random.default_rng(0)
    for index in range(count):
        sample = {
            "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "depth": rng.uniform(0.5, 5, (size, size)).astype(np.float32),
            "semseg": rng.integers(0, 8, (size, size), dtype=np.uint8),
        }
        write_sample(root, "train", "things", f"{index:03d}", sample)
    return sorted((root / "train" / "rgb" / "things").iterdir())


FOLDER = ["data.source=folder", "data.num_samples=16", "schedule.total_epochs=1", "eval.num_samples=0"]


def break_truncated(root: Path) -> Path:
    path = root / "train" / "rgb" / "things" / "005.png"
    path.write_bytes(path.read_bytes()[:100])
    return path


def break_class_id(root: Path) -> Path:
    path = root / "train" / "semseg" / "things" / "007.png"
    ids = np.zeros((32, 32), np.uint8)
    ids[3, 4] = 200
    Image.fromarray(ids).save(path)
    return path


def break_missing(root: Path) -> Path:
    path = root / "train" / "depth" / "things" / "002.png"
    path.unlink()
    return root / "train" / "rgb" / "things" / "002.png"


@pytest.mark.parametrize(
    ("damage", "message", "workers"),
    [
        (break_truncated, "cannot read rgb image {path}", 0),
        (break_truncated, "cannot read rgb image {path}", 1),  # raised in a DataLoader worker
        (break_class_id, "{path}: class id 200 in a semseg map, the model takes 0..7", 1),
        (break_missing, "sample {path} has no depth file", 0),
    ],
)
def test_broken_data_is_one_line_naming_the_file(tmp_path, capsys, damage, message, workers):
    root = tmp_path / "data"
    write_folder(root)
    path = damage(root)
    config = tiny_config(tmp_path)
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        f"data.root={root}",
        f"data.num_workers={workers}",
        *FOLDER,
        *RUN,
    ]
    assert main(["pretrain", str(config), *overrides]) == 1
    one_line_error(capsys, message.format(path=path))
    assert not list((tmp_path / "run").glob("checkpoint-*.pt"))


@pytest.mark.parametrize("damage", [break_truncated, break_class_id, break_missing])
def test_skip_mode_decodes_every_file_and_trains_on_the_rest(tmp_path, capsys, damage):
    root = tmp_path / "data"
    write_folder(root, count=17)
    path = damage(root)
    config = tiny_config(tmp_path)
    overrides = [f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.on_error=skip", *FOLDER, *RUN]
    with pytest.warns(UserWarning, match=rf"skipped 1 of 17 samples in {root / 'train'}: .*{path.name}"):
        assert main(["pretrain", str(config), *overrides, "data.num_workers=0"]) == 0
    assert (tmp_path / "run" / "checkpoint-last.pt").is_file()


def test_a_decompression_bomb_is_named(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    rgb = write_folder(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32 x 32 = 1024 pixels: over twice the limit
    config = tiny_config(tmp_path)
    overrides = [f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.num_workers=0", *FOLDER, *RUN]
    assert main(["pretrain", str(config), *overrides]) == 1
    one_line_error(capsys, f"{rgb[0]}: refused as a decompression bomb")


def test_evaluate_refuses_options_that_do_not_apply(tmp_path, capsys):
    from guidedmae.engine.finetune import finetune
    from tests.test_finetune import CLASSIFICATION, config_of

    result = finetune(config_of(tmp_path, *CLASSIFICATION))
    before = folder_digest(result.out_dir)
    checkpoint = str(result.checkpoint)
    assert main(["evaluate", checkpoint, "--data", "/does-not-exist"]) == 1
    one_line_error(capsys, "data.root='/does-not-exist' is not read: data.source=synthetic")
    assert main(["evaluate", checkpoint, "--split", "test"]) == 1
    one_line_error(capsys, "data.eval_split='test' does not apply to data.source=synthetic")
    # The README's form: overrides after the flags.
    assert main(["evaluate", checkpoint, "--out", str(tmp_path / "e.json"), "eval.mode=whole"]) == 0
    assert "eval.mode=whole" in capsys.readouterr().out
    assert main(["visualize", checkpoint]) == 1
    one_line_error(capsys, "a fine-tuning checkpoint (encoder and task head, no decoders)")
    assert folder_digest(result.out_dir) == before


def test_other_commands_name_what_is_wrong(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    one_line_error(capsys, f"{tmp_path / 'empty'}: no metrics.jsonl or results.json")
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--n", "0"]) == 1
    one_line_error(capsys, "n, size and workers must be positive, got n=0")
    (tmp_path / "junk.mat").write_text("not a mat file")
    assert main(["data", "nyuv2", "--mat", str(tmp_path / "junk.mat"), "--out", str(tmp_path / "n")]) == 1
    one_line_error(capsys, f"{tmp_path / 'junk.mat'} is not HDF5")


# -- checkpoints -------------------------------------------------------------------------------


def junk_files(good: bytes, count: int, seed: int) -> list[bytes]:
    """Random bytes, text, truncations, mutations of a real checkpoint, empty files and foreign zips."""
    rng = random.Random(seed)
    blobs = [b""]
    for index in range(count - 1):
        kind = index % 5
        if kind == 0:
            blobs.append(rng.randbytes(rng.randint(1, 4000)))
        elif kind == 1:
            blobs.append(good[: rng.randrange(len(good))])
        elif kind == 2:
            mutated = bytearray(good)
            for _ in range(rng.randint(1, 30)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            blobs.append(bytes(mutated))
        elif kind == 3:
            blobs.append(("weights " * rng.randint(1, 300)).encode())
        else:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("archive/data.pkl", rng.randbytes(200))
            blobs.append(buffer.getvalue())
    return blobs


def test_fuzzed_checkpoints_give_only_the_named_error(finished_run, tmp_path):
    _, out = finished_run
    good = (out / "checkpoint-last.pt").read_bytes()
    model = MultiMAE(run_architecture(out))
    outcomes = {"error": 0, "loaded": 0}
    for index, blob in enumerate(junk_files(good, 300, seed=0)):
        path = tmp_path / f"fuzz-{index}.pt"
        path.write_bytes(blob)
        try:
            read_checkpoint(path)
            load_pretrained(model, path)
            load_official_checkpoint(path, num_heads=4, decoder_heads=2)
        except CheckpointError as error:  # UnreadableCheckpoint among them
            assert str(path) in str(error) and "\n" not in str(error)
            outcomes["error"] += 1
        else:
            outcomes["loaded"] += 1  # a mutation inside tensor data: a valid file with other numbers
    assert outcomes["error"] > 250


def run_architecture(out: Path):
    """The MultiMAEConfig a run folder's config.yaml describes."""
    config = load_config(PretrainConfig, out / "config.yaml")
    return config.model.architecture(config.modalities)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "not a readable torch checkpoint (empty, truncated"),
        (b"just some text\n", "not a readable torch checkpoint"),
        (os.urandom(3000), "not a readable torch checkpoint"),
    ],
    ids=["empty", "text", "random"],
)
@pytest.mark.parametrize("command", ["init", "visualize", "evaluate"])
def test_junk_files_are_one_named_line_for_every_command(
    finished_run, tmp_path, capsys, blob, message, command
):
    config, _ = finished_run
    path = tmp_path / "weights.pth"
    path.write_bytes(blob)
    argv = {
        "init": ["pretrain", str(config), f"out_dir={tmp_path / 'run'}", f"model.init={path}", *RUN],
        "visualize": ["visualize", str(path)],
        "evaluate": ["evaluate", str(path)],
    }[command]
    assert main(argv) == 1
    one_line_error(capsys, f"{path}: {message}")
    assert not (tmp_path / "run" / "checkpoint-last.pt").exists()


def test_code_in_a_pickle_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    assert main(["visualize", str(path)]) == 1
    one_line_error(capsys, f"{path}: refused to load, it pickles something beyond tensors")
    assert not marker.exists()


def test_a_declared_architecture_is_checked_before_anything_is_allocated(finished_run, tmp_path, capsys):
    # Tiny tensors, a stored config declaring a ViT-H-sized model at 4096 pixels: tens of GB if built.
    model = MultiMAE(run_architecture(finished_run[1]))
    config = {
        "model": {"dim": 1280, "depth": 32, "num_heads": 16, "image_size": 4096, "patch_size": 16},
        "data": {"augment": {"size": 4096}},
    }
    path = tmp_path / "liar.pt"
    torch.save({"model": model.state_dict(), "config": config, "step": 1}, path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["visualize", str(path)]) == 1
    one_line_error(capsys, f"{path} does not fit the model it declares")
    official = tmp_path / "official.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(input_size=65536)}, official)
    assert main(["visualize", str(official)]) == 1
    one_line_error(capsys, f"{official}: model.image_size=65536; expected 1..16384")
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(input_size=8192)}, official)
    assert main(["visualize", str(official)]) == 1
    one_line_error(capsys, f"{official} does not fit the model it declares")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 500


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(finished_run, tmp_path):
    config, finished = finished_run
    out = tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=2", *RUN]) == 0
    newest = sorted(out.glob("checkpoint-0*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a damaged step file...
    (out / "checkpoint-last.pt").write_bytes(b"")  # ...and an emptied copy
    assert (
        main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=2", "resume=auto", *RUN]) == 0
    )
    records = read_metrics(out / "metrics.jsonl")
    skipped = [r["reason"] for r in records if r.get("event") == "resume_skipped"]
    assert len(skipped) == 2 and newest.name in skipped[0] and "checkpoint-last.pt" in skipped[1]
    [resumed] = [r for r in records if r.get("event") == "resumed"]
    assert resumed["path"].endswith("checkpoint-00000012.pt") and resumed["step"] == 12
    assert torch.load(out / "checkpoint-last.pt", weights_only=True)["step"] == 16  # and it ran to the end


# -- one run per folder ------------------------------------------------------------------------


def start_run(config: Path, out: Path, *overrides: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "guidedmae", "pretrain", str(config), f"out_dir={out}", *RUN, *overrides]
    return subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
    )


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # a guard against a hung child, not a timing assumption
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def logged_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return sum(1 for r in read_metrics(path) if "loss" in r) if path.is_file() else 0


def test_a_second_run_in_a_used_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    config, out = tiny_config(tmp_path), tmp_path / "run"
    first = start_run(
        config, out, "schedule.total_epochs=400", "checkpoint.every=4", log=tmp_path / "first.log"
    )
    try:
        wait_for(lambda: logged_steps(out) >= 2, "the first run's steps")
        config_before = (out / "config.yaml").read_text()
        for resume in (["resume=auto"], []):  # a requeued job, and a fresh run by mistake
            assert main(["pretrain", str(config), f"out_dir={out}", *resume, "log.every=7"]) == 1
            line = one_line_error(capsys, f"{out} is in use by another run")
            assert f"pid {first.pid}" in line
        assert first.poll() is None  # the first run goes on
        assert (out / "config.yaml").read_text() == config_before
        assert sum(1 for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "start") == 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    with lock_run_folder(out):  # the killed run's lock died with it: the requeued run gets the folder
        pass


def test_workers_of_a_killed_torchrun_agent_stop(tmp_path):
    config, out = tiny_config(tmp_path), tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "guidedmae", "pretrain", str(config), f"out_dir={out}",
        "schedule.total_epochs=2000", "run.threads=1", *RUN,
    ]  # fmt: skip
    log = tmp_path / "torchrun.log"  # the workers write to the agent's stderr
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=ROOT)
    workers = []
    try:
        wait_for(lambda: logged_steps(out) >= 3, "the workers' first steps")
        workers = _children(agent.pid)
        assert len(workers) == 2
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to stop", timeout=60)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert f"the torchrun agent (pid {agent.pid}) that started rank" in log.read_text()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- a full disk -------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_earlier_checkpoints_survive(tmp_path):
    config, out = tiny_config(tmp_path), tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "schedule.total_epochs=2", *RUN]) == 0
    for name in ("checkpoint-00000016.pt", "checkpoint-last.pt"):  # as if killed after step 12's checkpoint
        (out / name).unlink()
    checkpoints = {p.name: p.read_bytes() for p in out.glob("checkpoint-*.pt")}

    def limit_file_size():  # every write beyond 200 kB fails as on a full disk (EFBIG, not a signal)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    command = [sys.executable, "-m", "guidedmae", "pretrain", str(config), f"out_dir={out}", "resume=auto",
               "schedule.total_epochs=2", *RUN]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, preexec_fn=limit_file_size, timeout=300
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert f"cannot write {out / 'checkpoint-00000016.pt'}" in line and "it is as it was" in line
    assert {p.name: p.read_bytes() for p in out.glob("checkpoint-*.pt")} == checkpoints
    assert not list(out.glob(".*.tmp"))
