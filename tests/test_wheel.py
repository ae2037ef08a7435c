"""The wheel is what users install: built with its sdist, its metadata checked, installed (not editable) into
a fresh environment, and used from a folder outside the repository: a short pretraining by name, a probe
from its checkpoint, the report, and every command's --help."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.test_pretrain import ROOT


def run(command: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})  # fmt: skip
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh environment holding the built wheel; its dependencies are this environment's, read through a
    path file (so that nothing is downloaded), never this checkout's sources."""
    pytest.importorskip("build", reason="building the wheel needs the build package (the test extra)")
    folder = tmp_path_factory.mktemp("wheel")
    dist = folder / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", dist, ROOT], ROOT)
    (wheel,) = dist.glob("guidedmae-*.whl")
    (sdist,) = dist.glob("guidedmae-*.tar.gz")
    run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], folder)
    with zipfile.ZipFile(wheel) as archive:  # the shipped configs travel with the package
        names = archive.namelist()
        assert "guidedmae/configs/pretrain/demo.yaml" in names and "guidedmae/py.typed" in names
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        assert "guidedmae = guidedmae.cli:main" in archive.read(entry_points).decode()
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], folder)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", site, wheel], folder)
    return venv / "bin" / "python"  # `python -m guidedmae`: the command's script is pip's, not the wheel's


def test_the_installed_wheel_runs_from_outside_the_repository(installed, tmp_path):
    python = installed
    located = run([python, "-c", "import guidedmae; print(guidedmae.__file__)"], tmp_path).stdout.strip()
    assert (
        str(installed.parents[1]) in located and str(ROOT) not in located
    )  # the wheel's, not the checkout's
    command = [python, "-m", "guidedmae"]
    quick = ["data.num_samples=32", "data.batch_size=8", "schedule.total_epochs=1", "eval.num_samples=8",
             "log.picture_every=0", "run.threads=1", "data.num_workers=0"]  # fmt: skip
    run([*command, "pretrain", "demo", "out_dir=pretrain", *quick], tmp_path)
    assert (tmp_path / "pretrain" / "results.json").is_file()
    probe = ["model.init=pretrain/checkpoint-last.pt", "out_dir=probe", "data.num_samples=32",
             "data.eval_num_samples=16", "schedule.total_epochs=1", "data.num_workers=0", "run.threads=1"]  # fmt: skip
    run([*command, "finetune", "synthetic_cls_probe", *probe], tmp_path)
    report = run([*command, "report", "pretrain", "probe"], tmp_path).stdout
    assert "eval_own/loss" in report and "top1" in report
    listing = run([*command, "configs", "study"], tmp_path).stdout
    assert "reference_cpu" in listing
    assert "examples:" in run([*command, "--help"], tmp_path).stdout
    # Every sub-command's --help, in one interpreter (each start imports torch)
    helps = (
        "import contextlib, io, sys\nfrom guidedmae.cli import main\n"
        "from guidedmae.cli import build_parser\n"
        "names = build_parser()._subparsers._group_actions[0].choices\n"
        "for name in names:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "    print(name, 'examples:' in out.getvalue())\n"
    )
    lines = run([python, "-c", helps], tmp_path).stdout.split("\n")
    shown = dict(line.split() for line in lines if line)
    assert len(shown) >= 13 and set(shown.values()) == {"True"}, shown
