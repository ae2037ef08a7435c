"""torch Datasets for every source: synthetic scenes, folders, shards and ADE20K.

Every sample is augmented with its own generator, derived from (seed, epoch, index): a sample
comes out the same whatever the number of workers or the batch it is resumed from.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from guidedmae.data.folder import check_class_ids, index_ade20k, index_folder, read_ade20k_sample, read_sample
from guidedmae.data.modalities import Modality, resolve
from guidedmae.data.scenes import (
    HELD_OUT,
    RENDERED_MODALITIES,
    TRAINING,
    count_label,
    render_scene,
    scene_labels,
)
from guidedmae.data.scenes import LABELS as SCENE_LABELS
from guidedmae.data.seeding import derived_generator
from guidedmae.data.shards import read_shard_index
from guidedmae.data.transforms import AugmentConfig, augment_sample


def check_class_maps(
    arrays: dict[str, np.ndarray],
    paths: dict[str, Path],
    modalities: dict[str, Modality],
    semseg_classes: int,
    ignore_index: int | None,
) -> None:
    """Every class id must index the model's embedding and logits: semseg's up to semseg_classes (0 =
    unchecked), a declared class map's up to its classes."""
    for name, modality in modalities.items():
        classes = semseg_classes if name == "semseg" else modality.classes
        if modality.is_class_map and classes:
            check_class_ids(arrays[name], paths[name], classes, ignore_index, name)


class SizedDataset(Dataset[dict[str, Tensor]], ABC):
    """A map-style data set of samples ({name: tensor}) that knows its length, as every data set of ours
    does: what loaders, evaluations and probes take (torch's Dataset declares no __len__)."""

    @abstractmethod
    def __len__(self) -> int: ...


class EpochSubset(Subset[dict[str, Tensor]], SizedDataset):
    """The samples of a data set at `indices`, passing the epoch on to it (its augmentations depend on it)."""

    dataset: SizedDataset

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class AugmentedDataset(SizedDataset):
    """A source of raw samples (`load`) followed by the aligned augmentation.

    __getitem__ returns {modality: tensor} (+ "label") as described in guidedmae.data.transforms, and
    "index": the sample's index (int64 []).
    Data sets with image labels name their classes in `class_names` and list them with `labels()`;
    `modalities` holds the record of every modality a sample has.
    """

    modalities: dict[str, Modality]

    def __init__(self, augment: AugmentConfig, seed: int) -> None:
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of `epoch` (the loader passes it to its workers on every new iteration)."""
        self.epoch = epoch

    @abstractmethod
    def load(self, index: int) -> dict:
        """The raw sample `index`: numpy arrays per modality (+ "label"), see guidedmae.data.transforms."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """What the image labels index; none without image labels."""
        return ()

    def labels(self) -> np.ndarray:
        """int64 [N] image label (index into class_names) of every sample, without loading any."""
        raise ValueError(f"{type(self).__name__} has no image labels")

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a data set of {len(self)} samples")
        generator = derived_generator(self.seed, self.epoch, index)
        # The index travels with the sample: strategies that remember samples (loss memory) key on it.
        sample = augment_sample(self.load(index), self.augment, generator, self.modalities)
        return {**sample, "index": torch.tensor(index)}


class SyntheticScenes(AugmentedDataset):
    """n procedural scenes rendered on the fly at size x size, then augmented to augment.size.

    Rendering at augment.size is the cheap default; rendering larger (e.g. 1.15x) lets the random
    crops downsample rather than upsample. `seed` is the scenes' series; held_out draws them from the
    held-out population, which no training series shares a scene with; augment_seed fixes the
    augmentations (default: seed), so that runs of several seeds can share one series of scenes.
    label: which image label the samples carry (guidedmae.data.scenes.labels): "shape" (the shape
    class covering the most of the view) or "count" (the number of objects in view); the same at
    every size.
    """

    def __init__(
        self,
        n: int,
        size: int,
        seed: int,
        modalities: Sequence[str | Modality],
        augment: AugmentConfig,
        label: str = "shape",
        held_out: bool = False,
        augment_seed: int | None = None,
    ) -> None:
        super().__init__(augment, seed if augment_seed is None else augment_seed)
        if n < 1 or size < 1:
            raise ValueError(f"n and size must be positive, got n={n} size={size}")
        if label not in SCENE_LABELS:
            raise ValueError(f"unknown scene label {label!r}; expected one of {tuple(SCENE_LABELS)}")
        self.n, self.size, self.series, self.label, self.held_out = n, size, seed, label, held_out
        self.modalities = resolve(modalities)
        unrendered = sorted(set(self.modalities) - set(RENDERED_MODALITIES))
        if unrendered:
            raise ValueError(
                f"the synthetic scenes render {', '.join(RENDERED_MODALITIES)}, not {unrendered}: use "
                "data.source=folder for other modalities"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        return SCENE_LABELS[self.label]

    def __len__(self) -> int:
        return self.n

    @property
    def population(self) -> str:
        return HELD_OUT if self.held_out else TRAINING

    def labels(self) -> np.ndarray:
        return scene_labels(self.series, range(self.n), self.label, self.population)

    def load(self, index: int) -> dict:
        scene = render_scene(self.series, index, self.size, self.population)
        arrays = {"rgb": scene.rgb, "depth": scene.depth, "semseg": scene.semseg}
        label = scene.label if self.label == "shape" else count_label(scene.objects_in_view)
        return {**{name: arrays[name] for name in self.modalities}, "label": label}


class FolderDataset(AugmentedDataset):
    """root/<split>/<modality>/<class>/<name>.<ext> (MultiMAE's layout; NYUv2 after conversion).

    Only `modalities` are read (records, or built-in names), as their formats say. "label" is the index
    of the sample's class folder in `classes`. on_error: see guidedmae.data.folder.index_samples.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        modalities: Sequence[str | Modality],
        augment: AugmentConfig,
        on_error: str = "raise",
        seed: int = 0,
        semseg_classes: int = 0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(augment, seed)
        self.modalities = resolve(modalities)
        self.semseg_classes, self.ignore_index = semseg_classes, ignore_index
        self.samples, self.classes = index_folder(root, split, self.modalities, on_error, self.read)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> np.ndarray:
        return np.array([sample.label for sample in self.samples], np.int64)

    def read(self, paths: dict[str, Path]) -> dict[str, np.ndarray]:
        """The decoded files of one sample, class ids checked (semseg's against semseg_classes, 0 =
        unchecked)."""
        arrays = read_sample(paths, self.modalities)
        check_class_maps(arrays, paths, self.modalities, self.semseg_classes, self.ignore_index)
        return arrays

    def load(self, index: int) -> dict:
        sample = self.samples[index]
        return {**self.read(sample.paths), "label": sample.label}


class ShardDataset(AugmentedDataset):
    """The tar shards `guidedmae data shard` wrote from the folder layout: root/<split>/shard-*.tar.

    The same samples, labels and checks as FolderDataset on the folder it came from. Any sample is one
    read at a known offset; `shard_sizes` tells the loader to deal whole shards to ranks.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        modalities: Sequence[str | Modality],
        augment: AugmentConfig,
        seed: int = 0,
        semseg_classes: int = 0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(augment, seed)
        self.index = read_shard_index(root, split)
        self.modalities = resolve(modalities)
        absent = [m for m in self.modalities if m not in self.index.modalities]
        if absent:
            raise ValueError(
                f"{self.index.folder} holds {', '.join(self.index.modalities)}, not {', '.join(absent)}; "
                "write the shards with those modalities"
            )
        self.semseg_classes, self.ignore_index = semseg_classes, ignore_index
        self.shard_sizes = self.index.shard_sizes
        self.shard_of = np.repeat(np.arange(len(self.shard_sizes)), self.shard_sizes)
        self._files: dict[int, int] = {}  # shard -> descriptor, opened lazily in each process

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.index.class_names

    def __len__(self) -> int:
        return len(self.index.labels)

    def labels(self) -> np.ndarray:
        return self.index.labels.copy()

    def __getstate__(self) -> dict:
        # Loader workers open their own descriptors.
        return {**self.__dict__, "_files": {}}

    def __del__(self) -> None:
        for descriptor in getattr(self, "_files", {}).values():  # absent if __init__ raised
            os.close(descriptor)

    def _descriptor(self, shard: int) -> int:
        if shard not in self._files:
            self._files[shard] = os.open(self.index.folder / self.index.shard_files[shard], os.O_RDONLY)
        return self._files[shard]

    def load(self, index: int) -> dict:
        shard = int(self.shard_of[index])
        descriptor, shard_file = self._descriptor(shard), self.index.folder / self.index.shard_files[shard]
        paths, data = {}, {}
        for modality in self.modalities:
            offset, size = self.index.members[index, self.index.modalities.index(modality)]
            data[modality] = os.pread(descriptor, int(size), int(offset))
            paths[modality] = Path(f"{shard_file}:{self.index.member_name(index, modality)}")
            if len(data[modality]) != size:
                raise ValueError(
                    f"{paths[modality]}: the shard ends before this file; write the shards again"
                )
        arrays = read_sample(paths, self.modalities, data)
        check_class_maps(arrays, paths, self.modalities, self.semseg_classes, self.ignore_index)
        return {**arrays, "label": int(self.index.labels[index])}


class ADE20KDataset(AugmentedDataset):
    """ADEChallengeData2016: rgb and semseg of "training" / "validation" (or "train" / "val").

    reduce_zero_label (MultiMAE's fine-tuning): 0 ("other") -> 255, ignored; classes 1..150 -> 0..149.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        augment: AugmentConfig,
        reduce_zero_label: bool = True,
        on_error: str = "raise",
        seed: int = 0,
    ) -> None:
        super().__init__(augment, seed)
        self.reduce_zero_label = reduce_zero_label
        self.modalities = resolve(("rgb", "semseg"))
        self.samples = index_ade20k(root, split, on_error, self.read)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, paths: dict[str, Path]) -> dict[str, np.ndarray]:
        return read_ade20k_sample(paths, self.reduce_zero_label)

    def load(self, index: int) -> dict:
        return self.read(self.samples[index])
