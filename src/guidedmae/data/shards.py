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
is written last: a folder without it is unfinished.
"""

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from guidedmae.data.folder import index_folder
from guidedmae.data.modalities import Modality, resolve

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


def _write_atomic(path: Path, write) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_shard(path: Path, entries: list, modalities: tuple[str, ...], extensions: list[str]) -> None:
    """One tar of [(position, FolderSample)]: each sample's files under the key s<position>."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for position, sample in entries:
            stem = f"s{position:08d}"
            for modality, extension in zip(modalities, extensions, strict=True):
                _add_member(tar, f"{stem}.{modality}{extension}", sample.paths[modality].read_bytes())
            _add_member(tar, f"{stem}.cls", str(sample.label).encode())
            _add_member(tar, f"{stem}.key.txt", sample.key.encode())


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # np.save(path) would append ".npy" to a temp name
        np.save(file, array)


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
    rewrites the same bytes; shard files of an earlier, larger run are removed.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    records = resolve(modalities)
    modalities = tuple(records)
    samples, class_names = index_folder(root, split, records.values(), on_error)
    extensions = []
    for modality in modalities:
        found = {sample.paths[modality].suffix.lower() for sample in samples}
        if len(found) > 1:
            raise ValueError(
                f"{Path(root) / split / modality} mixes file types {sorted(found)}: a shard holds one type "
                "per modality; convert the files to one type first"
            )
        extensions.append(found.pop())
    order = np.random.default_rng(seed).permutation(len(samples))
    folder = Path(out) / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX).unlink(missing_ok=True)  # the folder is unfinished until the new index is written

    members = np.zeros((len(samples), len(modalities), 2), np.int64)
    labels = np.zeros(len(samples), np.int64)
    shard_files, shard_sizes = [], []
    bar = tqdm(total=len(samples), desc=f"shards {split}", unit="sample", disable=not progress)
    for shard, start in enumerate(range(0, len(samples), samples_per_shard)):
        positions = range(start, min(start + samples_per_shard, len(samples)))
        entries = [(position, samples[order[position]]) for position in positions]
        path = folder / _shard_name(shard)
        _write_atomic(path, lambda temp, entries=entries: _write_shard(temp, entries, modalities, extensions))
        # The offsets come from reading the headers back: what any tar reader will see.
        with tarfile.open(path) as tar:
            offsets = {info.name: (info.offset_data, info.size) for info in tar.getmembers()}
        for position, sample in entries:
            labels[position] = sample.label
            for column, (modality, extension) in enumerate(zip(modalities, extensions, strict=True)):
                members[position, column] = offsets[f"s{position:08d}.{modality}{extension}"]
        shard_files.append(path.name)
        shard_sizes.append(len(entries))
        bar.update(len(entries))
    bar.close()
    for stale in set(p.name for p in folder.glob("shard-*.tar")) - set(shard_files):
        (folder / stale).unlink()

    _write_atomic(folder / MEMBERS, lambda path: _save_array(path, members))
    _write_atomic(folder / LABELS, lambda path: _save_array(path, labels))
    index = {
        "format": FORMAT,
        "modalities": list(modalities),
        "extensions": extensions,
        "class_names": list(class_names),
        "shards": [{"file": f, "samples": n} for f, n in zip(shard_files, shard_sizes, strict=True)],
        "source": str(Path(root) / split),
        "seed": seed,
    }
    _write_atomic(folder / INDEX, lambda path: path.write_text(json.dumps(index, indent=1) + "\n"))
    return read_shard_index(out, split)


def read_shard_index(root: str | Path, split: str) -> ShardIndex:
    """The index of root/<split>, checked to be complete and consistent; errors name the file."""
    folder = Path(root) / split
    index_path = folder / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"no shard index {index_path}: write shards with `guidedmae data shard` (a folder without "
            f"{INDEX} was not finished)"
        )
    try:
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format {index.get('format')!r}, expected {FORMAT!r}")
        shards = index["shards"]
        files = tuple(shard["file"] for shard in shards)
        sizes = tuple(int(shard["samples"]) for shard in shards)
        modalities, extensions = tuple(index["modalities"]), tuple(index["extensions"])
        class_names = tuple(index["class_names"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index_path} is not a shard index: {error}") from error
    members, labels = np.load(folder / MEMBERS), np.load(folder / LABELS)
    count = sum(sizes)
    if members.shape != (count, len(modalities), 2) or labels.shape != (count,):
        raise ValueError(
            f"{folder}: {MEMBERS} {members.shape} and {LABELS} {labels.shape} do not match the {count} "
            f"samples x {len(modalities)} modalities of {INDEX}; write the shards again"
        )
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: shard files listed in {INDEX} are missing: {', '.join(missing[:5])}"
        )
    return ShardIndex(folder, modalities, extensions, class_names, files, sizes, members, labels)
