"""What fine-tuning and the k-NN probe build from a FinetuneConfig: the encoder with its head, the
training set (a class-balanced seeded subset in the low-data regime) and the evaluation set."""

from dataclasses import replace

import numpy as np

from guidedmae.config import FinetuneConfig
from guidedmae.data.datasets import AugmentedDataset, EpochSubset, SizedDataset
from guidedmae.data.modalities import Modality, declare_all, get_modality
from guidedmae.data.sources import ClassIds, build_dataset, get_source
from guidedmae.data.subset import balanced_subset
from guidedmae.engine.evaluate import WholeImages
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.task_model import FineTuneModel
from guidedmae.tasks import build_head

__all__ = ["build_model", "data_modalities", "evaluation_set", "split_name", "training_set"]


def data_modalities(config: FinetuneConfig) -> list[Modality]:
    """The modalities a batch holds: the inputs, and the target if it is an image (the label always comes)."""
    task = config.head.task_record
    target = (task.target_key,) if task.dense else ()
    declared = declare_all(config.modalities)
    return [get_modality(name, declared) for name in dict.fromkeys([*config.model.inputs, *target])]


def _build_split(config: FinetuneConfig, train: bool) -> AugmentedDataset:
    """The train split (with augmentation) or the evaluation split (the eval transform)."""
    data = config.data
    if not train:
        data = replace(data, num_samples=data.eval_num_samples, scene_seed=data.eval_scene_seed)
    split = data.split if train else data.eval_split
    return build_dataset(
        data,
        split,
        data_modalities(config),
        train,
        seed=config.seed,
        class_ids=ClassIds(**_semseg_ids(config)),
    )


def _semseg_ids(config: FinetuneConfig) -> dict:
    """The semseg ids the data may hold: as the input, the encoder's classes; as the target, the head's
    (one more before reduce_zero_label shifts them down) and task.ignore_index."""
    if "semseg" in config.model.inputs:
        return {"semseg_classes": config.model.semseg_classes}
    return config.head.task_record.class_ids(config.head.num_classes, config.task)


def training_set(config: FinetuneConfig) -> SizedDataset:
    """The train split, or its class-balanced seeded subset in the low-data regime."""
    dataset = _build_split(config, train=True)
    if config.data.fraction == 1 and not config.data.per_class:
        return dataset
    task = config.head.task_record
    if not task.dense:
        indices = balanced_subset(
            dataset.labels(),
            config.seed,
            fraction=None if config.data.per_class else config.data.fraction,
            per_class=config.data.per_class or None,
        )
    elif config.data.per_class:
        raise ValueError(f"data.per_class needs image labels; head.task={task.name} has none")
    else:  # dense tasks: a seeded uniform share of the images
        rng = np.random.default_rng(config.seed)
        count = max(1, round(config.data.fraction * len(dataset)))
        indices = np.sort(rng.permutation(len(dataset))[:count])
    return EpochSubset(dataset, indices.tolist())


def evaluation_set(config: FinetuneConfig) -> SizedDataset:
    dataset = _build_split(config, train=False)
    if config.eval.mode == "center":
        return dataset
    return WholeImages(dataset, config.eval.mode, config.task.ignore_index)


def build_model(config: FinetuneConfig) -> FineTuneModel:
    """Encoder (random init; load_pretrained fills it from model.init) and head, as the config says."""
    architecture = config.model.architecture(config.modalities)
    return FineTuneModel(
        MultiMAE(architecture),
        build_head(config.head, architecture),
        freeze_encoder=config.model.freeze_encoder,
    )


def split_name(config: FinetuneConfig) -> str:
    if not get_source(config.data.source).reads_root:
        return f"{config.data.eval_num_samples} held-out scenes (series {config.data.eval_scene_seed})"
    return f"{config.data.root} {config.data.eval_split}"
