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
viewer all build their data here.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch.utils.data import Dataset

from guidedmae.data.datasets import ADE20KDataset, FolderDataset, ShardDataset, SyntheticScenes
from guidedmae.data.modalities import Modality
from guidedmae.data.transforms import AugmentConfig

__all__ = ["SOURCES", "ClassIds", "build_dataset"]


@dataclass(frozen=True)
class ClassIds:
    """What class ids stored class maps may hold (checked as samples are read): semseg ids below
    `semseg_classes` (0 = unchecked) or equal to `ignore_index`."""

    semseg_classes: int = 0
    ignore_index: int | None = None


@dataclass(frozen=True)
class Request:
    """Everything a source is asked for (build_dataset's arguments, the augmentation resolved)."""

    data: object  # a DataConfig (or FinetuneDataConfig: its `label` picks the synthetic scenes' label)
    split: str
    train: bool
    modalities: Sequence[str | Modality]
    augment: AugmentConfig
    seed: int
    class_ids: ClassIds


def _synthetic(request: Request) -> Dataset:
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


def _folder(request: Request) -> Dataset:
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


def _shards(request: Request) -> Dataset:
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


def _ade20k(request: Request) -> Dataset:
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


def _nyuv2(request: Request) -> Dataset:
    root = Path(request.data.root)
    if not (root / request.split / "rgb" / "nyu").is_dir():
        raise FileNotFoundError(
            f"data.root={root} holds no NYUv2 split {request.split!r} ({root / request.split / 'rgb' / 'nyu'}); "
            "convert the labeled .mat first: guidedmae data nyuv2 --mat nyu_depth_v2_labeled.mat --out ROOT"
        )
    return _folder(request)


SOURCES: dict[str, Callable[[Request], Dataset]] = {
    "synthetic": _synthetic,
    "folder": _folder,
    "shards": _shards,
    "ade20k": _ade20k,
    "nyuv2": _nyuv2,
}


def build_dataset(
    data,
    split: str,
    modalities: Sequence[str | Modality],
    train: bool,
    *,
    seed: int = 0,
    class_ids: ClassIds = ClassIds(),
) -> Dataset:
    """The data set of `data.source` for `split`, yielding `modalities` (and "label", "index").

    data: a DataConfig; train: data.augment's random augmentation, else the evaluation transform;
    seed: the augmentations' seed (a run's seed); class_ids: what stored class maps may hold.
    """
    if data.source not in SOURCES:
        raise ValueError(f"data.source={data.source!r}; expected one of {sorted(SOURCES)}")
    augment = data.augment if train else replace(data.augment, train=False)
    return SOURCES[data.source](Request(data, split, train, modalities, augment, seed, class_ids))
