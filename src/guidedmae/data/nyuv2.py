"""NYUv2: the official labeled .mat (MATLAB v7.3 = HDF5) into the MultiMAE folder layout.

    convert_nyuv2("nyu_depth_v2_labeled.mat", "data/nyuv2", split_file="splits.mat", mapping_file="classMapping40.mat")

Writes OUT/{train,test}/{rgb,depth,semseg}/nyu/<number>.png, <number> the 1-based image number.
"""

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from guidedmae.data.writers import write_sample
from guidedmae.infra.files import read_json

__all__ = ["convert_nyuv2", "load_class_mapping", "load_nyuv2_split"]

NYUV2_CLASS_FOLDER = "nyu"  # the layout needs a class level; NYUv2 has no image classes
NYUV2_NUM_RAW_CLASSES = 894  # ids of the labeled .mat, 0 = unlabeled
NYUV2_NUM_TRAIN = 795  # the official split: 795 train / 654 test
# Bounds far beyond NYUv2's 1449 images of 640 x 480 pixels: a file declaring more is damaged or hostile,
# refused before anything is read (one 60000 x 60000 rgb image alone would take 10 GB of memory).
NYUV2_MAX_IMAGES = 100_000
NYUV2_MAX_SIDE = 8192
# The official file holds uint8 images, float32 depths (metres) and uint16 label ids.
NYUV2_DTYPES = {
    "images": (np.uint8, "uint8"),
    "depths": (np.floating, "float"),
    "labels": (np.integer, "integer"),
}


def _read_mat_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
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


def _checked_indices(values: Iterable, num_images: int, path: Path, what: str) -> np.ndarray:
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
        arrays = _read_mat_arrays(path, ("trainNdxs", "testNdxs"))
        train = _checked_indices(arrays["trainNdxs"], num_images, path, "train")
        test = _checked_indices(arrays["testNdxs"], num_images, path, "test")
    elif path.suffix in (".json", ".txt"):
        if path.suffix == ".json":
            listed = read_json(path)
            if not isinstance(listed, dict) or "train" not in listed:
                raise ValueError(
                    f"{path}: expected a JSON object with a 'train' list (and optionally 'test')"
                )
        else:
            listed = {"train": path.read_text().split()}
        train = _checked_indices(listed["train"], num_images, path, "train")
        if "test" in listed:
            test = _checked_indices(listed["test"], num_images, path, "test")
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
        table = _read_mat_arrays(path, ("mapClass",))["mapClass"]
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


def _nyuv2_sample(mat: h5py.File, index: int, mapping: np.ndarray | None) -> dict[str, np.ndarray]:
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


def _check_datasets(mat: h5py.File, path: Path) -> int:
    """The number of images of the labeled .mat, once its datasets' declared shapes and dtypes are checked
    (nothing read yet): images uint8 [N, 3, W, H], depths float and labels integer [N, W, H], N, W and H
    within NYUV2_MAX_IMAGES and NYUV2_MAX_SIDE."""
    names = tuple(NYUV2_DTYPES)
    missing = [name for name in names if name not in mat]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} (expected {', '.join(names)})")
    for name, (dtype, expected) in NYUV2_DTYPES.items():
        dataset = mat[name]
        if not isinstance(dataset, h5py.Dataset):
            raise ValueError(f"{path}: '{name}' is a {type(dataset).__name__}; expected an array (a dataset)")
        if not np.issubdtype(dataset.dtype, dtype):
            raise ValueError(f"{path}: dataset '{name}' holds {dataset.dtype} values; expected {expected}")
    images, depths, labels = mat["images"], mat["depths"], mat["labels"]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{path}: dataset 'images' has shape {list(images.shape)}; expected [N, 3, W, H]")
    count, _, width, height = images.shape
    if not 1 <= count <= NYUV2_MAX_IMAGES or not (
        1 <= width <= NYUV2_MAX_SIDE and 1 <= height <= NYUV2_MAX_SIDE
    ):
        raise ValueError(
            f"{path}: dataset 'images' declares {count} images of {width} x {height} pixels; expected "
            f"1..{NYUV2_MAX_IMAGES} images of at most {NYUV2_MAX_SIDE} x {NYUV2_MAX_SIDE} (NYUv2's are 640 x 480)"
        )
    for name, dataset in (("depths", depths), ("labels", labels)):
        if dataset.shape != (count, width, height):
            raise ValueError(
                f"{path}: dataset '{name}' has shape {list(dataset.shape)}; expected [N, W, H] = "
                f"{[count, width, height]}, as 'images' [N, 3, W, H] = {list(images.shape)}"
            )
    return count


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
        splits = load_nyuv2_split(split_file, _check_datasets(mat, mat_path))
        jobs = [(split, index) for split, indices in splits.items() for index in indices.tolist()]
        for split, index in tqdm(jobs, desc="nyuv2", unit="image", disable=not progress):
            sample = _nyuv2_sample(mat, index, mapping)
            write_sample(out, split, NYUV2_CLASS_FOLDER, f"{index + 1:04d}", sample)
    return {split: len(indices) for split, indices in splits.items()}
