"""What `guidedmae bench` and the scripts in benchmarks/ time: a model (fresh, a config's, or a
checkpoint's), its base masking settings and its synthetic batches, from one settings dataclass.

    settings = BenchSettings(preset="base", batch_size=8)
    model, masking, name = bench_model(settings)
    batch = synthetic_batch(settings.batch_size, model.config.image_size, settings.seed)
"""

import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import default_collate

from guidedmae.config import DataConfig, PretrainConfig, load_config
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES
from guidedmae.data.sources import build_dataset
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.from_checkpoint import load_model
from guidedmae.infra.fields import check_seed
from guidedmae.masking import MaskingConfig
from guidedmae.models.architecture import PRESETS, preset_config
from guidedmae.models.multimae import MultiMAE

__all__ = ["MODALITIES", "BenchSettings", "bench_model", "synthetic_batch"]

MODALITIES = ("rgb", "depth", "semseg")


@dataclass
class BenchSettings:
    """The model and the timing of a bench; each field is a command-line option (--batch-size, ...)."""

    config: str = field(default="", metadata={"help": "time the model and budget of this pretraining config"})
    checkpoint: str = field(
        default="",
        metadata={
            "help": "time the trained model (and budget) of this pretraining checkpoint or official file"
        },
    )
    preset: str = field(
        default="base", metadata={"help": "encoder size (base: MultiMAE-B)", "choices": sorted(PRESETS)}
    )
    image_size: int = field(default=224, metadata={"help": "image side in pixels"})
    patch_size: int = field(default=16, metadata={"help": "patch side in pixels"})
    semseg_classes: int = field(
        default=133,
        metadata={
            "help": f"semseg classes of the model (MultiMAE's; at least the scenes' {NUM_SEMSEG_CLASSES})"
        },
    )
    num_visible: int | None = field(
        default=None,
        metadata={"help": "visible tokens of a --preset model (default MultiMAE's 1/6)", "type": int},
    )
    batch_size: int = field(
        default=8, metadata={"help": "samples per step (its inputs must fit in the machine's memory)"}
    )
    precision: str = field(default="fp32", metadata={"help": "bf16 = autocast", "choices": ("fp32", "bf16")})
    device: str = field(
        default="auto", metadata={"help": "where to time", "choices": ("auto", "cpu", "cuda")}
    )
    rounds: int = field(default=3, metadata={"help": "timed rounds of every strategy"})
    warmup: int = field(default=1, metadata={"help": "untimed rounds first (CPU memory is read in the last)"})
    seed: int = field(default=0, metadata={"help": "model init, scenes and masks"})

    def __post_init__(self) -> None:
        if self.checkpoint and self.config:
            raise ValueError("--checkpoint brings its own config: give --checkpoint or --config, not both")
        if (self.checkpoint or self.config) and self.num_visible is not None:
            raise ValueError(
                "--num-visible sets the budget of a --preset model; --config and --checkpoint bring their own "
                "(masking.num_visible)"
            )
        if self.rounds < 1 or self.warmup < 0 or self.batch_size < 1:
            raise ValueError("--rounds and --batch-size must be >= 1 and --warmup >= 0")
        check_seed(self.seed, "--seed")
        if self.semseg_classes < NUM_SEMSEG_CLASSES:
            raise ValueError(
                f"--semseg-classes {self.semseg_classes}; expected at least {NUM_SEMSEG_CLASSES}, the classes of "
                "the synthetic scenes the steps are timed on"
            )


def synthetic_batch(
    batch_size: int, image_size: int, seed: int = 0, epoch: int = 0
) -> dict[str, torch.Tensor]:
    """The first `batch_size` synthetic scenes, augmented as for pretraining in `epoch`: {modality:
    [B, ...]}, and the samples' "index" and "view" (what strategies that remember samples read)."""
    data = DataConfig(
        source="synthetic", num_samples=batch_size, scene_seed=seed, augment=AugmentConfig(image_size)
    )
    scenes = build_dataset(data, "train", MODALITIES, train=True, seed=seed)
    scenes.set_epoch(epoch)
    return default_collate([scenes[index] for index in range(batch_size)])


def _memory_bytes() -> int:
    """This machine's physical memory, where the synthetic batches are rendered."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_batch_fits(batch_size: int, image_size: int) -> None:
    """Refuse a batch whose inputs (the timed batch and its earlier views, rendered before anything is
    timed) would not fit in memory: rendering it would take minutes, then fail."""
    sample = synthetic_batch(1, image_size)
    needed = 2 * batch_size * sum(value.numel() * value.element_size() for value in sample.values())
    memory = _memory_bytes()
    if needed > memory:
        raise ValueError(
            f"--batch-size {batch_size}: its inputs at {image_size}px would take {needed / 2**30:.1f} GiB, more "
            f"than this machine's {memory / 2**30:.1f} GiB of memory; choose a smaller --batch-size"
        )


def bench_model(settings: BenchSettings) -> tuple[MultiMAE, MaskingConfig, str]:
    """The model to time (fresh, or trained: a checkpoint), its base masking settings and a name, once the
    settings are checked (a batch that fits in memory, a visible count the model has)."""
    torch.manual_seed(settings.seed)
    if settings.checkpoint:
        model, config, _ = load_model(settings.checkpoint)
        name, masking = settings.checkpoint, config.masking
    elif settings.config:
        config = load_config(PretrainConfig, settings.config)
        model, masking = MultiMAE(config.model.architecture(config.modalities)), config.masking
        name = settings.config
    else:
        architecture = preset_config(
            settings.preset,
            image_size=settings.image_size,
            patch_size=settings.patch_size,
            semseg_classes=settings.semseg_classes,
        )
        num_tokens = architecture.num_input_tokens
        if settings.num_visible is not None and not 1 <= settings.num_visible <= num_tokens:
            raise ValueError(
                f"--num-visible {settings.num_visible}; expected 1..{num_tokens} (all input tokens)"
            )
        masking = MaskingConfig(num_visible=settings.num_visible or architecture.multimae_num_visible)
        model, name = MultiMAE(architecture), settings.preset
    _check_batch_fits(settings.batch_size, model.config.image_size)
    return model, masking, name
