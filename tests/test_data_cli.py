"""`guidedmae data synth` and `guidedmae data nyuv2` write data sets the readers load back."""

import json

import h5py
import numpy as np

from guidedmae.cli import main
from guidedmae.data.datasets import FolderDataset
from guidedmae.data.folder import index_folder, read_sample
from guidedmae.data.scenes import SHAPES, render_scene
from guidedmae.data.transforms import AugmentConfig

MODALITIES = ("rgb", "depth", "semseg")


def file_bytes(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_writes_the_scenes_in_the_folder_layout(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path),
                "--n",
                "5",
                "--size",
                "24",
                "--split",
                "val",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "wrote 5 synthetic scenes" in captured.out and "5/5" in captured.err  # the progress bar
    samples, classes = index_folder(tmp_path, "val", MODALITIES)
    assert len(samples) == 5 and set(classes) <= set(SHAPES)
    for sample in samples:
        index = int(sample.key.split("/")[1])
        scene = render_scene(2, index, 24, population="val")  # the val split: the held-out scenes
        assert sample.key == f"{SHAPES[scene.label]}/{index:06d}"
        read = read_sample(sample.paths)
        np.testing.assert_array_equal(read["rgb"], scene.rgb)
        np.testing.assert_array_equal(read["semseg"], scene.semseg)
        np.testing.assert_allclose(read["depth"], scene.depth, atol=0.5e-3 + 1e-6)  # millimetres


def test_rerunning_synth_with_workers_rewrites_identical_files(tmp_path):
    args = ["data", "synth", "--out", str(tmp_path), "--n", "6", "--size", "16"]
    main(args)
    first = file_bytes(tmp_path)
    main([*args, "--workers", "2"])
    assert file_bytes(tmp_path) == first
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files left behind
    dataset = FolderDataset(tmp_path, "train", MODALITIES, AugmentConfig(size=16))
    assert len(dataset) == 6 and dataset[0]["semseg"].shape == (4, 4)


def test_nyuv2_command_converts_with_a_split_and_a_mapping(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 895, (4, 3, 5)).astype(np.uint16)  # [N, H, W]
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as mat:
        mat["images"] = rng.integers(0, 256, (4, 3, 5, 3), dtype=np.uint8)  # [N, 3, W, H]
        mat["depths"] = rng.uniform(1, 5, (4, 5, 3)).astype(np.float32)
        mat["labels"] = labels.transpose(0, 2, 1)
    (tmp_path / "split.json").write_text(json.dumps({"train": [1, 2, 3], "test": [4]}))
    np.save(tmp_path / "map.npy", np.arange(895) % 41)
    argv = [
        "data",
        "nyuv2",
        "--mat",
        str(tmp_path / "nyu_depth_v2_labeled.mat"),
        "--out",
        str(tmp_path / "nyu"),
    ]
    assert (
        main([*argv, "--split-file", str(tmp_path / "split.json"), "--mapping", str(tmp_path / "map.npy")])
        == 0
    )
    assert "train 3, test 1" in capsys.readouterr().out
    test_set = FolderDataset(
        tmp_path / "nyu", "test", MODALITIES, AugmentConfig(size=3, semseg_stride=1, train=False)
    )
    np.testing.assert_array_equal(test_set[0]["semseg"].numpy(), labels[3][:, 1:4] % 41)  # the centre square


def test_nyuv2_command_names_a_missing_file(tmp_path, capsys):
    assert main(["data", "nyuv2", "--mat", str(tmp_path / "absent.mat"), "--out", str(tmp_path / "out")]) == 1
    assert f"guidedmae data: error: no such file {tmp_path / 'absent.mat'}" in capsys.readouterr().err
