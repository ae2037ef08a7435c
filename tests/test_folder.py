"""Files on disk: the MultiMAE folder layout, ADE20K's release layout, the NYUv2 .mat converter."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from guidedmae.data.folder import index_ade20k, index_folder, read_ade20k_sample, read_image, read_sample
from guidedmae.data.modalities import declare
from guidedmae.data.nyuv2 import convert_nyuv2, load_class_mapping, load_nyuv2_split
from guidedmae.data.writers import encode_depth, save_image_atomic, write_sample

MODALITIES = ("rgb", "depth", "semseg")


def tiny_sample(seed: int, height: int = 5, width: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 10.0, (height, width)).astype(np.float32),
        "semseg": rng.integers(0, 40, (height, width), dtype=np.uint8),
    }


def write_layout(root, split="train", classes=("cat", "dog"), per_class=2):
    """root/<split>/<modality>/<class>/<class>_<i>.png for every modality; returns {key: sample}."""
    written = {}
    for c, class_name in enumerate(classes):
        for i in range(per_class):
            sample = tiny_sample(10 * c + i)
            write_sample(root, split, class_name, f"{class_name}_{i}", sample)
            written[f"{class_name}/{class_name}_{i}"] = sample
    return written


def hidden_files(root):
    return [p for p in root.rglob(".*") if p.is_file()]


# ------------------------------------------------------------------------------------------
# The folder layout


def test_a_written_sample_reads_back_with_millimetre_depth(tmp_path):
    sample = tiny_sample(0)
    write_sample(tmp_path, "train", "all", "a", sample)
    paths = {m: tmp_path / "train" / m / "all" / "a.png" for m in MODALITIES}
    read = read_sample(paths)
    np.testing.assert_array_equal(read["rgb"], sample["rgb"])
    np.testing.assert_array_equal(read["semseg"], sample["semseg"])
    np.testing.assert_allclose(read["depth"], np.rint(sample["depth"] * 1000) / 1000, atol=1e-6)
    assert Image.open(paths["depth"]).mode == "I;16" and Image.open(paths["semseg"]).mode == "L"
    assert hidden_files(tmp_path) == []


def test_depth_scale_is_the_number_of_file_units_per_metre(tmp_path):
    depth = np.array([[1.5, 2.0]], dtype=np.float32)
    write_sample(tmp_path, "train", "all", "a", {"depth": depth}, depth_scale=10_000.0)
    path = tmp_path / "train/depth/all/a.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), [[15_000, 20_000]])
    np.testing.assert_allclose(read_image(path, declare("depth", {"scale": 10_000.0})), depth)


def test_sixteen_bit_class_maps_round_trip(tmp_path):
    semseg = np.array([[0, 300], [894, 7]], dtype=np.uint16)
    write_sample(tmp_path, "train", "all", "a", {"semseg": semseg})
    np.testing.assert_array_equal(read_image(tmp_path / "train/semseg/all/a.png", "semseg"), semseg)


def test_encode_depth_marks_missing_values_and_clips_far_ones():
    depth = np.array([np.nan, -1.0, 0.0, 1.2346, 70.0], dtype=np.float32)
    np.testing.assert_array_equal(encode_depth(depth), [0, 0, 0, 1235, 65535])


def test_index_matches_modalities_by_relative_path_and_numbers_classes(tmp_path):
    write_layout(tmp_path, classes=("dog", "cat"))
    # rgb may be a JPEG while the other modalities are PNGs: matching ignores the extension
    png = tmp_path / "train/rgb/cat/cat_0.png"
    Image.open(png).save(png.with_suffix(".jpg"), quality=95)
    png.unlink()
    samples, classes = index_folder(tmp_path, "train", MODALITIES)
    assert classes == ["cat", "dog"]
    assert [s.key for s in samples] == ["cat/cat_0", "cat/cat_1", "dog/dog_0", "dog/dog_1"]
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert samples[0].paths["rgb"].suffix == ".jpg" and samples[0].paths["depth"].suffix == ".png"
    assert samples[3].paths["semseg"] == tmp_path / "train/semseg/dog/dog_1.png"


def test_only_the_requested_modalities_are_needed(tmp_path):
    write_layout(tmp_path)
    for path in (tmp_path / "train/depth").rglob("*.png"):
        path.unlink()
    samples, _ = index_folder(tmp_path, "train", ("rgb", "semseg"))
    assert len(samples) == 4 and set(samples[0].paths) == {"rgb", "semseg"}


def test_a_sample_missing_a_modality_is_an_error_naming_it(tmp_path):
    write_layout(tmp_path)
    (tmp_path / "train/depth/dog/dog_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"dog_1\.png has no depth file .*train/depth/dog/dog_1\.\*"):
        index_folder(tmp_path, "train", MODALITIES)


def test_skip_mode_drops_bad_samples_with_one_warning(tmp_path):
    write_layout(tmp_path, per_class=3)
    (tmp_path / "train/depth/dog/dog_1.png").unlink()  # missing modality
    (tmp_path / "train/semseg/cat/cat_2.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(np.zeros((6, 7), np.uint16)).save(tmp_path / "train/depth/cat/cat_0.png")  # wrong size
    with pytest.warns(UserWarning, match=r"skipped 3 of 6 samples") as caught:
        samples, _ = index_folder(tmp_path, "train", MODALITIES, on_error="skip")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "dog_1.png has no depth" in message and "cat_2.png" in message and "cat_0.png is 7x6" in message
    assert [s.key for s in samples] == ["cat/cat_1", "dog/dog_0", "dog/dog_2"]


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    write_layout(tmp_path)
    broken = tmp_path / "train/rgb/cat/cat_1.png"
    broken.write_bytes(b"\x89PNG garbage")
    samples, _ = index_folder(tmp_path, "train", MODALITIES)  # found by listing; read later
    with pytest.raises(ValueError, match=f"cannot read rgb image {broken}"):
        read_sample(samples[1].paths)


def write_jpegs(folder) -> dict:
    """ImageNet's kinds of JPEG: colour (4:2:0 and 4:4:4 chroma), grey and CMYK; {name: path}."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    kinds = {
        "rgb420": (rgb, 2),
        "rgb444": (rgb, 0),
        "grey": (rgb.convert("L"), 2),
        "cmyk": (rgb.convert("CMYK"), 2),
    }
    paths = {}
    for name, (image, subsampling) in kinds.items():
        paths[name] = folder / f"{name}.jpg"
        image.save(paths[name], format="JPEG", quality=90, subsampling=subsampling)
    return paths


def test_jpegs_read_the_same_pixels_with_either_decoder(tmp_path, monkeypatch):
    import guidedmae.data.folder as folder

    pytest.importorskip("simplejpeg")
    paths = write_jpegs(tmp_path)
    fast = {name: read_image(path, "rgb") for name, path in paths.items()}
    monkeypatch.setattr(folder, "simplejpeg", None)
    for name, path in paths.items():
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(fast[name], expected, err_msg=name)
        np.testing.assert_array_equal(read_image(path, "rgb"), expected, err_msg=name)
        assert fast[name].dtype == np.uint8 and fast[name].shape == (37, 53, 3)


@pytest.mark.parametrize("fast", [True, False])
def test_a_truncated_or_oversized_jpeg_is_an_error_naming_it(tmp_path, monkeypatch, fast):
    import guidedmae.data.folder as folder

    if fast:
        pytest.importorskip("simplejpeg")
    else:
        monkeypatch.setattr(folder, "simplejpeg", None)
    path = write_jpegs(tmp_path)["rgb420"]
    data = path.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read rgb image {truncated}"):
        read_image(truncated, "rgb")
    with pytest.raises(ValueError, match=f"cannot read rgb image {truncated}"):
        read_image(truncated, "rgb", data[: len(data) // 2])  # bytes from a shard
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 37 x 53 pixels: over twice the limit
    with pytest.raises(ValueError, match=f"{path}: refused as a decompression bomb"):
        read_image(path, "rgb")


def test_images_of_different_sizes_are_an_error_naming_both(tmp_path):
    write_layout(tmp_path)
    small = tmp_path / "train/semseg/dog/dog_0.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(small)
    samples, _ = index_folder(tmp_path, "train", MODALITIES)
    with pytest.raises(ValueError, match=rf"differ in size: .*dog_0\.png is 7x5.*{small} is 4x4"):
        read_sample(samples[2].paths)


def test_depth_must_be_sixteen_bit(tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    with pytest.raises(ValueError, match=rf"{path}: depth must be a 16-bit grey PNG, got PIL mode L"):
        read_image(path, "depth")


def test_two_files_for_one_sample_are_ambiguous(tmp_path):
    write_layout(tmp_path)
    Image.open(tmp_path / "train/rgb/cat/cat_0.png").save(tmp_path / "train/rgb/cat/cat_0.jpg")
    with pytest.raises(ValueError, match="two files for one sample: .*cat_0.jpg and .*cat_0.png"):
        index_folder(tmp_path, "train", MODALITIES)


def test_missing_split_or_modality_folder_is_named(tmp_path):
    write_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="no split folder .*val"):
        index_folder(tmp_path, "val", MODALITIES)
    with pytest.raises(FileNotFoundError, match="no depth folder .*train/depth"):
        (tmp_path / "train/depth/cat/cat_0.png").parent.parent.rename(tmp_path / "train/elsewhere")
        index_folder(tmp_path, "train", MODALITIES)


def test_files_outside_class_folders_break_the_layout(tmp_path):
    write_layout(tmp_path)
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "train/rgb/stray.png")
    with pytest.raises(ValueError, match="expected class folders in .*train/rgb, found the file .*stray.png"):
        index_folder(tmp_path, "train", MODALITIES)


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "a.png"
    save_image_atomic(np.full((3, 3), 7, np.uint8), path)
    with pytest.raises(OSError):
        save_image_atomic(np.zeros((3, 3), np.float64), path)  # PIL cannot write this as PNG
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.full((3, 3), 7))
    assert hidden_files(tmp_path) == []


# ------------------------------------------------------------------------------------------
# ADE20K


def write_ade20k(root, split="training", count=2, height=6, width=9):
    """ADEChallengeData2016/{images,annotations}/<split>/ADE_<split>_0000000<i>.{jpg,png}."""
    ade = root / "ADEChallengeData2016"
    prefix = "ADE_train" if split == "training" else "ADE_val"
    annotations = {}
    for i in range(1, count + 1):
        name = f"{prefix}_{i:08d}"
        rng = np.random.default_rng(i)
        (ade / "images" / split).mkdir(parents=True, exist_ok=True)
        (ade / "annotations" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            ade / "images" / split / f"{name}.jpg"
        )
        labels = rng.integers(0, 151, (height, width)).astype(np.uint8)
        labels[0, :3] = [0, 1, 150]
        Image.fromarray(labels).save(ade / "annotations" / split / f"{name}.png")
        annotations[name] = labels
    return ade, annotations


def test_ade20k_reduce_zero_label_maps_other_to_ignore(tmp_path):
    ade, annotations = write_ade20k(tmp_path)
    samples = index_ade20k(ade, "training")
    assert [s["rgb"].name for s in samples] == ["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    labels = annotations["ADE_train_00000001"]
    reduced = read_ade20k_sample(samples[0], reduce_zero_label=True)["semseg"]
    np.testing.assert_array_equal(reduced[0, :3], [255, 0, 149])
    np.testing.assert_array_equal(reduced, np.where(labels == 0, 255, labels.astype(int) - 1))
    raw = read_ade20k_sample(samples[0], reduce_zero_label=False)
    np.testing.assert_array_equal(raw["semseg"], labels)
    assert raw["rgb"].shape == (6, 9, 3) and raw["rgb"].dtype == np.uint8


def test_ade20k_accepts_short_split_names_and_names_missing_annotations(tmp_path):
    ade, _ = write_ade20k(tmp_path, split="validation", count=3)
    assert len(index_ade20k(ade, "val")) == 3
    (ade / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_val_00000002.jpg has no semseg file"):
        index_ade20k(ade, "validation")
    with pytest.raises(ValueError, match="split must be one of"):
        index_ade20k(ade, "test")


def test_ade20k_rejects_ids_above_150(tmp_path):
    ade, _ = write_ade20k(tmp_path, count=1)
    bad = ade / "annotations/training/ADE_train_00000001.png"
    Image.fromarray(np.full((6, 9), 151, np.uint8)).save(bad)
    with pytest.raises(ValueError, match=f"{bad}: ADE20K ids are 0..150, found 151"):
        read_ade20k_sample(index_ade20k(ade, "training")[0], reduce_zero_label=True)


# ------------------------------------------------------------------------------------------
# NYUv2


def write_nyu_mat(path, count=5, height=4, width=6):
    """A labeled .mat in the official storage: images [N, 3, W, H], depths / labels [N, W, H]."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)  # [N, H, W, 3]
    depths = rng.uniform(0.7, 9.5, (count, height, width)).astype(np.float32)
    labels = rng.integers(0, 895, (count, height, width)).astype(np.uint16)
    labels[0, 0, 0] = 894
    with h5py.File(path, "w") as mat:
        mat["images"] = images.transpose(0, 3, 2, 1)
        mat["depths"] = depths.transpose(0, 2, 1)
        mat["labels"] = labels.transpose(0, 2, 1)
    return images, depths, labels


def test_nyuv2_conversion_writes_the_layout_in_image_order(tmp_path):
    images, depths, labels = write_nyu_mat(tmp_path / "nyu.mat")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [2, 4, 5], "test": [1, 3]}))
    counts = convert_nyuv2(tmp_path / "nyu.mat", tmp_path / "out", split_file=split, progress=False)
    assert counts == {"train": 3, "test": 2}
    samples, classes = index_folder(tmp_path / "out", "test", MODALITIES)
    assert classes == ["nyu"] and [s.key for s in samples] == ["nyu/0001", "nyu/0003"]
    read = read_sample(samples[1].paths)
    np.testing.assert_array_equal(read["rgb"], images[2])
    np.testing.assert_allclose(read["depth"], np.rint(depths[2] * 1000) / 1000, atol=1e-6)
    np.testing.assert_array_equal(read["semseg"], labels[2])  # raw ids, 16-bit
    assert Image.open(samples[1].paths["semseg"]).mode == "I;16"
    assert [s.key for s in index_folder(tmp_path / "out", "train", MODALITIES)[0]] == [
        "nyu/0002",
        "nyu/0004",
        "nyu/0005",
    ]
    assert hidden_files(tmp_path / "out") == []


def test_nyuv2_official_split_and_40_class_mapping_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    _, _, labels = write_nyu_mat(tmp_path / "nyu.mat")
    # splits.mat and classMapping40.mat are MATLAB v5 files with 1-based column / row vectors
    scipy_io.savemat(
        tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])}
    )
    map_class = (np.arange(894) % 40 + 1)[None]  # [1, 894]: id k -> ((k - 1) mod 40) + 1
    scipy_io.savemat(tmp_path / "classMapping40.mat", {"mapClass": map_class})
    convert_nyuv2(
        tmp_path / "nyu.mat",
        tmp_path / "out",
        split_file=tmp_path / "splits.mat",
        mapping_file=tmp_path / "classMapping40.mat",
        progress=False,
    )
    semseg_file = tmp_path / "out/test/semseg/nyu/0005.png"
    assert Image.open(semseg_file).mode == "L"
    expected = np.where(labels[4] == 0, 0, (labels[4].astype(int) - 1) % 40 + 1)
    np.testing.assert_array_equal(read_image(semseg_file, "semseg"), expected)
    assert sorted(p.stem for p in (tmp_path / "out/train/rgb/nyu").iterdir()) == ["0001", "0002", "0004"]


def test_nyuv2_default_split_is_the_first_795_images():
    split = load_nyuv2_split(None, 1449)
    np.testing.assert_array_equal(split["train"], np.arange(795))
    np.testing.assert_array_equal(split["test"], np.arange(795, 1449))


def test_nyuv2_split_text_file_lists_train_numbers_and_test_is_the_rest(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("3\n1\n")
    split = load_nyuv2_split(path, 5)
    np.testing.assert_array_equal(split["train"], [0, 2])
    np.testing.assert_array_equal(split["test"], [1, 3, 4])


def test_nyuv2_split_files_are_checked(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [0, 1]}))
    with pytest.raises(ValueError, match="1-based in 1..5, found 0..1"):
        load_nyuv2_split(path, 5)
    path.write_text(json.dumps({"train": [1, 2], "test": [2, 3]}))
    with pytest.raises(ValueError, match="both train and test, e.g. number 2"):
        load_nyuv2_split(path, 5)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="a 'train' list"):
        load_nyuv2_split(path, 5)


def test_class_mapping_tables_of_894_or_895_entries(tmp_path):
    with_unlabeled = np.arange(895) % 41
    np.save(tmp_path / "map.npy", with_unlabeled)
    np.testing.assert_array_equal(load_class_mapping(tmp_path / "map.npy"), with_unlabeled)
    (tmp_path / "map.txt").write_text(" ".join(str(v) for v in with_unlabeled[1:]))
    table = load_class_mapping(tmp_path / "map.txt")
    assert table[0] == 0 and table.dtype == np.uint8
    np.testing.assert_array_equal(table[1:], with_unlabeled[1:])
    with h5py.File(tmp_path / "map73.mat", "w") as mat:  # MATLAB v7.3 stores the row vector as [894, 1]
        mat["mapClass"] = with_unlabeled[1:, None].astype(np.float64)
    np.testing.assert_array_equal(load_class_mapping(tmp_path / "map73.mat")[1:], with_unlabeled[1:])
    np.save(tmp_path / "short.npy", np.arange(40))
    with pytest.raises(ValueError, match="expected 894 or 895 entries, got 40"):
        load_class_mapping(tmp_path / "short.npy")


def test_nyuv2_conversion_rejects_files_of_another_shape(tmp_path):
    with h5py.File(tmp_path / "other.mat", "w") as mat:
        mat["images"] = np.zeros((2, 3, 6, 4), np.uint8)
        mat["depths"] = np.zeros((2, 6, 4), np.float32)
    with pytest.raises(ValueError, match="other.mat has no labels"):
        convert_nyuv2(tmp_path / "other.mat", tmp_path / "out", progress=False)
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match="is not HDF5"):
        convert_nyuv2(tmp_path / "v5.mat", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        convert_nyuv2(tmp_path / "missing.mat", tmp_path / "out", progress=False)


def test_nyuv2_is_a_source_that_names_the_conversion_until_its_folder_exists(tmp_path):
    from guidedmae.config import FinetuneConfig, load_config
    from guidedmae.data.sources import build_dataset

    root = tmp_path / "nyu"
    overrides = ["data.source=nyuv2", f"data.root={root}", "head.task=semseg", "head.num_classes=40",
                 "data.augment.semseg_stride=1", "task.reduce_zero_label=true", "data.eval_split=test"]  # fmt: skip
    config = load_config(FinetuneConfig, None, overrides)
    with pytest.raises(FileNotFoundError, match="guidedmae data nyuv2 --mat"):
        build_dataset(config.data, "train", MODALITIES, train=True)
    write_nyu_mat(tmp_path / "nyu.mat", count=4, height=8, width=8)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [1, 2, 3], "test": [4]}))
    convert_nyuv2(tmp_path / "nyu.mat", root, split_file=split, progress=False)
    assert len(build_dataset(config.data, "train", MODALITIES, train=True)) == 3
    with pytest.raises(ValueError, match="data.source=nyuv2 has no normals"):
        load_config(FinetuneConfig, None, [*overrides, "model.inputs=[rgb,normals]"])
