"""What a modality is: its channels, its resolution relative to the image and its file format."""

from dataclasses import dataclass

# ImageNet statistics, used by MultiMAE for rgb inputs and targets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Class id of pixels that no loss or metric counts (MultiMAE's SEG_IGNORE_INDEX): unlabeled pixels,
# padding, ADE20K's "other" after reduce_zero_label.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Modality:
    name: str
    channels: int  # image channels; 0 for a class map (integer ids, embedded by the model)
    stride: int  # resolution divisor w.r.t. the image: MultiMAE feeds semseg at 1/4
    extensions: tuple[str, ...]  # accepted file types in the folder layout

    @property
    def is_class_map(self) -> bool:
        return self.channels == 0


MODALITIES: dict[str, Modality] = {
    "rgb": Modality("rgb", channels=3, stride=1, extensions=(".jpg", ".jpeg", ".png")),
    "depth": Modality("depth", channels=1, stride=1, extensions=(".png",)),
    "semseg": Modality("semseg", channels=0, stride=4, extensions=(".png",)),
}

# Output-only targets derived from an input modality: MultiMAE's extra patch-normalized rgb.
DERIVED_TARGETS: dict[str, str] = {"norm_rgb": "rgb"}


def get_modality(name: str) -> Modality:
    """The modality called `name` (an output name such as norm_rgb maps to its source)."""
    source = DERIVED_TARGETS.get(name, name)
    if source not in MODALITIES:
        known = ", ".join([*MODALITIES, *DERIVED_TARGETS])
        raise ValueError(f"unknown modality {name!r}; expected one of: {known}")
    return MODALITIES[source]
