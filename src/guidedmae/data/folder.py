"""Reading data on disk: the MultiMAE folder layout and ADE20K's release layout (guidedmae.data.writers writes).

The MultiMAE layout holds one file per modality per sample, matched by relative path:
    root/<split>/<modality>/<class>/<name>.<ext>
    rgb     .jpg / .jpeg / .png      8-bit colour (any mode PIL converts to RGB)
    depth   .png                     16-bit grey, depth * depth_scale (millimetres by default; 0 = none)
    semseg  .png                     8-bit (or 16-bit) class ids
ADE20K (ADEChallengeData2016/images/<split>/*.jpg, annotations/<split>/*.png) is the same idea
without the class level.
"""

import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from guidedmae.data.modalities import IGNORE_INDEX, Modality, get_modality, resolve

try:  # libjpeg-turbo straight into numpy: ~20% less time than PIL for an ImageNet-sized JPEG
    import simplejpeg
except ImportError:  # an optional extra (guidedmae[fast]); PIL decodes the same pixels
    simplejpeg = None

DEPTH_SCALE = 1000.0  # file units per metre: 16-bit millimetres reach 65.535 m
ERROR_MODES = ("raise", "skip")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
CLASS_MAP_MODES = ("L", "P", *SIXTEEN_BIT_MODES)
EIGHT_BIT_MODES = {1: ("L",), 3: ("RGB",)}
# Array dtypes a modality may hold: signed and unsigned integers and floats (complex would lose its imaginary
# part, bool and structured types are no numbers); floats wider than 64 bits torch cannot take.
NUMBER_KINDS = ("i", "u", "f")
# numpy's public readers of the .npy header versions it writes for numeric arrays.
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# PIL reports a broken image with any of these.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
SKIPPED_SHOWN = 5  # paths named in the warning that summarizes skipped samples

ADE20K_SPLITS = {"training": "training", "validation": "validation", "train": "training", "val": "validation"}
ADE20K_NUM_CLASSES = 150  # annotation ids 1..150; 0 is "other" and ignored


# ----------------------------------------------------------------------------------------------
# Reading


def read_npy(file: BinaryIO, path: Path) -> np.ndarray:
    """The array of an open .npy file (`path` names it in errors). Its header is checked before anything is
    allocated: the data it declares must be what the file holds (a header declaring terabytes is refused,
    not allocated), and Python objects are refused (they would need unpickling)."""
    try:
        version = np.lib.format.read_magic(file)
        if version not in NPY_HEADERS:
            raise ValueError(f"format version {version}; expected one of {sorted(NPY_HEADERS)}")
        shape, _, dtype = NPY_HEADERS[version](file)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from error
    if dtype.hasobject:
        raise ValueError(f"{path}: a .npy of Python objects ({dtype}); expected numbers")
    declared = math.prod(shape) * dtype.itemsize
    start = file.tell()
    held = file.seek(0, os.SEEK_END) - start
    if declared != held:
        raise ValueError(
            f"{path}: its header declares {dtype} {list(shape)} ({declared} bytes of data), the file holds "
            f"{held}; expected a complete .npy"
        )
    file.seek(0)
    return np.lib.format.read_array(file, allow_pickle=False)


def _decode(path: Path, modality: Modality, data: bytes | None) -> np.ndarray:
    """The array a file holds, as stored (PIL for images, numpy for .npy); raises ValueError naming it."""
    if modality.format == "npy":
        try:
            with open(path, "rb") if data is None else io.BytesIO(data) as file:
                return read_npy(file, path)
        except OSError as error:
            raise ValueError(f"cannot read {modality.name} array {path}: {error}") from error
    try:
        data = path.read_bytes() if data is None else data
        image = Image.open(io.BytesIO(data))  # the header only: format, mode, size (and PIL's pixel limit)
        if _simplejpeg_reads(image, modality):
            return simplejpeg.decode_jpeg(data, colorspace="RGB")  # the same pixels as PIL's
        image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{path}: refused as a decompression bomb ({error}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
            "image is genuine"
        ) from error
    except UnidentifiedImageError as error:  # its message shows the stream's repr, not the file
        raise ValueError(
            f"cannot read {modality.name} image {path}: not an image file (expected "
            f"{' / '.join(modality.extensions)})"
        ) from error
    except IMAGE_ERRORS as error:
        raise ValueError(f"cannot read {modality.name} image {path}: {error}") from error
    with image:
        if modality.format == "jpg" and modality.channels == 3:
            return np.asarray(image.convert("RGB"))  # grey or CMYK JPEGs exist in ImageNet
        _check_mode(image.mode, path, modality)
        return np.asarray(image)


def _simplejpeg_reads(image: Image.Image, modality: Modality) -> bool:
    """Whether simplejpeg decodes this opened file: an RGB or grey JPEG of a 3-channel jpg modality
    (PIL decodes CMYK ones, and everything when simplejpeg is not installed)."""
    rgb_jpeg = modality.format == "jpg" and modality.channels == 3
    return simplejpeg is not None and rgb_jpeg and image.format == "JPEG" and image.mode in ("RGB", "L")


def _check_mode(mode: str, path: Path, modality: Modality) -> None:
    """Refuse a PIL image whose mode cannot hold the modality as declared."""
    expected: tuple[str, ...]
    if modality.is_class_map:
        expected, what = CLASS_MAP_MODES, "an 8- or 16-bit grey image of class ids"
    elif modality.format == "png16":
        expected, what = SIXTEEN_BIT_MODES, "a 16-bit grey PNG"
    elif modality.format == "tiff":
        return  # any layout; the channel count is checked on the array
    else:
        expected, what = EIGHT_BIT_MODES[modality.channels], f"an 8-bit {modality.channels}-channel image"
    if mode not in expected:
        raise ValueError(f"{path}: {modality.name} must be {what}, got PIL mode {mode}")


def read_image(path: Path, modality: Modality | str, data: bytes | None = None) -> np.ndarray:
    """Decode one file of `modality` (a record, or a built-in's name): [H, W] or [H, W, C].

    8-bit images stay uint8 (the transforms divide by the scale after resizing, where it is cheap);
    other integer files are divided by the modality's scale (depth: metres); floating-point data and
    class ids come as stored. data: the file's bytes when they come from elsewhere (a shard); `path`
    then only names them. Raises ValueError naming the file if it cannot be read or does not hold the
    declared channels.
    """
    modality = get_modality(modality) if isinstance(modality, str) else modality
    array = _decode(path, modality, data)
    channels = 1 if array.ndim == 2 else array.shape[-1] if array.ndim == 3 else -1
    if channels != modality.channels or array.dtype.kind not in NUMBER_KINDS or array.dtype.itemsize > 8:
        raise ValueError(
            f"{path}: {modality.name} declares {modality.channels} channel(s) of real numbers (integers, or "
            f"floats of at most 64 bits), [H, W] or [H, W, {modality.channels}]; the file holds "
            f"{array.dtype} {list(array.shape)}"
        )
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # torch takes native byte order only
    non_finite = int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind == "f" else 0
    if non_finite:
        raise ValueError(
            f"{path}: {non_finite} NaN or infinite value(s) in {modality.name}; expected finite numbers (one "
            "would make the loss and every metric NaN)"
        )
    if modality.is_class_map:
        if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0:
            raise ValueError(f"{path}: {modality.name} class ids must be non-negative integers")
        return array
    if array.dtype == np.uint8 or not np.issubdtype(array.dtype, np.integer):
        return array
    return array.astype(np.float32) / np.float32(modality.scale)


def check_class_ids(
    ids: np.ndarray, path: Path, num_classes: int, ignore_index: int | None = None, modality: str = "semseg"
) -> None:
    """Raise naming the file and the largest offending id if a class map holds ids >= num_classes (other
    than ignore_index): an embedding or a loss would index out of range, or silently train on them."""
    bad = ids >= num_classes
    if ignore_index is not None:
        bad &= ids != ignore_index
    if bad.any():
        allowed = f"0..{num_classes - 1}" + (
            f" and {ignore_index} (ignored)" if ignore_index is not None else ""
        )
        setting = (
            "model.semseg_classes, head.num_classes"
            if modality == "semseg"
            else f"modalities.{modality}.classes"
        )
        raise ValueError(
            f"{path}: class id {int(ids[bad].max())} in a {modality} map, the model takes {allowed}; set the "
            f"number of classes ({setting}) to cover the data"
        )


def _check_same_size(sizes: dict[Path, tuple[int, int]]) -> None:
    """Raise naming the files if the images of one sample differ in (width, height)."""
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{path} is {w}x{h}" for path, (w, h) in sizes.items())
        raise ValueError(f"the images of one sample differ in size: {listed}")


def read_sample(
    paths: dict[str, Path],
    modalities: Mapping[str, Modality] | None = None,
    data: dict[str, bytes] | None = None,
) -> dict[str, np.ndarray]:
    """All modalities of one sample (records in `modalities`, else built in), checked to share one size
    (data: their bytes, see read_image)."""
    modalities, data = modalities or {}, data or {}
    arrays = {m: read_image(path, modalities.get(m, m), data.get(m)) for m, path in paths.items()}
    _check_same_size({paths[m]: array.shape[1::-1] for m, array in arrays.items()})
    return arrays


# ----------------------------------------------------------------------------------------------
# Indexing: which files make a sample


def _list_files(directory: Path, extensions: Iterable[str], class_level: bool) -> dict[str, Path]:
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


def _match_samples(files: dict[str, dict[str, Path]], directories: dict[str, Path]) -> tuple[list, list]:
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


def _verify_samples(samples: list, read: Callable[[dict[str, Path]], object]) -> tuple[list, list]:
    """Split samples into usable ones and problems, reading every file in full with `read` (decoded,
    checked for mode, size and class ids, as training would read it)."""
    usable, problems = [], []
    for key, paths in samples:
        try:
            read(paths)
        except ValueError as error:
            problems.append(error)
        else:
            usable.append((key, paths))
    return usable, problems


def index_samples(
    directories: dict[str, Path],
    modalities: Mapping[str, Modality],
    class_level: bool,
    on_error: str,
    where: Path,
    read: Callable[[dict[str, Path]], object] = read_sample,
) -> list:
    """The samples [(key, {modality: path})] found in one directory per modality (files with the
    extensions of its format, see guidedmae.data.modalities).

    on_error="raise": a sample missing a modality raises at once; unreadable files, size mismatches and
    bad class ids raise when the sample is read. on_error="skip": every sample is read now with `read`
    (decoded, not only its header probed), unusable samples are dropped, and one warning says how many
    and names the first few.
    """
    if on_error not in ERROR_MODES:
        raise ValueError(f"on_error must be one of {ERROR_MODES}, got {on_error!r}")
    for modality, directory in directories.items():
        if not directory.is_dir():
            raise FileNotFoundError(f"no {modality} folder {directory}")
    files = {m: _list_files(d, modalities[m].extensions, class_level) for m, d in directories.items()}
    samples, problems = _match_samples(files, directories)
    if on_error == "raise" and problems:
        raise problems[0]
    if on_error == "skip":
        samples, unreadable = _verify_samples(samples, read)
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
    root: str | Path,
    split: str,
    modalities: Iterable[str | Modality],
    on_error: str = "raise",
    read: Callable[[dict[str, Path]], object] | None = None,
) -> tuple[list[FolderSample], list[str]]:
    """The samples and class names of root/<split> in the MultiMAE layout (modalities: records, or
    built-in names; `read`: see index_samples, default read_sample of those modalities)."""
    modalities = resolve(modalities)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split folder {split_dir}")
    directories = {name: split_dir / name for name in modalities}
    read = read or partial(read_sample, modalities=modalities)
    samples = index_samples(directories, modalities, True, on_error, where=split_dir, read=read)
    classes = sorted({key.split("/")[0] for key, _ in samples})
    label_of = {name: index for index, name in enumerate(classes)}
    return [FolderSample(key, paths, label_of[key.split("/")[0]]) for key, paths in samples], classes


def index_ade20k(
    root: str | Path,
    split: str,
    on_error: str = "raise",
    read: Callable[[dict[str, Path]], object] = read_sample,
) -> list[dict[str, Path]]:
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
    samples = index_samples(
        directories, resolve(list(directories)), False, on_error, root / "images" / folder, read
    )
    return [paths for _, paths in samples]


def _read_ade20k_annotation(path: Path, reduce_zero_label: bool) -> np.ndarray:
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
    semseg = _read_ade20k_annotation(paths["semseg"], reduce_zero_label)
    _check_same_size({paths["rgb"]: rgb.shape[1::-1], paths["semseg"]: semseg.shape[::-1]})
    return {"rgb": rgb, "semseg": semseg}
