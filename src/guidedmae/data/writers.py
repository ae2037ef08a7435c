"""Writing data sets in the MultiMAE folder layout (root/<split>/<modality>/<class>/<name>.png): one sample,
or the synthetic scenes. Files are written atomically (a temp file, then a rename), so an interrupted
writer never leaves a half-written image under its final name.

A split of synthetic scenes carries a manifest (root/<split>/manifest.json) naming the scenes it holds,
by population and series, once all of them are written: what a study's leak check compares with the
scenes other runs train on.
"""

from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from guidedmae.data.folder import DEPTH_SCALE
from guidedmae.data.scenes import SHAPES, render_scene
from guidedmae.infra.files import atomic_write, read_json, write_json

__all__ = [
    "MANIFEST",
    "encode_depth",
    "read_manifest",
    "save_image_atomic",
    "write_sample",
    "write_synthetic",
]

MANIFEST = "manifest.json"


def save_image_atomic(array: np.ndarray, path: Path) -> None:
    """Write uint8 [H, W, 3] / uint8 [H, W] / uint16 [H, W] to `path` (.png or .jpg) via a temp file.

    os.replace is atomic, so `path` is either the old file or the complete new one; a failed write (a full
    disk) is one error naming `path`. No fsync: a data set can be regenerated, and one fsync per image
    would dominate the run time.
    """
    image = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        atomic_write(path, lambda file: image.save(file, format="JPEG", quality=95), durable=False)
    else:
        atomic_write(path, lambda file: image.save(file, format="PNG"), durable=False)


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


def _write_synthetic_scene(index: int, out: Path, split: str, size: int, seed: int) -> None:
    scene = render_scene(seed, index, size, population=split)
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
    """Render scenes 0..n-1 of `seed` into out/<split>/<modality>/<shape>/<index>.png, then record them in
    out/<split>/manifest.json; returns n.

    Every split is its own population (guidedmae.data.scenes.scene_layout): "train" the scenes runs train
    on, "val" the held-out scenes they are evaluated on, any other name scenes of its own, so two splits
    never share a scene, whatever the seeds. The class folder is the scene's label (SHAPES[label]).
    Re-running rewrites identical files atomically, so an interrupted run is finished by running it again.
    """
    if n < 1 or size < 1 or workers < 1:
        raise ValueError(f"n, size and workers must be positive, got n={n} size={size} workers={workers}")
    write_one = partial(_write_synthetic_scene, out=Path(out), split=split, size=size, seed=seed)
    with tqdm(total=n, desc=f"synthetic {split}", unit="scene", disable=not progress) as bar:
        if workers == 1:
            for index in range(n):
                write_one(index)
                bar.update()
        else:
            with Pool(workers) as pool:
                for _ in pool.imap_unordered(write_one, range(n), chunksize=max(1, n // (workers * 16))):
                    bar.update()
    _record_scenes(Path(out) / split, split, seed, n)
    return n


def read_manifest(folder: Path) -> list[dict]:
    """The synthetic scenes a split folder holds, as its manifest lists them ([] without a manifest):
    [{"population": split name, "series": seed, "count": scenes 0..count-1}]."""
    path = folder / MANIFEST
    if not path.is_file():
        return []
    manifest = read_json(path)
    entries = manifest.get("synthetic_scenes") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and {"population", "series", "count"} <= set(e) for e in entries
    ):
        raise ValueError(f"{path}: expected {{'synthetic_scenes': [{{population, series, count}}, ...]}}")
    return entries


def _record_scenes(folder: Path, population: str, series: int, count: int) -> None:
    """Add scenes 0..count-1 of `series` to the folder's manifest (merged with what it lists)."""
    entries = [e for e in read_manifest(folder) if (e["population"], e["series"]) != (population, series)]
    previous = [
        e["count"] for e in read_manifest(folder) if (e["population"], e["series"]) == (population, series)
    ]
    entries.append({"population": population, "series": series, "count": max([count, *previous])})
    write_json(folder / MANIFEST, {"written_by": "guidedmae data synth", "synthetic_scenes": entries})
