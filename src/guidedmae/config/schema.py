"""The schemas of the training commands: typed dataclasses, checked entirely when they are built.

The sections are the dataclasses of the modules they configure (MultiMAEConfig, MaskingConfig,
LossConfig, AugmentConfig, OptimConfig, ScheduleConfig, HeadConfig, TaskConfig, EvalConfig,
MixupConfig); this module composes them into the two jobs, PretrainConfig and FinetuneConfig, and adds
the sections every job shares (data, run, log, checkpoint); config.finetune holds the fine-tuning job's.
Their __post_init__ checks raise
ValueError naming the key; guidedmae.config.loading turns them into ConfigErrors naming the source.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from guidedmae.data.modalities import DERIVED_TARGETS, declare_all
from guidedmae.data.sources import get_source
from guidedmae.data.transforms import AugmentConfig
from guidedmae.infra.backends import BackendSettings
from guidedmae.infra.fields import check_seed
from guidedmae.infra.optim import OptimConfig, validate_optim
from guidedmae.infra.precision import PRECISIONS
from guidedmae.infra.schedule import ScheduleConfig, validate_schedule
from guidedmae.infra.trackers import MlflowConfig, WandbConfig
from guidedmae.losses import LossConfig
from guidedmae.masking.config import MaskingConfig, validate_masking
from guidedmae.models.architecture import MultiMAEConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "LogConfig",
    "ModelSettings",
    "PretrainConfig",
    "PretrainEvalConfig",
    "RunConfig",
    "TrainingConfig",
]

ON_ERROR = ("raise", "skip")
# Sample counts a config sets (synthetic scenes, held-out samples): the loader shuffles an index of every
# training sample each epoch (~50 bytes each as a list of ints), so 10^7 samples take 0.5 GB already.
MAX_SAMPLES = 10**7
# CPU threads per process: more than any CPU has cores; beyond it OpenMP fails to create them (or crashes).
MAX_THREADS = 1024


def check_samples(key: str, value: int, least: int = 1) -> None:
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
    job: ClassVar[str] = "pretrain"  # the sources allowed are those serving this job (data.sources)
    # synthetic: scenes rendered on the fly | folder: the MultiMAE layout | shards: its tar shards |
    # nyuv2: the converted NYUv2 layout | ade20k: ADEChallengeData2016 (fine-tuning only)
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
    # Keep the loader processes for the whole run instead of starting them every epoch (same batches)
    persistent_workers: bool = False
    on_error: str = "raise"  # a broken sample: raise (naming its files) | skip (decode all at start, warn)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        source = get_source(self.source, self.job)
        if source.reads_root and not self.root:
            raise ValueError(f"data.source={self.source} needs data.root (the folder holding the data set)")
        if not source.reads_root and self.root:
            raise ValueError(
                f"data.root={self.root!r} is not read: data.source={self.source} renders its data; "
                "set data.source=folder to train on that folder"
            )
        if not source.reads_root and self.split != "train":
            raise ValueError(
                f"data.split={self.split!r} does not apply to data.source={self.source} (it has no splits)"
            )
        if self.on_error not in ON_ERROR:
            raise ValueError(f"data.on_error={self.on_error!r}; expected one of {ON_ERROR}")
        if self.source == "shards" and self.on_error != "raise":
            raise ValueError(
                f"data.on_error={self.on_error!r} does not apply to data.source=shards: drop broken samples "
                "when writing the shards (guidedmae data shard --on-error skip)"
            )
        check_samples("data.num_samples", self.num_samples)
        check_seed(self.scene_seed, "data.scene_seed")
        if self.render_size < 0:
            raise ValueError(f"data.render_size={self.render_size}; expected >= 0 (0 = augment.size)")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(
                f"data.batch_size={self.batch_size}, data.num_workers={self.num_workers}; "
                "expected batch_size >= 1 and num_workers >= 0"
            )


@dataclass
class RunConfig(BackendSettings):
    """Where and how a run computes: the device, precision and compilation, and the backend settings of
    guidedmae.infra.backends (tf32, sdpa_backend, cudnn_benchmark, deterministic)."""

    device: str = "auto"  # auto (this process's GPU if any, else CPU) | cpu | cuda
    precision: str = "bf16"  # fp32 | bf16 (autocast) | fp16 (autocast + loss scaling, CUDA only)
    compile: bool = False  # torch.compile the training step
    # Recompute each encoder block's activations in the backward instead of storing them: less memory
    # (ViT-L at large batches) for about a third more compute
    activation_checkpointing: bool = False
    threads: int = 0  # CPU threads per process; 0 = the cores divided among the local processes
    max_nonfinite: int = 5  # abort after this many steps in a row with a non-finite loss

    def __post_init__(self) -> None:
        super().__post_init__()
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


def _check_modalities(config: "TrainingConfig", targets: tuple[str, ...] = ()) -> MultiMAEConfig:
    """The `modalities:` declarations must be valid, name every input and output the model does not have
    built in, and be data the source can give (with `targets`, a task's); returns the architecture."""
    declared = declare_all(config.modalities)
    architecture = config.model.architecture(config.modalities)
    used = {architecture.modality(name).name for name in (*architecture.inputs, *architecture.outputs)}
    used |= set(targets)
    source = get_source(config.data.source)
    if source.modalities is None:
        return architecture
    missing = sorted(used - set(source.modalities))
    if missing:
        raise ValueError(
            f"data.source={config.data.source} has no {', '.join(missing)} (it gives "
            f"{', '.join(source.modalities)}); other modalities come from data.source=folder or shards"
        )
    changed = sorted(set(declared) & used)
    if changed:
        raise ValueError(
            f"modalities: {', '.join(changed)} changed; data.source={config.data.source} gives the built-in "
            "ones only"
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
    if TYPE_CHECKING:  # the sections every job's config adds, as fields of its own (these types or narrower)
        model: ModelSettings = field(default_factory=ModelSettings)
        data: DataConfig = field(default_factory=DataConfig)
        optim: OptimConfig = field(default_factory=OptimConfig)
        schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        """What every training config must satisfy beyond its sections' own checks."""
        _check_modalities(self, self._targets())
        validate_optim(self.optim)
        validate_schedule(self.schedule)
        if self.data.augment.size != self.model.image_size:
            raise ValueError(
                f"data.augment.size={self.data.augment.size} must equal model.image_size={self.model.image_size}"
            )
        check_seed(self.seed, "seed")

    def _targets(self) -> tuple[str, ...]:
        """Modalities the job reads beyond the model's inputs and outputs (a fine-tuning task's target)."""
        return ()

    def total_batch(self, world_size: int) -> int:
        """Samples per optimizer step over `world_size` processes (what the peak lr scales with)."""
        return self.data.batch_size * world_size * self.optim.accum_steps


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
        check_samples("eval.num_samples", self.num_samples, least=0)  # 0 = no evaluation
        check_seed(self.scene_seed, "eval.scene_seed")
        check_seed(self.mask_seed, "eval.mask_seed")
        if self.every < 0 or self.batch_size < 0:
            raise ValueError(
                f"eval.every={self.every}, eval.batch_size={self.batch_size}; expected non-negative values"
            )


@dataclass
class PretrainConfig(TrainingConfig):
    """A pretraining run (`guidedmae pretrain`): the model, its masking, losses, data, held-out evaluation,
    optimizer and schedule, beside the sections every training job has."""

    config_kind: ClassVar[str] = "pretrain"  # the shipped configs it is loaded from by name
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
        source = get_source(self.data.source)
        if (
            self.masking.strategy == "objects"
            and not self.masking.objects.classes
            and not source.object_classes
        ):
            raise ValueError(
                f"masking.strategy=objects: data.source={self.data.source} does not say which semseg classes "
                "are objects; list them in masking.objects.classes"
            )
        known = source.classes(self.data).get("semseg")
        if semseg_used and known and self.model.semseg_classes < known:
            raise ValueError(
                f"model.semseg_classes={self.model.semseg_classes} is fewer than the {known} classes of "
                f"data.source={self.data.source}"
            )
