"""Typed run configs: dataclasses used as OmegaConf structured configs.

    config = load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["optim.blr=2e-4"])

A YAML file is merged over the dataclass defaults, then `key=value` overrides (dotted keys) over the
file; `extends: other.yaml` at the top of a file merges that file first (path relative to the file).
A value `???` is required: loading fails until an override sets it. An unknown key, a value of the
wrong type or a missing required value is a ConfigError naming the key and where it came from.
The sections are the dataclasses of the modules they configure (MultiMAEConfig, MaskingConfig,
LossConfig, AugmentConfig, OptimConfig, ScheduleConfig); this module composes them into a job.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.optim import OptimConfig, validate_optim
from guidedmae.engine.schedule import ScheduleConfig, validate_schedule
from guidedmae.files import atomic_write
from guidedmae.losses import LossConfig
from guidedmae.masking.strategy import MaskingConfig
from guidedmae.models.multimae import MultiMAEConfig

EXTENDS = "extends"
DATA_SOURCES = ("synthetic", "folder")
PRECISIONS = ("fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's schema."""


@dataclass
class ModelSettings(MultiMAEConfig):
    """The architecture (MultiMAEConfig's fields) and where its weights start from."""

    init: str | None = None  # an official MultiMAE .pth or a guidedmae checkpoint: weights only

    def architecture(self) -> MultiMAEConfig:
        return MultiMAEConfig(**{f.name: getattr(self, f.name) for f in fields(MultiMAEConfig)})


@dataclass
class DataConfig:
    sources: ClassVar[tuple[str, ...]] = DATA_SOURCES  # a job's data config may accept more (fine-tuning)
    source: str = "synthetic"  # synthetic: scenes rendered on the fly | folder: the MultiMAE layout
    root: str = ""  # folder: root of root/<split>/<modality>/<class>/<name>.<ext>
    split: str = "train"  # folder
    num_samples: int = 10000  # synthetic: scene indices 0..num_samples-1
    render_size: int = 0  # synthetic: pixels per side rendered before augmentation; 0 = augment.size
    batch_size: int = 256  # per process; total batch = batch_size * processes * optim.accum_steps
    num_workers: int = 4  # loader processes per training process
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.source not in self.sources:
            raise ValueError(f"data.source={self.source!r}; expected one of {self.sources}")
        if self.source != "synthetic" and not self.root:
            raise ValueError(f"data.source={self.source} needs data.root (the folder holding the data set)")
        if self.num_samples < 1 or self.render_size < 0:
            raise ValueError(
                f"data.num_samples={self.num_samples}, data.render_size={self.render_size}; "
                "expected num_samples >= 1 and render_size >= 0 (0 = augment.size)"
            )
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
        if self.threads < 0 or self.max_nonfinite < 1:
            raise ValueError(
                f"run.threads={self.threads}, run.max_nonfinite={self.max_nonfinite}; "
                "expected threads >= 0 (0 = automatic) and max_nonfinite >= 1"
            )


@dataclass
class LogConfig:
    every: int = 20  # optimizer steps between metrics lines
    picture_every: int = 1000  # optimizer steps between reconstruction PNGs (and one at the end)
    picture_samples: int = 4  # samples in the fixed picture batch

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


@dataclass
class PretrainConfig:
    out_dir: str = "runs/pretrain"
    seed: int = 0  # model init, masking, data order, augmentation and synthetic scenes
    resume: str = ""  # "" = a fresh run | auto = the newest checkpoint in out_dir, if any | PATH
    model: ModelSettings = field(default_factory=ModelSettings)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        validate_optim(self.optim)
        validate_schedule(self.schedule)
        if self.data.augment.size != self.model.image_size:
            raise ValueError(
                f"data.augment.size={self.data.augment.size} must equal model.image_size={self.model.image_size}"
            )
        if self.seed < 0:
            raise ValueError(f"seed={self.seed}; expected a non-negative integer")


Config = TypeVar("Config")


def _describe(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    if "not in" in message and key:
        return f"unknown key '{key}' ({message})"
    return f"'{key}': {message}" if key else message


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML file as a DictConfig, with the files it `extends` merged underneath it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: '{EXTENDS}' forms a cycle: {' -> '.join(map(str, (*seen, path)))}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    parent = loaded.pop(EXTENDS, None)
    if parent is None:
        return loaded
    return OmegaConf.merge(_load_yaml(path.parent / str(parent), (*seen, path)), loaded)


def load_config(
    schema: type[Config], path: str | Path | None, overrides: Sequence[str] = (), base: Mapping | None = None
) -> Config:
    """The typed config: dataclass defaults <- base (if any) <- YAML file (if any) <- `key=value` overrides.

    base: a saved config dict, e.g. the one a checkpoint holds (evaluating a run with its own config).
    """
    merged = OmegaConf.structured(schema)
    if base is not None:
        try:
            merged = OmegaConf.merge(merged, base)
        except OmegaConfBaseException as error:
            raise ConfigError(f"saved config: {_describe(error)}") from error
    required = set()  # '???' values of the file, which an override must set
    if path is not None:
        try:
            loaded = _load_yaml(Path(path))
            required = OmegaConf.missing_keys(loaded)
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{path}: {_describe(error)}") from error
    malformed = [item for item in overrides if "=" not in item or item.startswith("=")]
    if malformed:
        raise ConfigError(f"overrides must be key=value (dotted keys, e.g. optim.blr=2e-4), got {malformed}")
    for item in overrides:  # one at a time, so that an error can name the override
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as error:
            raise ConfigError(f"command line {item!r}: {_describe(error)}") from error
    source = "command line" if path is None else f"{path} + command line" if overrides else str(path)
    missing = sorted(required - {item.split("=", 1)[0] for item in overrides})
    if missing:
        raise ConfigError(
            f"{source}: required values not set ('???'): {', '.join(missing)}; "
            f"give them on the command line, e.g. {missing[0]}=..."
        )
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source}: {_describe(error)}") from error
    except ValueError as error:  # a dataclass's own check of its values (__post_init__)
        raise ConfigError(f"{source}: {error}") from error


def config_to_dict(config) -> dict:
    """A config dataclass as plain dicts, lists and scalars (what checkpoints store)."""
    return OmegaConf.to_container(OmegaConf.structured(config))


def config_to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as 'key: old -> new'."""
    differences = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            differences += config_differences(before, after, f"{name}.")
        elif before != after:
            differences.append(f"{name}: {before!r} -> {after!r}")
    return differences


def save_config(config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write(path, lambda file: file.write(config_to_yaml(config).encode()))
