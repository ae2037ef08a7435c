"""`guidedmae pseudolabel` with tiny randomly initialised transformers models (conftest's: no download)."""

import numpy as np
import pytest
from conftest import PSEUDOLABEL_CLASSES as CLASSES
from PIL import Image

from guidedmae.cli import main
from guidedmae.data.datasets import FolderDataset
from guidedmae.data.transforms import AugmentConfig

pytest.importorskip("transformers")  # a test extra, installed by `make test`


def rgb_folder(root, count: int = 5) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = root / "train" / "rgb" / ("cats" if index % 2 else "dogs") / f"{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + index, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_labels_are_written_in_the_folder_layout_and_a_second_run_skips_them(
    tmp_path, pseudolabel_models, capsys
):
    rgb = rgb_folder(tmp_path)
    command = [
        "pseudolabel",
        str(tmp_path),
        "--depth",
        pseudolabel_models["depth"],
        "--semseg",
        pseudolabel_models["semseg"],
        "--batch-size",
        "2",
    ]
    assert main(command) == 0
    assert "wrote 5 depth, 5 semseg labels" in capsys.readouterr().out
    for path in rgb:
        relative = path.relative_to(tmp_path / "train" / "rgb").with_suffix(".png")
        with Image.open(path) as image:
            size = image.size
        with Image.open(tmp_path / "train" / "depth" / relative) as depth:
            assert depth.size == size and depth.mode.startswith("I;16")
        with Image.open(tmp_path / "train" / "semseg" / relative) as semseg:
            ids = np.asarray(semseg)
            assert semseg.size == size and semseg.mode == "L" and ids.max() < CLASSES
    # The layout is complete: the folder reader takes it as it is.
    dataset = FolderDataset(
        tmp_path, "train", ("rgb", "depth", "semseg"), AugmentConfig(size=16, semseg_stride=1)
    )
    assert len(dataset) == 5 and set(dataset[0]) >= {"rgb", "depth", "semseg"}
    times = {p: p.stat().st_mtime_ns for p in (tmp_path / "train").rglob("*.png")}
    assert main(command) == 0
    assert "wrote 0 depth, 0 semseg labels" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "train").rglob("*.png")} == times


def test_shards_share_the_images(tmp_path, pseudolabel_models, capsys):
    rgb_folder(tmp_path)
    for shard in ("0/2", "1/2"):
        assert (
            main(["pseudolabel", str(tmp_path), "--depth", pseudolabel_models["depth"], "--shard", shard])
            == 0
        )
    assert "wrote 2 depth" in capsys.readouterr().out  # 3 then 2 of the 5 images
    assert len(list((tmp_path / "train" / "depth").rglob("*.png"))) == 5


def test_bad_requests_are_named(tmp_path, pseudolabel_models, capsys):
    assert main(["pseudolabel", str(tmp_path), "--depth", pseudolabel_models["depth"]]) == 1
    assert f"no rgb folder {tmp_path / 'train' / 'rgb'}" in capsys.readouterr().err
    rgb_folder(tmp_path)
    assert main(["pseudolabel", str(tmp_path)]) == 1
    assert "give --depth and/or --semseg" in capsys.readouterr().err
    assert main(["pseudolabel", str(tmp_path), "--depth", pseudolabel_models["depth"], "--shard", "3/2"]) == 1
    assert "--shard 3/2; expected 0 <= i < n" in capsys.readouterr().err
