"""An oracle that knows where the objects are: it hides the object tokens first (or last), reading the
batch's semseg. Not a method (nothing at training time knows the labels): the experiment that separates
"attention does not find the objects" from "hiding the objects does not help", by hiding exactly what
attention-guided masking means to hide.

A token's object share is the share of its patch of the class map that holds an object class; `select:
high` hides the tokens of the largest share first (ties in a random order), `low` the others first.
`share` < 1 lets the oracle choose only that share of each modality's masked tokens, the rest at random.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from guidedmae.data.scenes import FIRST_SHAPE_CLASS, NUM_SEMSEG_CLASSES
from guidedmae.masking.priority import generator_device, mix_with_random
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, register
from guidedmae.metrics import object_fraction
from guidedmae.models.architecture import MultiMAEConfig

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig


# The synthetic scenes' object classes (the shapes; not background, floor or wall): the default.
SCENE_OBJECT_CLASSES = tuple(range(FIRST_SHAPE_CLASS, NUM_SEMSEG_CLASSES))
TIE_BREAK = 1e-3  # below 1 / 256, the smallest step of an object share on a 16 x 16 patch


@dataclass
class ObjectsOptions:
    select: str = "high"  # high: the object tokens are hidden first | low: they are hidden last
    share: float = 1.0  # of each modality's masked tokens, the share the oracle chooses (the rest random)
    classes: list[int] = field(default_factory=list)  # semseg ids that are objects; [] = the scenes' shapes


@register("objects", ObjectsOptions)
class ObjectsMasking(MaskingStrategy):
    """Hides the tokens that lie on objects first (select=high) or last (low), from the batch's semseg."""

    options: ObjectsOptions

    score_label = "object share"

    @classmethod
    def check(cls, masking: "MaskingConfig", model: MultiMAEConfig) -> None:
        options: ObjectsOptions = masking.objects
        if options.select not in ("high", "low"):
            raise ValueError(f"masking.objects.select={options.select!r}; expected 'high' or 'low'")
        if not 0 <= options.share <= 1:
            raise ValueError(f"masking.objects.share={options.share}; expected a share in [0, 1]")
        if any(not 0 <= value < model.semseg_classes for value in options.classes):
            raise ValueError(
                f"masking.objects.classes={list(options.classes)}; expected semseg ids 0..{model.semseg_classes - 1}"
            )
        if masking.strategy == cls.name and "semseg" not in (*model.inputs, *model.outputs):
            raise ValueError(
                "masking.strategy=objects reads where the objects are from the batch's semseg: the model's "
                f"inputs {list(model.inputs)} or outputs {list(model.outputs)} must hold semseg"
            )

    @classmethod
    def variants(cls, model: MultiMAEConfig) -> dict[str, dict]:
        return {
            "objects-high": {"select": "high"},
            "objects-low": {"select": "low"},
            "objects-high-half": {"select": "high", "share": 0.5},
        }

    def describe(self) -> str:
        share = f"-share{self.options.share:g}" if self.options.share < 1 else ""
        return f"objects-{self.options.select}{share}"

    def propose(self, context: MaskingContext) -> Proposal:
        if context.class_map is None:
            raise ValueError(
                "masking.strategy=objects needs the batch's semseg class map; this batch has none"
            )
        tokens, generator = context.tokens, context.generator
        classes = torch.tensor(self.options.classes or SCENE_OBJECT_CLASSES)
        share = object_fraction(context.class_map, tokens.grid, classes)  # [B, N]
        sign = 1.0 if self.options.select == "high" else -1.0
        priorities, scores = {}, {}
        for name in tokens.modalities:
            noise = torch.rand(share.shape, generator=generator, device=generator_device(generator))
            priorities[name] = sign * share + TIE_BREAK * noise.to(share.device)
            scores[name] = share
        if self.options.share < 1:
            guided = torch.full((share.shape[0],), self.options.share, dtype=torch.float64)
            priorities = mix_with_random(priorities, context.visible_counts, guided, generator)
        device = tokens.embeddings.device
        return Proposal(
            {name: value.to(device) for name, value in priorities.items()},
            {name: value.to(device) for name, value in scores.items()},
        )
