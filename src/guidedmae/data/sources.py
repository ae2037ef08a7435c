"""One way to build a data set: `build_dataset(data, split, modalities, train)` over a registry of sources.

    dataset = build_dataset(config.data, "train", modalities, train=True, seed=config.seed)

    synthetic  procedural scenes rendered on the fly, data.num_samples scenes of series data.scene_seed:
               of the training population for a training set, of the held-out one (which shares no
               scene with it) for an evaluation set; the split name is not used
    folder     root/<split>/<modality>/<class>/<name>.<ext> (MultiMAE's layout; guidedmae data synth)
    shards     root/<split>/ as tar shards with an index (guidedmae data shard)
    ade20k     ADEChallengeData2016: rgb and semseg of "training" / "validation"
    nyuv2      the folder layout `guidedmae data nyuv2` writes (train / test, rgb + depth + semseg)

Every source gets the same arguments; `train` picks the augmentation (random crops and flips) or the
evaluation transform. Pretraining, fine-tuning, evaluation, the k-NN probe, bench, visualize and the
viewer all build their data here, and the configs check a data section against the `Source` record:
the jobs it serves, the modalities it can give, whether it reads data.root, what its classes are.
Adding a source is one function and one entry in SOURCES.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from guidedmae.data.datasets import (
    ADE20KDataset,
    AugmentedDataset,
    FolderDataset,
    ShardDataset,
    SyntheticScenes,
)
from guidedmae.data.modalities import Modality
from guidedmae.data.scenes import (
    FIRST_SHAPE_CLASS,
    LABELS,
    NUM_SEMSEG_CLASSES,
    RENDERED_MODALITIES,
    SEMSEG_CLASSES,
)
from guidedmae.data.transforms import AugmentConfig

__all__ = ["JOBS", "SOURCES", "ClassIds", "Source", "build_dataset", "get_source"]

JOBS = ("pretrain", "finetune")


@dataclass(frozen=True)
class ClassIds:
    """What class ids stored class maps may hold (checked as samples are read): semseg ids below
    `semseg_classes` (0 = unchecked) or equal to `ignore_index`."""

    semseg_classes: int = 0
    ignore_index: int | None = None


class DataSection(Protocol):
    """The keys of a data section the sources read (config.DataConfig; FinetuneDataConfig adds `label`,
    the synthetic scenes' image label, read where present)."""

    source: str
    root: str
    num_samples: int
    scene_seed: int
    render_size: int
    on_error: str
    augment: AugmentConfig


@dataclass(frozen=True)
class Request:
    """Everything a source is asked for (build_dataset's arguments, the augmentation resolved)."""

    data: DataSection
    split: str
    train: bool
    modalities: Sequence[str | Modality]
    augment: AugmentConfig
    seed: int
    class_ids: ClassIds


def _synthetic(request: Request) -> AugmentedDataset:
    data = request.data
    return SyntheticScenes(
        data.num_samples,
        data.render_size or request.augment.size,
        data.scene_seed,
        request.modalities,
        request.augment,
        getattr(data, "label", "shape"),
        held_out=not request.train,
        augment_seed=request.seed,
    )


def _folder(request: Request) -> AugmentedDataset:
    data, ids = request.data, request.class_ids
    return FolderDataset(
        data.root,
        request.split,
        request.modalities,
        request.augment,
        on_error=data.on_error,
        seed=request.seed,
        semseg_classes=ids.semseg_classes,
        ignore_index=ids.ignore_index,
    )


def _shards(request: Request) -> AugmentedDataset:
    data, ids = request.data, request.class_ids  # DataConfig refuses on_error=skip for shards
    return ShardDataset(
        data.root,
        request.split,
        request.modalities,
        request.augment,
        seed=request.seed,
        semseg_classes=ids.semseg_classes,
        ignore_index=ids.ignore_index,
    )


def _ade20k(request: Request) -> AugmentedDataset:
    # The task applies reduce_zero_label (task.reduce_zero_label), for every source alike.
    data = request.data
    return ADE20KDataset(
        data.root,
        request.split,
        request.augment,
        reduce_zero_label=False,
        on_error=data.on_error,
        seed=request.seed,
    )


def _nyuv2(request: Request) -> AugmentedDataset:
    root = Path(request.data.root)
    if not (root / request.split / "rgb" / "nyu").is_dir():
        raise FileNotFoundError(
            f"data.root={root} holds no NYUv2 split {request.split!r} ({root / request.split / 'rgb' / 'nyu'}); "
            "convert the labeled .mat first: guidedmae data nyuv2 --mat nyu_depth_v2_labeled.mat --out ROOT"
        )
    return _folder(request)


@dataclass(frozen=True)
class Source:
    """A data source: how its data set is built, and what the configs may ask of it."""

    build: Callable[[Request], AugmentedDataset]
    jobs: tuple[str, ...] = JOBS  # the jobs it serves (JOBS' names)
    modalities: tuple[str, ...] | None = None  # the modalities it gives; None = any (declared ones too)
    reads_root: bool = True  # whether it reads data.root (else it renders; data.split does not apply)
    image_labels: bool = True  # whether samples carry an image-level "label" (class folders, scenes)
    # Known classes per target key ("label", "semseg"), from the data section (None = unknown)
    classes: Callable[[object], dict[str, int]] = lambda data: {}
    # Class names per target key and which of the semseg classes are objects (the scenes')
    class_names: Callable[[object], dict[str, tuple[str, ...]]] = lambda data: {}
    object_classes: tuple[str, ...] = ()


SOURCES: dict[str, Source] = {
    "synthetic": Source(
        _synthetic,
        modalities=RENDERED_MODALITIES,
        reads_root=False,
        classes=lambda data: {
            "semseg": NUM_SEMSEG_CLASSES,
            "label": len(LABELS[getattr(data, "label", "shape")]),
        },
        class_names=lambda data: {"semseg": SEMSEG_CLASSES, "label": LABELS[getattr(data, "label", "shape")]},
        object_classes=SEMSEG_CLASSES[FIRST_SHAPE_CLASS:],
    ),
    "folder": Source(_folder),
    "shards": Source(_shards),
    "ade20k": Source(_ade20k, jobs=("finetune",), modalities=("rgb", "semseg"), image_labels=False),
    "nyuv2": Source(_nyuv2, modalities=("rgb", "depth", "semseg")),
}


def get_source(name: str, job: str | None = None) -> Source:
    """The source called `name` (data.source), serving `job` if given; a ValueError naming what is allowed."""
    allowed = [key for key, source in SOURCES.items() if job is None or job in source.jobs]
    if name not in allowed:
        raise ValueError(f"data.source={name!r}; expected one of {tuple(allowed)}")
    return SOURCES[name]


def build_dataset(
    data: DataSection,
    split: str,
    modalities: Sequence[str | Modality],
    train: bool,
    *,
    seed: int = 0,
    class_ids: ClassIds = ClassIds(),
) -> AugmentedDataset:
    """The data set of `data.source` for `split`, yielding `modalities` (and "label", "index").

    data: a DataConfig; train: data.augment's random augmentation, else the evaluation transform;
    seed: the augmentations' seed (a run's seed); class_ids: what stored class maps may hold.
    """
    source = get_source(data.source)
    augment = data.augment if train else replace(data.augment, train=False)
    return source.build(Request(data, split, train, modalities, augment, seed, class_ids))
