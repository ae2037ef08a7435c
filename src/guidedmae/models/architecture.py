"""A MultiMAE's architecture: the config, the ViT presets, and a config from stored values."""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from guidedmae.data.modalities import Modality, declaration, declare_all, get_modality
from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.infra.fields import check_field_types


@dataclass
class MultiMAEConfig:
    """Architecture of a MultiMAE. Defaults: MultiMAE-B as released (1600 epochs)."""

    inputs: tuple[str, ...] = ("rgb", "depth", "semseg")
    outputs: tuple[str, ...] = ("rgb", "depth", "semseg", "norm_rgb")  # () for an encoder only
    image_size: int = 224
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.0
    num_global_tokens: int = 1
    semseg_classes: int = 133  # COCO panoptic classes of MultiMAE's pseudo labels
    semseg_class_dim: int = 64
    decoder_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_task_queries: bool = True
    # Outputs decoded in fp32 even under autocast: MultiMAE runs the semseg decoder so for stability.
    fp32_outputs: tuple[str, ...] = field(default=("semseg",))
    # Declarations (guidedmae.data.modalities) of the inputs and outputs that are not built in, or that
    # change a built-in: a model file then says what its adapters take.
    modalities: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_field_types(self, "model.")  # a config.json or a checkpoint's config may hold anything
        # Far beyond any ViT trained so far (ViT-22B: dim 6144, depth 48): a config, or a file's stored
        # config, asking for more is a mistake or an attack, refused before anything is built.
        limits = {
            "dim": 16384, "depth": 256, "num_heads": 1024, "image_size": 16384, "patch_size": 1024,
            "num_global_tokens": 1024, "semseg_classes": 65536, "semseg_class_dim": 16384,
            "decoder_dim": 16384, "decoder_depth": 256, "decoder_heads": 1024,
        }  # fmt: skip
        for name, limit in limits.items():
            value = getattr(self, name)
            if not 1 <= value <= limit:
                raise ValueError(f"model.{name}={value}; expected 1..{limit}")
        # Attention splits a width among its heads; the sin-cos position tables take a quarter of it per axis
        # and function.
        for width, heads in (("dim", "num_heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, width) % getattr(self, heads) or getattr(self, width) % 4:
                raise ValueError(
                    f"model.{width}={getattr(self, width)}, model.{heads}={getattr(self, heads)}; expected "
                    f"a {width} divisible by {heads} and by 4"
                )
        self.modalities = {name: declaration(record) for name, record in declare_all(self.modalities).items()}
        if not 0 < self.mlp_ratio <= 64 or not 0 <= self.drop_path < 1:
            raise ValueError(
                f"model.mlp_ratio={self.mlp_ratio}, model.drop_path={self.drop_path}; expected 0 < mlp_ratio "
                "<= 64 and 0 <= drop_path < 1"
            )

    def modality(self, name: str) -> Modality:
        """The record of input or output `name` (norm_rgb: rgb's)."""
        return get_modality(name, declare_all(self.modalities))

    @property
    def grid_side(self) -> int:
        """Patches along each side of the image (14 for MultiMAE-B)."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_modality(self) -> int:
        """Patch tokens of one input modality: the grid_side x grid_side grid (196 for MultiMAE-B)."""
        return self.grid_side**2

    @property
    def num_input_tokens(self) -> int:
        """Patch tokens of all input modalities, the global tokens left out (588 for MultiMAE-B)."""
        return len(self.inputs) * self.tokens_per_modality

    @property
    def multimae_num_visible(self) -> int:
        """MultiMAE's visible budget at this size: its encoder sees 98 of 588 tokens, 1/6 of them."""
        return self.num_input_tokens // 6


# Encoder sizes of the ViT family; decoders keep MultiMAE's 256 x 2 unless overridden.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"dim": 192, "depth": 12, "num_heads": 3},
    "small": {"dim": 384, "depth": 12, "num_heads": 6},
    "base": {"dim": 768, "depth": 12, "num_heads": 12},
    "large": {"dim": 1024, "depth": 24, "num_heads": 16},
}


def preset_config(name: str, **overrides: Any) -> MultiMAEConfig:
    """MultiMAEConfig of a named encoder size (tiny/small/base/large), with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return MultiMAEConfig(**{**PRESETS[name], **overrides})


def config_from_values(values: Mapping[str, Any], source: str) -> MultiMAEConfig:
    """A MultiMAEConfig from stored values (JSON / YAML lists as tuples; other keys, e.g. init, left out)."""
    names = {f.name for f in fields(MultiMAEConfig)}
    kept: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in values.items()
        if key in names
    }
    try:
        config = MultiMAEConfig(**kept)
        for name in (*config.inputs, *config.outputs):  # declared in the stored modalities, or built in
            config.modality(name)
        return config
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{source}: the stored model config does not describe a MultiMAE ({error})"
        ) from error
