"""The fine-tuning job's schema: FinetuneConfig and the sections it changes (the encoder without decoders,
the data with an evaluation split and a low-data regime, the optimizer with layer decay), and the checks
that its task's target and inputs come out of the data as the task needs them."""

from dataclasses import dataclass, field
from typing import ClassVar

from guidedmae.config.schema import DataConfig, ModelSettings, TrainingConfig, check_samples
from guidedmae.data.mixup import MixupConfig
from guidedmae.data.scenes import LABELS as SCENE_LABELS
from guidedmae.data.sources import get_source
from guidedmae.infra.fields import check_seed
from guidedmae.infra.optim import OptimConfig
from guidedmae.infra.schedule import ScheduleConfig
from guidedmae.tasks import EvalConfig, HeadConfig, TaskConfig

__all__ = ["FinetuneConfig", "FinetuneDataConfig", "FinetuneModelSettings", "FinetuneOptimConfig"]


@dataclass
class FinetuneModelSettings(ModelSettings):
    """The encoder (MultiMAEConfig's fields; no decoders) and where its weights come from."""

    inputs: tuple[str, ...] = ("rgb",)
    outputs: tuple[str, ...] = ()
    drop_path: float = 0.1  # MultiMAE's fine-tuning recipes (0 for NYUv2 depth)
    freeze_encoder: bool = False  # linear probing: only the head trains


@dataclass
class FinetuneDataConfig(DataConfig):
    """The train split (DataConfig's fields) and the evaluation split."""

    job: ClassVar[str] = "finetune"
    eval_split: str = "val"  # folder / ade20k
    eval_num_samples: int = 1000  # synthetic: scenes of the evaluation series
    eval_scene_seed: int = 0  # synthetic: a series of the held-out population, never seen in training
    fraction: float = 1.0  # low-data regime: each class keeps this share of its samples (seeded)
    per_class: int = 0  # low-data regime: exactly this many samples per class; 0 = use fraction
    label: str = (
        "shape"  # synthetic: the image label, shape (largest object's shape) | count (objects in view)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        renders = not get_source(self.source).reads_root
        if renders and self.eval_split != "val":
            raise ValueError(
                f"data.eval_split={self.eval_split!r} does not apply to data.source={self.source}: its held-out "
                "scenes are the series data.eval_scene_seed"
            )
        if self.label not in SCENE_LABELS:
            raise ValueError(f"data.label={self.label!r}; expected one of {tuple(SCENE_LABELS)}")
        if self.label != "shape" and not renders:
            raise ValueError(
                f"data.label={self.label!r} is a label of the synthetic scenes; data.source={self.source} "
                "takes its labels from the data (class folders)"
            )
        if not 0 < self.fraction <= 1 or self.per_class < 0:
            raise ValueError(
                f"data.fraction={self.fraction}, data.per_class={self.per_class}; expected 0 < fraction <= 1 "
                "and per_class >= 0 (0 = use fraction)"
            )
        if self.per_class and self.fraction < 1:
            raise ValueError("give data.fraction or data.per_class, not both")
        check_samples("data.eval_num_samples", self.eval_num_samples)
        check_seed(self.eval_scene_seed, "data.eval_scene_seed")


@dataclass
class FinetuneOptimConfig(OptimConfig):
    blr: float = 5e-4  # MultiMAE's IN1K recipe
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's default, as MultiMAE's fine-tuning
    layer_decay: float = 0.65  # lr of layer i scaled by layer_decay ** (depth + 1 - i); 1 = off


@dataclass
class FinetuneConfig(TrainingConfig):
    """A fine-tuning or probing run (`guidedmae finetune`): the encoder, its head and task, data, evaluation,
    mixup, optimizer and schedule, beside the sections every training job has."""

    config_kind: ClassVar[str] = "finetune"  # the shipped configs it is loaded from by name
    out_dir: str = "runs/finetune"
    model: FinetuneModelSettings = field(default_factory=FinetuneModelSettings)
    head: HeadConfig = field(default_factory=HeadConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(total_epochs=100, warmup_epochs=5, min_lr=1e-6)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.optim.layer_decay <= 1:
            raise ValueError(f"optim.layer_decay={self.optim.layer_decay}; expected 0 < layer_decay <= 1")
        if self.model.outputs:
            raise ValueError(
                f"model.outputs={list(self.model.outputs)}: a fine-tuning encoder has no decoders"
            )
        _check_task_data(self)

    def _targets(self) -> tuple[str, ...]:
        task = self.head.task_record
        return (task.target_key,) if task.dense else ()


def _check_task_data(config: FinetuneConfig) -> None:
    """The task's target and the inputs must come out of the data as the task needs them."""
    task, inputs, augment = config.head.task_record, config.model.inputs, config.data.augment
    task.check(config)
    if "depth" in inputs and augment.depth != "standardize":
        raise ValueError(
            f"data.augment.depth={augment.depth!r}; the depth input needs 'standardize' (MultiMAE standardizes it)"
        )
    if "semseg" in inputs and augment.semseg_stride != 4:
        raise ValueError(
            f"data.augment.semseg_stride={augment.semseg_stride}; semseg inputs are at 1/4: set 4"
        )
    if config.mixup.enabled and not task.mixes_labels:
        raise ValueError(
            f"mixup / cutmix mix image labels; head.task={task.name} has none (set mixup.mixup=0 cutmix=0)"
        )
    source = get_source(config.data.source)
    if task.target_key == "label" and not source.image_labels:
        raise ValueError(
            f"head.task={task.name} needs image labels; data.source={config.data.source} has none"
        )
    classes = source.classes(config.data).get(task.target_key)
    if classes is not None and task.out_channels(config.head.num_classes) != classes:
        what = "classes" if task.dense else f"{config.data.label} labels"
        raise ValueError(
            f"head.num_classes={config.head.num_classes}; data.source={config.data.source} has {classes} {what}"
        )
