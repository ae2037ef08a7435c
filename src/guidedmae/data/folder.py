"""Data on disk: the MultiMAE folder layout, ADE20K's release layout, and the NYUv2 .mat converter.

The MultiMAE layout holds one file per modality per sample, matched by relative path:
    root/<split>/<modality>/<class>/<name>.<ext>
    rgb     .jpg / .jpeg / .png      8-bit colour (any mode PIL converts to RGB)
    depth   .png                     16-bit grey, depth * depth_scale (millimetres by default; 0 = none)
    semseg  .png                     8-bit (or 16-bit) class ids
ADE20K (ADEChallengeData2016/images/<split>/*.jpg, annotations/<split>/*.png) is the same idea
without the class level. Files are written atomically (temp file, then rename), so an interrupted
writer never leaves a half-written image under its final name.
"""

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from guidedmae.data.modalities import IGNORE_INDEX, MODALITIES
from guidedmae.data.scenes import SHAPES, render_scene

DEPTH_SCALE = 1000.0  # file units per metre: 16-bit millimetres reach 65.535 m
ERROR_MODES = ("raise", "skip")
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
CLASS_MAP_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I;16N")
# PIL reports a broken image with any of these.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
SKIPPED_SHOWN = 5  # paths named in the warning that summarizes skipped samples

ADE20K_SPLITS = {"training": "training", "validation": "validation", "train": "training", "val": "validation"}
ADE20K_NUM_CLASSES = 150  # annotation ids 1..150; 0 is "other" and ignored

NYUV2_CLASS_FOLDER = "nyu"  # the layout needs a class level; NYUv2 has no image classes
NYUV2_NUM_RAW_CLASSES = 894  # ids of the labeled .mat, 0 = unlabeled
NYUV2_NUM_TRAIN = 795  # the official split: 795 train / 654 test


# ----------------------------------------------------------------------------------------------
# Reading


def open_image(path: Path, modality: str, decode: bool) -> Image.Image:
    """The image in `path` (header only, or decoded), checked to be able to hold `modality`.

    Raises ValueError naming the file if it cannot be read, or if its mode is wrong: depth needs
    16-bit grey, semseg 8- or 16-bit integer ids.
    """
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except IMAGE_ERRORS as error:
        raise ValueError(f"cannot read {modality} image {path}: {error}") from error
    expected = {"depth": DEPTH_MODES, "semseg": CLASS_MAP_MODES}.get(modality)
    if expected is not None and image.mode not in expected:
        image.close()
        kind = "a 16-bit grey PNG" if modality == "depth" else "an 8- or 16-bit grey PNG of class ids"
        raise ValueError(f"{path}: {modality} must be {kind}, got PIL mode {image.mode}")
    return image


def probe_image(path: Path, modality: str) -> tuple[int, int]:
    """(width, height) of an image file, from its header; raises naming the file if unusable."""
    with open_image(path, modality, decode=False) as image:
        return image.size


def read_image(path: Path, modality: str, depth_scale: float = DEPTH_SCALE) -> np.ndarray:
    """Decode one file: rgb uint8 [H, W, 3]; depth float32 [H, W] metres; semseg uint8/uint16 [H, W]."""
    with open_image(path, modality, decode=True) as image:
        if modality == "rgb":
            return np.asarray(image.convert("RGB"))
        array = np.asarray(image)
    if modality == "depth":
        return array.astype(np.float32) / depth_scale
    return array


def check_same_size(sizes: dict[Path, tuple[int, int]]) -> None:
    """Raise naming the files if the images of one sample differ in (width, height)."""
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{path} is {w}x{h}" for path, (w, h) in sizes.items())
        raise ValueError(f"the images of one sample differ in size: {listed}")


def read_sample(paths: dict[str, Path], depth_scale: float = DEPTH_SCALE) -> dict[str, np.ndarray]:
    """All modalities of one sample, checked to share one size."""
    arrays = {modality: read_image(path, modality, depth_scale) for modality, path in paths.items()}
    check_same_size({paths[m]: array.shape[1::-1] for m, array in arrays.items()})
    return arrays


# ----------------------------------------------------------------------------------------------
# Indexing: which files make a sample


def list_files(directory: Path, extensions: Iterable[str], class_level: bool) -> dict[str, Path]:
    """{key: path} of the images in `directory`; key = "<class>/<stem>" (or "<stem>" without classes).

    Hidden files (temp files of an interrupted writer among them) are ignored.
    """
    extensions = tuple(ext.lower() for ext in extensions)
    folders = (
        sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if class_level else [directory]
    )
    files: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"expected class folders in {directory}, found the file {folder}")
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in extensions:
                continue
            key = f"{folder.name}/{path.stem}" if class_level else path.stem
            if key in files:
                raise ValueError(f"two files for one sample: {files[key]} and {path}")
            files[key] = path
    return files


def match_samples(files: dict[str, dict[str, Path]], directories: dict[str, Path]) -> tuple[list, list]:
    """Group files of every modality by key -> (samples [(key, {modality: path})], problems [errors])."""
    samples, problems = [], []
    for key in sorted(set().union(*files.values())):
        paths = {modality: found[key] for modality, found in files.items() if key in found}
        missing = [modality for modality in files if modality not in paths]
        if missing:
            present = next(iter(paths.values()))
            expected = ", ".join(f"{directories[m] / key}.*" for m in missing)
            problems.append(
                FileNotFoundError(f"sample {present} has no {', '.join(missing)} file ({expected})")
            )
        else:
            samples.append((key, paths))
    return samples, problems


def verify_samples(samples: list) -> tuple[list, list]:
    """Split samples into usable ones and problems, reading every header (readable, mode, size)."""
    usable, problems = [], []
    for key, paths in samples:
        try:
            check_same_size({path: probe_image(path, modality) for modality, path in paths.items()})
        except ValueError as error:
            problems.append(error)
        else:
            usable.append((key, paths))
    return usable, problems


def index_samples(directories: dict[str, Path], class_level: bool, on_error: str, where: Path) -> list:
    """The samples [(key, {modality: path})] found in one directory per modality.

    on_error="raise": a sample missing a modality raises at once; unreadable files and size
    mismatches raise when the sample is read. on_error="skip": every header is read now, unusable
    samples are dropped, and one warning says how many and names the first few.
    """
    if on_error not in ERROR_MODES:
        raise ValueError(f"on_error must be one of {ERROR_MODES}, got {on_error!r}")
    for modality, directory in directories.items():
        if not directory.is_dir():
            raise FileNotFoundError(f"no {modality} folder {directory}")
    files = {m: list_files(d, MODALITIES[m].extensions, class_level) for m, d in directories.items()}
    samples, problems = match_samples(files, directories)
    if on_error == "raise" and problems:
        raise problems[0]
    if on_error == "skip":
        samples, unreadable = verify_samples(samples)
        problems += unreadable
        if problems:
            shown = "; ".join(str(p) for p in problems[:SKIPPED_SHOWN])
            total = len(samples) + len(problems)
            warnings.warn(f"skipped {len(problems)} of {total} samples in {where}: {shown}", stacklevel=3)
    if not samples:
        raise ValueError(f"no usable samples in {where} (modalities {', '.join(directories)})")
    return samples


@dataclass(frozen=True)
class FolderSample:
    key: str  # "<class>/<name>": the relative path that matches files across modalities
    paths: dict[str, Path]  # modality -> file
    label: int  # index of <class> in the split's sorted class folders


def index_folder(
    root: str | Path, split: str, modalities: tuple[str, ...], on_error: str = "raise"
) -> tuple[list[FolderSample], list[str]]:
    """The samples and class names of root/<split> in the MultiMAE layout."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split folder {split_dir}")
    directories = {modality: split_dir / modality for modality in modalities}
    samples = index_samples(directories, class_level=True, on_error=on_error, where=split_dir)
    classes = sorted({key.split("/")[0] for key, _ in samples})
    label_of = {name: index for index, name in enumerate(classes)}
    return [FolderSample(key, paths, label_of[key.split("/")[0]]) for key, paths in samples], classes


def index_ade20k(root: str | Path, split: str, on_error: str = "raise") -> list[dict[str, Path]]:
    """[{rgb: images/<split>/X.jpg, semseg: annotations/<split>/X.png}] of an ADEChallengeData2016 folder.

    split: "training" / "validation" (or "train" / "val").
    """
    if split not in ADE20K_SPLITS:
        raise ValueError(f"ADE20K split must be one of {tuple(ADE20K_SPLITS)}, got {split!r}")
    root = Path(root)
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root} is not an ADEChallengeData2016 folder: no {root / 'images'}")
    folder = ADE20K_SPLITS[split]
    directories = {"rgb": root / "images" / folder, "semseg": root / "annotations" / folder}
    return [paths for _, paths in index_samples(directories, False, on_error, where=root / "images" / folder)]


def read_ade20k_annotation(path: Path, reduce_zero_label: bool) -> np.ndarray:
    """ADE20K class ids [H, W]: 0..150 as stored, or with reduce_zero_label 0 -> 255 (ignore), k -> k - 1."""
    labels = read_image(path, "semseg")
    if labels.max(initial=0) > ADE20K_NUM_CLASSES:
        raise ValueError(f"{path}: ADE20K ids are 0..{ADE20K_NUM_CLASSES}, found {labels.max()}")
    if not reduce_zero_label:
        return labels
    return np.where(labels == 0, IGNORE_INDEX, labels.astype(np.int64) - 1).astype(np.uint8)


def read_ade20k_sample(paths: dict[str, Path], reduce_zero_label: bool) -> dict[str, np.ndarray]:
    """rgb uint8 [H, W, 3] and semseg uint8 [H, W] of one ADE20K image, checked to share one size."""
    rgb = read_image(paths["rgb"], "rgb")
    semseg = read_ade20k_annotation(paths["semseg"], reduce_zero_label)
    check_same_size({paths["rgb"]: rgb.shape[1::-1], paths["semseg"]: semseg.shape[::-1]})
    return {"rgb": rgb, "semseg": semseg}


# ----------------------------------------------------------------------------------------------
# Writing


def save_image_atomic(array: np.ndarray, path: Path) -> None:
    """Write uint8 [H, W, 3] / uint8 [H, W] / uint16 [H, W] to `path` (.png or .jpg) via a temp file.

    os.replace is atomic, so `path` is either the old file or the complete new one. No fsync: a data
    set can be regenerated, and one fsync per image would dominate the run time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    image = Image.fromarray(array)
    try:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.save(temp, format="JPEG", quality=95)
        else:
            image.save(temp, format="PNG")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def encode_depth(depth: np.ndarray, depth_scale: float = DEPTH_SCALE) -> np.ndarray:
    """Metres float [H, W] -> uint16 file units; missing (NaN, <= 0) -> 0; beyond range -> 65535."""
    units = np.rint(np.nan_to_num(depth, nan=0.0) * depth_scale)
    return np.clip(units, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def write_sample(
    root: Path,
    split: str,
    class_name: str,
    name: str,
    sample: dict[str, np.ndarray],
    depth_scale: float = DEPTH_SCALE,
) -> None:
    """Write one sample into root/<split>/<modality>/<class_name>/<name>.png.

    sample: rgb uint8 [H, W, 3]; depth float [H, W] metres; semseg uint8 or uint16 [H, W] (the bit
    depth of the file).
    """
    for modality, array in sample.items():
        path = root / split / modality / class_name / f"{name}.png"
        if modality == "depth":
            array = encode_depth(array, depth_scale)
        elif modality == "semseg" and array.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"semseg to write must be uint8 or uint16 class ids, got {array.dtype}")
        save_image_atomic(array, path)


def write_synthetic_scene(index: int, out: Path, split: str, size: int, seed: int) -> None:
    scene = render_scene(seed, index, size)
    sample = {"rgb": scene.rgb, "depth": scene.depth, "semseg": scene.semseg}
    write_sample(out, split, SHAPES[scene.label], f"{index:06d}", sample)


def write_synthetic(
    out: str | Path,
    *,
    n: int,
    size: int,
    split: str = "train",
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> int:
    """Render scenes 0..n-1 of `seed` into out/<split>/<modality>/<shape>/<index>.png; returns n.

    The class folder is the scene's label (SHAPES[label]). Re-running rewrites identical files
    atomically, so an interrupted run is finished by running it again.
    """
    if n < 1 or size < 1 or workers < 1:
        raise ValueError(f"n, size and workers must be positive, got n={n} size={size} workers={workers}")
    write_one = partial(write_synthetic_scene, out=Path(out), split=split, size=size, seed=seed)
    with tqdm(total=n, desc=f"synthetic {split}", unit="scene", disable=not progress) as bar:
        if workers == 1:
            for index in range(n):
                write_one(index)
                bar.update()
        else:
            with Pool(workers) as pool:
                for _ in pool.imap_unordered(write_one, range(n), chunksize=max(1, n // (workers * 16))):
                    bar.update()
    return n


# ----------------------------------------------------------------------------------------------
# NYUv2: the official labeled .mat (MATLAB v7.3 = HDF5) into the folder layout


def read_mat_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named arrays of a MATLAB .mat file: v7.3 (HDF5) through h5py, older versions through scipy."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as mat:
            contents = {key: np.asarray(mat[key]) for key in keys if key in mat}
    else:
        try:
            from scipy.io import loadmat
        except ImportError as error:
            raise ImportError(f"reading the MATLAB v5 file {path} needs scipy (pip install scipy)") from error
        contents = loadmat(path, variable_names=keys)
    missing = [key for key in keys if key not in contents]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} (expected the keys {', '.join(keys)})")
    return {key: contents[key] for key in keys}


def checked_indices(values: Iterable, num_images: int, path: Path, what: str) -> np.ndarray:
    """1-based image numbers -> sorted 0-based indices, checked to be in range and unique."""
    one_based = np.asarray(list(values), dtype=np.int64).ravel()
    if one_based.size and (one_based.min() < 1 or one_based.max() > num_images):
        found = f"{one_based.min()}..{one_based.max()}"
        raise ValueError(f"{path}: {what} indices are 1-based in 1..{num_images}, found {found}")
    if len(np.unique(one_based)) != len(one_based):
        raise ValueError(f"{path}: {what} indices repeat")
    return np.sort(one_based - 1)


def load_nyuv2_split(path: str | Path | None, num_images: int) -> dict[str, np.ndarray]:
    """{"train": 0-based indices, "test": ...} of the images in the labeled .mat.

    path: None -> the first 795 images train, the rest test (the official splits.mat is not a
    contiguous range: pass it for the standard benchmark). Files hold 1-based image numbers:
      .mat   `trainNdxs` and `testNdxs` (the official splits.mat)
      .json  {"train": [...], "test": [...]}; without "test" the test set is every other image
      .txt   the train image numbers, separated by white space; the test set is every other image
    """
    if path is None:
        indices = np.arange(num_images)
        return {"train": indices[:NYUV2_NUM_TRAIN], "test": indices[NYUV2_NUM_TRAIN:]}
    path = Path(path)
    if path.suffix == ".mat":
        arrays = read_mat_arrays(path, ("trainNdxs", "testNdxs"))
        train = checked_indices(arrays["trainNdxs"], num_images, path, "train")
        test = checked_indices(arrays["testNdxs"], num_images, path, "test")
    elif path.suffix in (".json", ".txt"):
        if path.suffix == ".json":
            listed = json.loads(path.read_text())
            if not isinstance(listed, dict) or "train" not in listed:
                raise ValueError(
                    f"{path}: expected a JSON object with a 'train' list (and optionally 'test')"
                )
        else:
            listed = {"train": path.read_text().split()}
        train = checked_indices(listed["train"], num_images, path, "train")
        if "test" in listed:
            test = checked_indices(listed["test"], num_images, path, "test")
        else:
            test = np.setdiff1d(np.arange(num_images), train)
    else:
        raise ValueError(f"{path}: a split file is .mat, .json or .txt")
    overlap = np.intersect1d(train, test)
    if overlap.size:
        raise ValueError(f"{path}: images in both train and test, e.g. number {overlap[0] + 1}")
    return {"train": train, "test": test}


def load_class_mapping(path: str | Path) -> np.ndarray:
    """Lookup table uint8 [895]: raw NYUv2 id (0..894) -> class (Gupta et al.'s 40 classes: 1..40, 0 = none).

    Accepted: a .mat with `mapClass` (894 entries for ids 1..894, as classMapping40.mat), or a .npy /
    .txt (white-space separated) with 894 entries (ids 1..894; id 0 maps to 0) or 895 (ids 0..894).
    """
    path = Path(path)
    if path.suffix == ".mat":
        table = read_mat_arrays(path, ("mapClass",))["mapClass"]
    elif path.suffix == ".npy":
        table = np.load(path, allow_pickle=False)
    elif path.suffix == ".txt":
        table = np.array(path.read_text().split(), dtype=np.int64)
    else:
        raise ValueError(f"{path}: a class mapping is .mat, .npy or .txt")
    table = np.asarray(table, dtype=np.int64).ravel()
    if len(table) == NYUV2_NUM_RAW_CLASSES:
        table = np.concatenate([[0], table])
    if len(table) != NYUV2_NUM_RAW_CLASSES + 1:
        expected = f"{NYUV2_NUM_RAW_CLASSES} or {NYUV2_NUM_RAW_CLASSES + 1}"
        raise ValueError(f"{path}: expected {expected} entries, got {len(table)}")
    if table.min() < 0 or table.max() > 255:
        found = f"{table.min()}..{table.max()}"
        raise ValueError(f"{path}: mapped classes must be in 0..255 to fit an 8-bit PNG, found {found}")
    return table.astype(np.uint8)


def nyuv2_sample(mat: h5py.File, index: int, mapping: np.ndarray | None) -> dict[str, np.ndarray]:
    """Image `index` (0-based) of the labeled .mat: rgb uint8 [H, W, 3], depth metres [H, W], semseg [H, W].

    MATLAB is column-major: the file holds images [N, 3, W, H], depths and labels [N, W, H].
    """
    raw_labels = mat["labels"][index].T
    if raw_labels.max() > NYUV2_NUM_RAW_CLASSES:
        raise ValueError(f"{mat.filename}: labels of image {index + 1} exceed {NYUV2_NUM_RAW_CLASSES}")
    return {
        "rgb": np.ascontiguousarray(mat["images"][index].transpose(2, 1, 0), dtype=np.uint8),
        "depth": mat["depths"][index].T,
        "semseg": raw_labels.astype(np.uint16) if mapping is None else mapping[raw_labels],
    }


def convert_nyuv2(
    mat_path: str | Path,
    out: str | Path,
    split_file: str | Path | None = None,
    mapping_file: str | Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write the NYUv2 labeled .mat into out/{train,test}/{rgb,depth,semseg}/nyu/<number>.png.

    <number> is the 1-based image number (0001..1449). Depth: millimetres, 16-bit. Semseg: with a
    mapping file, the mapped classes as 8-bit; without, the raw ids 0..894 as 16-bit.
    Returns the number of images written per split.
    """
    mat_path, out = Path(mat_path), Path(out)
    if not mat_path.is_file():
        raise FileNotFoundError(f"no such file {mat_path}")
    if not h5py.is_hdf5(mat_path):
        raise ValueError(f"{mat_path} is not HDF5: expected the MATLAB v7.3 nyu_depth_v2_labeled.mat")
    mapping = None if mapping_file is None else load_class_mapping(mapping_file)
    with h5py.File(mat_path, "r") as mat:
        missing = [key for key in ("images", "depths", "labels") if key not in mat]
        if missing:
            raise ValueError(f"{mat_path} has no {', '.join(missing)} (expected images, depths, labels)")
        images, depths, labels = mat["images"], mat["depths"], mat["labels"]
        shapes_ok = (
            images.ndim == 4
            and images.shape[1] == 3
            and depths.shape == labels.shape == (images.shape[0], *images.shape[2:])
        )
        if not shapes_ok:
            raise ValueError(
                f"{mat_path}: expected images [N, 3, W, H] and depths, labels [N, W, H], got "
                f"{images.shape}, {depths.shape}, {labels.shape}"
            )
        splits = load_nyuv2_split(split_file, images.shape[0])
        jobs = [(split, index) for split, indices in splits.items() for index in indices.tolist()]
        for split, index in tqdm(jobs, desc="nyuv2", unit="image", disable=not progress):
            sample = nyuv2_sample(mat, index, mapping)
            write_sample(out, split, NYUV2_CLASS_FOLDER, f"{index + 1:04d}", sample)
    return {split: len(indices) for split, indices in splits.items()}
