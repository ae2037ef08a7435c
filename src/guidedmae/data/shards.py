"""WebDataset tar shards of the folder layout: a few large files instead of three small ones per sample, for
cluster file systems that are slow to open files.

    OUT/<split>/shard-000000.tar    s00000000.rgb.jpg, s00000000.depth.png, s00000000.semseg.png,
                                    s00000000.cls (the class index, text), s00000000.key.txt (<class>/<name>),
                                    s00000001.rgb.jpg, ...   (WebDataset's convention: one key per sample)
    OUT/<split>/members.npy         int64 [N, M, 2]: byte offset and size of sample n's file of modality m
    OUT/<split>/labels.npy          int64 [N]: class index of every sample
    OUT/<split>/index.json          modalities, class names, and each shard's file and sample count

The files are copied byte for byte (no re-encoding). Samples are shuffled once when written, so every
shard is a random draw of the data set and reading shard by shard is as good as a global shuffle. The
member table lets a reader fetch any sample with one read, which makes a resumed epoch exact. index.json
is written last: a folder without it is unfinished. One writer at a time holds the folder's lock
(OUT/<split>/.lock, see guidedmae.infra.files.lock_folder); a reader checks the tables against the tars.
"""

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import product
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from guidedmae.data.folder import index_folder, read_npy
from guidedmae.data.modalities import Modality, resolve
from guidedmae.infra.files import atomic_write, lock_folder, make_folder, remove_temps

__all__ = ["INDEX", "ShardIndex", "read_shard_index", "write_shards"]

INDEX = "index.json"
MEMBERS = "members.npy"
LABELS = "labels.npy"
FORMAT = "guidedmae-shards-1"


@dataclass(frozen=True)
class ShardIndex:
    folder: Path  # OUT/<split>
    modalities: tuple[str, ...]
    extensions: tuple[str, ...]  # the file extension of each modality's members (".jpg", ".png")
    class_names: tuple[str, ...]
    shard_files: tuple[str, ...]
    shard_sizes: tuple[int, ...]  # samples per shard, in shard order
    members: np.ndarray  # int64 [N, M, 2]
    labels: np.ndarray  # int64 [N]

    def member_name(self, index: int, modality: str) -> str:
        return f"s{index:08d}.{modality}{self.extensions[self.modalities.index(modality)]}"


def _shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.tar"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata (no mtime, owner): the same data set gives the same bytes.
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_shard(file: BinaryIO, entries: list, modalities: tuple[str, ...], extensions: list[str]) -> None:
    """One tar of [(position, FolderSample)]: each sample's files under the key s<position>."""
    with tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for position, sample in entries:
            stem = f"s{position:08d}"
            for modality, extension in zip(modalities, extensions, strict=True):
                _add_member(tar, f"{stem}.{modality}{extension}", sample.paths[modality].read_bytes())
            _add_member(tar, f"{stem}.cls", str(sample.label).encode())
            _add_member(tar, f"{stem}.key.txt", sample.key.encode())


def write_shards(
    root: str | Path,
    split: str,
    out: str | Path,
    modalities: Sequence[str | Modality] = ("rgb", "depth", "semseg"),
    samples_per_shard: int = 1000,
    seed: int = 0,
    on_error: str = "raise",
    progress: bool = True,
) -> ShardIndex:
    """Copy root/<split> (the folder layout) into tar shards in out/<split>, samples shuffled by `seed`.

    modalities: records, or built-in names (their formats say which files belong to a sample). Re-running
    rewrites the same bytes; shard files of an earlier, larger run are removed. One writer at a time: the
    folder is locked while it is written (FolderBusy, naming the other writer, at once).
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    records = resolve(modalities)
    names = tuple(records)
    samples, class_names = index_folder(root, split, records.values(), on_error)
    extensions = []
    for modality in names:
        found = {sample.paths[modality].suffix.lower() for sample in samples}
        if len(found) > 1:
            raise ValueError(
                f"{Path(root) / split / modality} mixes file types {sorted(found)}: a shard holds one type "
                "per modality; convert the files to one type first"
            )
        extensions.append(found.pop())
    order = np.random.default_rng(seed).permutation(len(samples))
    folder = make_folder(Path(out) / split)
    with lock_folder(folder, "shard writer", "--out"):
        remove_temps(folder)  # what a killed writer left
        (folder / INDEX).unlink(missing_ok=True)  # the folder is unfinished until the new index is written
        members = np.zeros((len(samples), len(names), 2), np.int64)
        labels = np.zeros(len(samples), np.int64)
        shard_files, shard_sizes = [], []
        bar = tqdm(total=len(samples), desc=f"shards {split}", unit="sample", disable=not progress)
        for shard, start in enumerate(range(0, len(samples), samples_per_shard)):
            positions = range(start, min(start + samples_per_shard, len(samples)))
            entries = [(position, samples[order[position]]) for position in positions]
            path = folder / _shard_name(shard)
            atomic_write(
                path, partial(_write_shard, entries=entries, modalities=names, extensions=extensions)
            )
            # The offsets come from reading the headers back: what any tar reader will see.
            with tarfile.open(path) as tar:
                offsets = {info.name: (info.offset_data, info.size) for info in tar.getmembers()}
            for position, sample in entries:
                labels[position] = sample.label
                for column, (modality, extension) in enumerate(zip(names, extensions, strict=True)):
                    members[position, column] = offsets[f"s{position:08d}.{modality}{extension}"]
            shard_files.append(path.name)
            shard_sizes.append(len(entries))
            bar.update(len(entries))
        bar.close()
        for stale in set(p.name for p in folder.glob("shard-*.tar")) - set(shard_files):
            (folder / stale).unlink()

        atomic_write(folder / MEMBERS, lambda file: np.save(file, members))
        atomic_write(folder / LABELS, lambda file: np.save(file, labels))
        index = {
            "format": FORMAT,
            "modalities": list(names),
            "extensions": extensions,
            "class_names": list(class_names),
            "shards": [{"file": f, "samples": n} for f, n in zip(shard_files, shard_sizes, strict=True)],
            "source": str(Path(root) / split),
            "seed": seed,
        }
        atomic_write(folder / INDEX, lambda file: file.write((json.dumps(index, indent=1) + "\n").encode()))
    return read_shard_index(out, split)


# -- reading: everything checked against the tars before a sample is read ----------------------------


def read_shard_index(root: str | Path, split: str) -> ShardIndex:
    """The index of root/<split>, checked to be complete and consistent with its tars; errors name the file.

    Sizes the tables declare are bounded by their files' before anything is allocated, and every member's
    offset and size by its tar's size: a damaged or foreign table is refused here, not read past later.
    """
    folder = Path(root) / split
    index_path = folder / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"no shard index {index_path}: write shards with `guidedmae data shard` (a folder without "
            f"{INDEX} was not finished)"
        )
    modalities, extensions, class_names, files, sizes = _read_index(index_path)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: shard files listed in {INDEX} are missing: {', '.join(missing[:5])}"
        )
    count = sum(sizes)
    members = _read_table(folder / MEMBERS, (count, len(modalities), 2), "byte offset and size per member")
    labels = _read_table(folder / LABELS, (count,), "class index per sample")
    outside = (labels < 0) | (labels >= len(class_names))
    if outside.any():
        sample = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{folder / LABELS}: sample {sample} has label {labels[sample]}; expected "
            f"0..{len(class_names) - 1} (the {len(class_names)} classes of {INDEX}); write the shards again"
        )
    index = ShardIndex(folder, modalities, extensions, class_names, files, sizes, members, labels)
    _check_members(index)
    _check_member_names(index)
    return index


def _read_index(path: Path) -> tuple:
    """(modalities, extensions, class names, shard files, samples per shard) of an index.json, each checked
    to be what the writer writes: shard files are plain names inside the folder, counts positive."""
    try:
        index = json.loads(path.read_text())
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ValueError(f"expected a JSON object with format {FORMAT!r}")
        names = {key: index[key] for key in ("modalities", "extensions", "class_names")}
        files = tuple(shard["file"] for shard in index["shards"])
        sizes = tuple(shard["samples"] for shard in index["shards"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a shard index: {error}") from error
    for key, values in names.items():
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise ValueError(f"{path}: {key}={values!r}; expected a list of names")
    if len(names["extensions"]) != len(names["modalities"]):
        raise ValueError(f"{path}: extensions={names['extensions']}; expected one per modality")
    for name, size in zip(files, sizes, strict=True):
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"{path}: shard file {name!r}; expected a plain file name inside {path.parent}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{path}: shard {name} has samples={size!r}; expected a positive integer")
    return (*(tuple(names[key]) for key in ("modalities", "extensions", "class_names")), files, sizes)


def _read_table(path: Path, shape: tuple[int, ...], meaning: str) -> np.ndarray:
    """An integer table of `shape` (int64), read only if its file holds what its header declares."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write the shards again")
    with open(path, "rb") as file:
        table = read_npy(file, path)
    if table.dtype.kind not in "iu" or table.shape != shape:
        raise ValueError(
            f"{path} holds {table.dtype} {list(table.shape)}; expected integers {list(shape)} ({meaning}, as "
            f"{INDEX} lists); write the shards again"
        )
    return table.astype(np.int64)


def _check_members(index: ShardIndex) -> None:
    """Every member's bytes lie inside its shard, after a tar header (a size of 2^40 is refused here, not
    allocated by a read later)."""
    shard_bytes = np.array([(index.folder / name).stat().st_size for name in index.shard_files], np.int64)
    shard_of = np.repeat(np.arange(len(index.shard_files)), index.shard_sizes)
    offsets, sizes = index.members[..., 0], index.members[..., 1]
    limit = shard_bytes[shard_of][:, None]
    outside = (offsets < tarfile.BLOCKSIZE) | (sizes < 0) | (offsets > limit) | (sizes > limit - offsets)
    if outside.any():
        sample, column = (int(i) for i in np.argwhere(outside)[0])
        shard = shard_of[sample]
        raise ValueError(
            f"{index.folder / MEMBERS}: sample {sample}'s {index.modalities[column]} file at byte "
            f"{offsets[sample, column]} of size {sizes[sample, column]} lies outside "
            f"{index.shard_files[shard]} ({shard_bytes[shard]} bytes); write the shards again"
        )


def _check_member_names(index: ShardIndex) -> None:
    """The first and last sample of every shard are where the tar's own headers say: a member table of
    another writing (two writers at once, files copied from two runs) names other members there."""
    ends = np.cumsum(index.shard_sizes)
    for shard, name in enumerate(index.shard_files):
        first, last = int(ends[shard]) - index.shard_sizes[shard], int(ends[shard]) - 1
        with open(index.folder / name, "rb") as file:
            for sample, (column, modality) in product({first, last}, enumerate(index.modalities)):
                found = _header_name(file, index.members[sample, column, 0])
                expected = index.member_name(sample, modality)
                if found != expected:
                    raise ValueError(
                        f"{index.folder / MEMBERS}: sample {sample}'s {modality} file should be the member "
                        f"{expected} of {name}, its header names {found!r}; the table and the tars come from "
                        "different writings: write the shards again"
                    )


def _header_name(file: BinaryIO, offset: int) -> str:
    """The name field (the first 100 bytes) of the USTAR header just before the member data at `offset`."""
    file.seek(int(offset) - tarfile.BLOCKSIZE)
    return file.read(100).split(b"\0")[0].decode(errors="replace")
