"""The schemas of every training command: typed dataclasses, checked entirely when they are built.

The sections are the dataclasses of the modules they configure (MultiMAEConfig, MaskingConfig,
LossConfig, AugmentConfig, OptimConfig, ScheduleConfig, HeadConfig, TaskConfig, EvalConfig,
MixupConfig); this module composes them into the two jobs, PretrainConfig and FinetuneConfig, and adds
the sections every job shares (data, run, log, checkpoint). Their __post_init__ checks raise
ValueError naming the key; guidedmae.config.loading turns them into ConfigErrors naming the source.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from guidedmae.data.mixup import MixupConfig
from guidedmae.data.modalities import DERIVED_TARGETS, declare_all
from guidedmae.data.scenes import LABELS as SCENE_LABELS
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES, RENDERED_MODALITIES
from guidedmae.data.transforms import AugmentConfig
from guidedmae.infra.fields import check_seed
from guidedmae.infra.optim import OptimConfig, validate_optim
from guidedmae.infra.precision import PRECISIONS
from guidedmae.infra.schedule import ScheduleConfig, validate_schedule
from guidedmae.infra.trackers import MlflowConfig, WandbConfig
from guidedmae.losses import LossConfig
from guidedmae.masking.config import MaskingConfig, validate_masking
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.task_model import HeadConfig
from guidedmae.tasks import EvalConfig, TaskConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneModelSettings",
    "FinetuneOptimConfig",
    "LogConfig",
    "ModelSettings",
    "PretrainConfig",
    "PretrainEvalConfig",
    "RunConfig",
    "TrainingConfig",
]

PRETRAIN_SOURCES = ("synthetic", "folder", "shards")
ON_ERROR = ("raise", "skip")
FINETUNE_SOURCES = ("synthetic", "folder", "shards", "ade20k")
# Sample counts a config sets (synthetic scenes, held-out samples): the loader shuffles an index of every
# training sample each epoch (~50 bytes each as a list of ints), so 10^7 samples take 0.5 GB already.
MAX_SAMPLES = 10**7
# CPU threads per process: more than any CPU has cores; beyond it OpenMP fails to create them (or crashes).
MAX_THREADS = 1024


def _check_samples(key: str, value: int, least: int = 1) -> None:
    if not least <= value <= MAX_SAMPLES:
        raise ValueError(
            f"{key}={value}; expected {least}..{MAX_SAMPLES} (an index of every sample is held in memory)"
        )


# -- sections shared by every job -----------------------------------------------------------------


@dataclass
class ModelSettings(MultiMAEConfig):
    """The architecture (MultiMAEConfig's fields) and where its weights start from."""

    init: str | None = None  # an official MultiMAE .pth or a guidedmae checkpoint: weights only

    def __post_init__(self) -> None:
        if self.modalities:
            raise ValueError(
                f"model.modalities={sorted(self.modalities)}: declare modalities in the top-level "
                "`modalities:` section, which the data and the model share"
            )
        super().__post_init__()

    def architecture(self, modalities: Mapping[str, Any]) -> MultiMAEConfig:
        """The MultiMAEConfig, carrying the declarations (the config's `modalities:`) of what it uses."""
        values = {f.name: getattr(self, f.name) for f in fields(MultiMAEConfig)}
        used = {DERIVED_TARGETS.get(name, name) for name in (*self.inputs, *self.outputs)}
        return MultiMAEConfig(**{**values, "modalities": {n: v for n, v in modalities.items() if n in used}})


@dataclass
class DataConfig:
    sources: ClassVar[tuple[str, ...]] = PRETRAIN_SOURCES  # fine-tuning accepts more
    # synthetic: scenes rendered on the fly | folder: the MultiMAE layout | shards: its tar shards
    source: str = "synthetic"
    root: str = ""  # folder: root of root/<split>/<modality>/<class>/<name>.<ext>; shards: of root/<split>/
    split: str = "train"  # folder, shards
    num_samples: int = 10000  # synthetic: scene indices 0..num_samples-1
    # synthetic: the training series, the same for every run seed (seeds are replicates on one data set);
    # held-out series are another population, never the same scenes whatever the seeds
    scene_seed: int = 0
    render_size: int = 0  # synthetic: pixels per side rendered before augmentation; 0 = augment.size
    batch_size: int = 256  # per process; total batch = batch_size * processes * optim.accum_steps
    num_workers: int = 4  # loader processes per training process
    on_error: str = "raise"  # a broken sample: raise (naming its files) | skip (decode all at start, warn)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.source not in self.sources:
            raise ValueError(f"data.source={self.source!r}; expected one of {self.sources}")
        if self.source != "synthetic" and not self.root:
            raise ValueError(f"data.source={self.source} needs data.root (the folder holding the data set)")
        if self.source == "synthetic" and self.root:
            raise ValueError(
                f"data.root={self.root!r} is not read: data.source=synthetic renders its scenes; "
                "set data.source=folder to train on that folder"
            )
        if self.source == "synthetic" and self.split != "train":
            raise ValueError(
                f"data.split={self.split!r} does not apply to data.source=synthetic (it has no splits)"
            )
        if self.on_error not in ON_ERROR:
            raise ValueError(f"data.on_error={self.on_error!r}; expected one of {ON_ERROR}")
        if self.source == "shards" and self.on_error != "raise":
            raise ValueError(
                f"data.on_error={self.on_error!r} does not apply to data.source=shards: drop broken samples "
                "when writing the shards (guidedmae data shard --on-error skip)"
            )
        _check_samples("data.num_samples", self.num_samples)
        check_seed(self.scene_seed, "data.scene_seed")
        if self.render_size < 0:
            raise ValueError(f"data.render_size={self.render_size}; expected >= 0 (0 = augment.size)")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(
                f"data.batch_size={self.batch_size}, data.num_workers={self.num_workers}; "
                "expected batch_size >= 1 and num_workers >= 0"
            )


@dataclass
class RunConfig:
    device: str = "auto"  # auto (this process's GPU if any, else CPU) | cpu | cuda
    precision: str = "bf16"  # fp32 | bf16 (autocast) | fp16 (autocast + loss scaling, CUDA only)
    compile: bool = False  # torch.compile the training step
    threads: int = 0  # CPU threads per process; 0 = the cores divided among the local processes
    max_nonfinite: int = 5  # abort after this many steps in a row with a non-finite loss

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"run.precision={self.precision!r}; expected one of {PRECISIONS}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ValueError(
                f"run.threads={self.threads}; expected 0 (the cores divided among the local processes) to "
                f"{MAX_THREADS}"
            )
        if self.max_nonfinite < 1:
            raise ValueError(f"run.max_nonfinite={self.max_nonfinite}; expected at least 1")


@dataclass
class LogConfig:
    every: int = 20  # optimizer steps between metrics lines
    picture_every: int = 1000  # optimizer steps between reconstruction PNGs (and one at the end)
    picture_samples: int = 4  # samples in the fixed picture batch
    wandb: WandbConfig = field(default_factory=WandbConfig)  # Weights & Biases (an extra), off by default
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)  # MLflow (an extra), off by default

    def __post_init__(self) -> None:
        if self.every < 1 or self.picture_every < 0 or self.picture_samples < 1:
            raise ValueError(
                f"log.every={self.every}, log.picture_every={self.picture_every}, "
                f"log.picture_samples={self.picture_samples}; expected every >= 1, picture_every >= 0 "
                "(0 = only at the end) and picture_samples >= 1"
            )


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints (and one at the end)
    keep: int = 3  # step checkpoints kept (checkpoint-last.pt is always there)

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ValueError(
                f"checkpoint.every={self.every}, checkpoint.keep={self.keep}; expected both >= 1"
            )


def _check_modalities(config) -> MultiMAEConfig:
    """The `modalities:` declarations must be valid, name every input and output the model does not have
    built in, and be data the source can give; returns the model's architecture."""
    declared = declare_all(config.modalities)
    architecture = config.model.architecture(config.modalities)
    used = {architecture.modality(name).name for name in (*architecture.inputs, *architecture.outputs)}
    rendered = set(RENDERED_MODALITIES)  # ADE20K has fewer: its own check names them
    if config.data.source in ("synthetic", "ade20k") and used - rendered:
        raise ValueError(
            f"data.source={config.data.source} has no {', '.join(sorted(used - rendered))}: declared "
            "modalities come from data.source=folder or shards"
        )
    changed = sorted(set(declared) & rendered & used)
    if config.data.source == "synthetic" and changed:
        raise ValueError(
            f"modalities: {', '.join(changed)} changed; the synthetic scenes give the built-in ones only"
        )
    return architecture


@dataclass
class TrainingConfig:
    """The sections every training job has; PretrainConfig and FinetuneConfig add their own (model, data,
    optim, schedule, eval, ...) after these."""

    out_dir: str = "runs/train"  # the run folder: checkpoints, metrics, config.yaml, results.json
    seed: int = 0  # model init, data order, augmentation, masking / mixup
    resume: str = ""  # "" = a fresh run | auto = the newest checkpoint in out_dir, if any | PATH
    # Modalities beyond rgb, depth, semseg and normals, or changes to those (see guidedmae.data.modalities)
    modalities: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        """What every training config must satisfy beyond its sections' own checks."""
        _check_modalities(self)
        validate_optim(self.optim)
        validate_schedule(self.schedule)
        if self.data.augment.size != self.model.image_size:
            raise ValueError(
                f"data.augment.size={self.data.augment.size} must equal model.image_size={self.model.image_size}"
            )
        check_seed(self.seed, "seed")


# -- pretraining --------------------------------------------------------------------------------


@dataclass
class PretrainEvalConfig:
    """The held-out reconstruction loss, every `every` steps and at the end: per output, under fixed random
    masks (one seed: every run, whatever its strategy, is scored on the same masks) and under the run's
    own strategy. In metrics.jsonl, TensorBoard and results.json (what studies compare)."""

    every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    num_samples: int = 256  # held-out samples: the first of the split / series
    scene_seed: int = 0  # synthetic: the held-out series (of the held-out population: no training scene)
    split: str = "val"  # folder: the held-out split
    mask_seed: int = 0  # the random masks (and the strategy's draws) of every evaluation
    batch_size: int = 0  # 0 = data.batch_size

    def __post_init__(self) -> None:
        _check_samples("eval.num_samples", self.num_samples, least=0)  # 0 = no evaluation
        check_seed(self.scene_seed, "eval.scene_seed")
        check_seed(self.mask_seed, "eval.mask_seed")
        if self.every < 0 or self.batch_size < 0:
            raise ValueError(
                f"eval.every={self.every}, eval.batch_size={self.batch_size}; expected non-negative values"
            )


@dataclass
class PretrainConfig(TrainingConfig):
    out_dir: str = "runs/pretrain"
    model: ModelSettings = field(default_factory=ModelSettings)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: PretrainEvalConfig = field(default_factory=PretrainEvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_masking(self.masking, self.model)
        semseg_used = "semseg" in (*self.model.inputs, *self.model.outputs)
        if self.data.source == "synthetic" and semseg_used and self.model.semseg_classes < NUM_SEMSEG_CLASSES:
            raise ValueError(
                f"model.semseg_classes={self.model.semseg_classes} is fewer than the synthetic scenes' "
                f"{NUM_SEMSEG_CLASSES} classes"
            )


# -- fine-tuning --------------------------------------------------------------------------------


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

    sources: ClassVar[tuple[str, ...]] = FINETUNE_SOURCES
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
        if self.source == "synthetic" and self.eval_split != "val":
            raise ValueError(
                f"data.eval_split={self.eval_split!r} does not apply to data.source=synthetic: its held-out "
                "scenes are the series data.eval_scene_seed"
            )
        if self.label not in SCENE_LABELS:
            raise ValueError(f"data.label={self.label!r}; expected one of {tuple(SCENE_LABELS)}")
        if self.label != "shape" and self.source != "synthetic":
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
        _check_samples("data.eval_num_samples", self.eval_num_samples)
        check_seed(self.eval_scene_seed, "data.eval_scene_seed")


@dataclass
class FinetuneOptimConfig(OptimConfig):
    blr: float = 5e-4  # MultiMAE's IN1K recipe
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's default, as MultiMAE's fine-tuning
    layer_decay: float = 0.65  # lr of layer i scaled by layer_decay ** (depth + 1 - i); 1 = off


@dataclass
class FinetuneConfig(TrainingConfig):
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


def _check_task_data(config: FinetuneConfig) -> None:
    """The task's target and the inputs must come out of the data as the task needs them."""
    task, inputs, augment = config.head.task, config.model.inputs, config.data.augment
    if task in ("semseg", "depth") and task in inputs:
        raise ValueError(
            f"head.task={task} predicts {task}: it cannot also be in model.inputs {list(inputs)}"
        )
    depth_mode = "metres" if task == "depth" else "standardize"
    if ("depth" in inputs or task == "depth") and augment.depth != depth_mode:
        role = (
            "the depth target (metres)" if task == "depth" else "the depth input (MultiMAE standardizes it)"
        )
        raise ValueError(f"data.augment.depth={augment.depth!r}; {role} needs {depth_mode!r}")
    if task == "semseg" and augment.semseg_stride != 1:
        raise ValueError(
            f"data.augment.semseg_stride={augment.semseg_stride}; semseg targets are full resolution: set 1"
        )
    if "semseg" in inputs and augment.semseg_stride != 4:
        raise ValueError(
            f"data.augment.semseg_stride={augment.semseg_stride}; semseg inputs are at 1/4: set 4"
        )
    if config.mixup.enabled and task != "classification":
        raise ValueError(
            f"mixup / cutmix mix image labels; head.task={task} has none (set mixup.mixup=0 cutmix=0)"
        )
    if config.data.source == "ade20k" and (set(inputs) - {"rgb"} or task != "semseg"):
        raise ValueError(
            "data.source=ade20k has rgb and semseg only: use model.inputs=[rgb] and head.task=semseg"
        )
    if config.data.source == "synthetic":
        labels = SCENE_LABELS[config.data.label]
        classes = {"semseg": NUM_SEMSEG_CLASSES, "classification": len(labels)}.get(task)
        if classes is not None and config.head.num_classes != classes:
            what = "classes" if task == "semseg" else f"{config.data.label} labels"
            raise ValueError(
                f"head.num_classes={config.head.num_classes}; the synthetic scenes have {classes} {what}"
            )
