"""What a modality is: a declaration of its kind, resolution, files, normalization, loss and augmentation.

rgb, depth, semseg and normals are built in; a config's `modalities:` section declares more (or changes a
built-in) without code:

    modalities:
      flow:                       # a 2-channel image stored as .npy [H, W, 2]
        channels: 2
        format: npy
        normalize: standardize
        loss: l1
        flip_negates: [0]         # a horizontal flip reverses the x component

Every reader, transform, adapter, loss and picture takes the modality's record from here.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from guidedmae.infra.fields import check_field_types

# ImageNet statistics, used by MultiMAE for rgb inputs and targets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Class id of pixels that no loss or metric counts (MultiMAE's SEG_IGNORE_INDEX): unlabeled pixels,
# padding, ADE20K's "other" after reduce_zero_label.
IGNORE_INDEX = 255

KINDS = ("image", "class_map")
# File formats and the extensions the folder reader accepts for them. jpg also takes 8-bit PNG, as rgb
# folders often mix both; class maps take 8- or 16-bit PNG under either png format.
FORMATS: dict[str, tuple[str, ...]] = {
    "jpg": (".jpg", ".jpeg", ".png"),
    "png8": (".png",),
    "png16": (".png",),
    "tiff": (".tif", ".tiff"),
    "npy": (".npy",),
}
NORMALIZATIONS = ("imagenet", "standardize", "fixed", "none")
LOSSES = ("mse", "l1", "norm_mse", "cross_entropy")


@dataclass
class Modality:
    """One modality, as a config's `modalities:` section declares it (the name is the section's key).

    Values: integer file values are divided by `scale` (rgb: 255 -> [0, 1]; depth: 1000 file units per
    metre); floating-point data (.npy, float TIFF, rendered scenes) is taken as it is. Then `normalize`:
    imagenet (3 channels in [0, 1]), standardize (MultiMAE's truncated per-image standardization, per
    channel), fixed (`mean`, `std` per channel) or none. A horizontal flip negates the channels in
    `flip_negates` after normalization (normals' x component), so they must be centred on 0 by then.
    """

    name: str = ""
    kind: str = "image"  # image (`channels` values per pixel) | class_map (one id in 0..classes-1)
    channels: int = 1  # image: channels per pixel (class maps: 1)
    classes: int = 0  # class_map: number of classes; 0 for semseg = model.semseg_classes
    stride: int = 1  # resolution divisor w.r.t. the image: MultiMAE feeds semseg at 1/4
    format: str = "png8"  # jpg | png8 | png16 | tiff | npy (see FORMATS)
    scale: float = 1.0  # integer file values per unit
    normalize: str = "none"  # imagenet | standardize | fixed | none
    mean: tuple[float, ...] = ()  # normalize=fixed: per channel
    std: tuple[float, ...] = ()
    loss: str = "mse"  # reconstruction loss: mse | l1 | norm_mse (patch-normalized target) | cross_entropy
    color_jitter: bool = False  # receives data.augment.color_jitter (colour images only)
    flip_negates: tuple[int, ...] = ()  # channels negated by a horizontal flip

    def __post_init__(self) -> None:
        key = f"modalities.{self.name or '<name>'}"
        check_field_types(self, f"{key}.")
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        self.flip_negates = tuple(self.flip_negates)
        if self.kind not in KINDS:
            raise ValueError(f"{key}.kind={self.kind!r}; expected one of {KINDS}")
        if self.format not in FORMATS:
            raise ValueError(f"{key}.format={self.format!r}; expected one of {tuple(FORMATS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"{key}.normalize={self.normalize!r}; expected one of {NORMALIZATIONS}")
        if self.loss not in LOSSES:
            raise ValueError(f"{key}.loss={self.loss!r}; expected one of {LOSSES}")
        if not 1 <= self.channels <= 64 or not 1 <= self.stride <= 64 or not self.scale > 0:
            raise ValueError(
                f"{key}: channels={self.channels}, stride={self.stride}, scale={self.scale}; expected "
                "1 <= channels <= 64, 1 <= stride <= 64 and scale > 0"
            )
        if self.normalize != "fixed" and (self.mean or self.std):
            given = "mean" if self.mean else "std"
            raise ValueError(
                f"{key}.{given}={list(getattr(self, given))} is only read with normalize=fixed, not "
                f"normalize={self.normalize}; set normalize: fixed or drop {given}"
            )
        if self.is_class_map:
            self._check_class_map(key)
        else:
            self._check_image(key)

    def _check_class_map(self, key: str) -> None:
        if self.channels != 1 or self.loss != "cross_entropy" or self.normalize != "none":
            raise ValueError(
                f"{key}: a class map has channels=1, loss=cross_entropy and normalize=none; got "
                f"channels={self.channels}, loss={self.loss}, normalize={self.normalize}"
            )
        if self.classes < 0 or (self.classes == 0 and self.name != "semseg") or self.classes > 65536:
            raise ValueError(f"{key}.classes={self.classes}; a class map needs 1..65536 classes")
        if self.format not in ("png8", "png16", "tiff", "npy"):
            raise ValueError(f"{key}.format={self.format}: class ids need a lossless format, not JPEG")
        if self.color_jitter or self.flip_negates:
            raise ValueError(f"{key}: class ids take neither color_jitter nor flip_negates")

    def _check_image(self, key: str) -> None:
        if self.classes or self.loss == "cross_entropy":
            raise ValueError(f"{key}: classes and loss=cross_entropy are for kind=class_map")
        if self.format == "png16" and self.channels != 1:
            raise ValueError(f"{key}: 16-bit PNGs hold one channel, not {self.channels}; use tiff or npy")
        if self.format in ("jpg", "png8") and self.channels not in (1, 3):
            raise ValueError(f"{key}: 8-bit images hold 1 or 3 channels, not {self.channels}; use npy")
        if (self.normalize == "imagenet" or self.color_jitter) and self.channels != 3:
            raise ValueError(f"{key}: normalize=imagenet and color_jitter are for 3-channel colour images")
        if self.normalize == "fixed" and not (len(self.mean) == len(self.std) == self.channels):
            raise ValueError(
                f"{key}: normalize=fixed needs mean and std with one value per channel ({self.channels}), "
                f"got mean={list(self.mean)} std={list(self.std)}"
            )
        if self.normalize == "fixed" and min(self.std) <= 0:
            raise ValueError(f"{key}.std={list(self.std)}; expected positive values")
        bad = [c for c in self.flip_negates if not 0 <= c < self.channels]
        if bad:
            raise ValueError(f"{key}.flip_negates={list(self.flip_negates)}: no channel {bad[0]}")

    @property
    def is_class_map(self) -> bool:
        return self.kind == "class_map"

    @property
    def extensions(self) -> tuple[str, ...]:
        return FORMATS[self.format]


BUILTIN: dict[str, Modality] = {
    "rgb": Modality("rgb", channels=3, format="jpg", scale=255, normalize="imagenet", color_jitter=True),
    "depth": Modality("depth", format="png16", scale=1000, normalize="standardize", loss="l1"),
    "semseg": Modality("semseg", kind="class_map", stride=4, loss="cross_entropy"),
    # Surface normals as Omnidata stores them: unit vectors in 8-bit RGB, (n + 1) / 2 * 255.
    "normals": Modality(
        "normals",
        channels=3,
        format="png8",
        scale=255,
        normalize="fixed",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        loss="l1",
        flip_negates=(0,),
    ),
}

# Output-only targets derived from an input modality: MultiMAE's extra patch-normalized rgb.
DERIVED_TARGETS: dict[str, str] = {"norm_rgb": "rgb"}


def declare(name: str, declaration: Mapping) -> Modality:
    """The record of a declared modality: a built-in's fields changed by the declaration's, or a new one.
    A built-in declared with another normalization leaves its fixed mean and std behind."""
    if not isinstance(declaration, Mapping):
        raise ValueError(
            f"modalities.{name}={declaration!r}; expected a mapping of its keys, e.g. "
            "{channels: 2, format: npy} ({} keeps a built-in as it is)"
        )
    names = {f.name for f in fields(Modality)} - {"name"}
    unknown = set(declaration) - names
    if unknown:
        raise ValueError(
            f"modalities.{name}: unknown keys {sorted(unknown)}; expected some of {', '.join(sorted(names))}"
        )
    if name in DERIVED_TARGETS:
        raise ValueError(f"modalities.{name}: {name} is derived from {DERIVED_TARGETS[name]}, not declared")
    if name not in BUILTIN:
        return Modality(name, **declaration)
    statistics = {} if declaration.get("normalize", "fixed") == "fixed" else {"mean": (), "std": ()}
    return replace(BUILTIN[name], **{**statistics, **declaration})


def declaration(modality: Modality) -> dict:
    """A record as the plain mapping `declare` takes back (what configs and checkpoints store)."""
    return {f.name: getattr(modality, f.name) for f in fields(Modality) if f.name != "name"}


def get_modality(name: str, declared: Mapping[str, Modality] | None = None) -> Modality:
    """The modality called `name`: declared, else built in (an output such as norm_rgb maps to its source)."""
    table = {**BUILTIN, **(declared or {})}
    source = DERIVED_TARGETS.get(name, name)
    if source not in table:
        known = ", ".join([*table, *DERIVED_TARGETS])
        raise ValueError(
            f"unknown modality {name!r}; expected one of: {known} (declare others in the modalities: section)"
        )
    return table[source]


def output_loss(name: str, declared: Mapping[str, Modality] | None = None) -> str:
    """The reconstruction loss of output `name`: its modality's, norm_mse for derived targets."""
    return "norm_mse" if name in DERIVED_TARGETS else get_modality(name, declared).loss


def resolve(modalities: Iterable[str | Modality] | Mapping[str, Modality]) -> dict[str, Modality]:
    """{name: record} of modalities given as records or built-in names (or already as {name: record});
    distinct and non-empty."""
    if isinstance(modalities, Mapping):
        modalities = modalities.values()
    records = [get_modality(m) if isinstance(m, str) else m for m in modalities]
    names = [record.name for record in records]
    if not records or len(set(names)) != len(names):
        raise ValueError(f"modalities must be distinct and at least one, got {names}")
    return dict(zip(names, records, strict=True))


def declare_all(declarations: Mapping[str, Mapping]) -> dict[str, Modality]:
    """The records of a config's `modalities:` section."""
    if not isinstance(declarations, Mapping):
        raise ValueError(f"modalities={declarations!r}; expected a mapping of modality names to declarations")
    return {name: declare(name, values) for name, values in declarations.items()}
