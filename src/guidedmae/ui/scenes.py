"""The page's question over many images: on the first N held-out synthetic scenes, does each side mask
objects more than chance, and does the model attend to them (the premise)?

    table = across_scenes(demo, Budget(32), StrategyChoice("attention-high"), StrategyChoice("random"), 200)
    table.rows["left: masked tokens on objects"].mean, .interval, .chance

Each scene gets its own Dirichlet draw of the seed (shared by both sides, as on one image) and the same
strategies, masks and object tokens as `Demo.compare`; scenes with no object token in view are left out
(the premise is undefined there), as pretraining's premise leaves them out. Every number is a mean over
scenes with a 95 % Student-t interval, beside what a choice blind to objects scores (chance: the objects'
share of the tokens) and the paired difference to it, with its interval.
"""

from dataclasses import dataclass

import torch
from scipy import stats

from guidedmae.metrics import object_auc, top_attended_object_share
from guidedmae.ui.demo import SCENES, Budget, Demo, StrategyChoice

__all__ = ["MAX_SCENES", "SceneSet", "SceneTable", "Summary", "across_scenes", "per_scene"]

MAX_SCENES = 1000  # scenes per request: on the demo model 200 take about 4 s on one core, 1000 about 20 s


@dataclass
class SceneSet:
    """The scenes with objects in view, as both sides saw them."""

    on_object: torch.Tensor  # [B, N] bool: tokens on objects
    attention: dict[str, torch.Tensor]  # {modality: [B, N]} the global token's attention
    masks: dict[str, dict[str, torch.Tensor]]  # {side: {modality: [B, N] bool, True = masked}}


def _masked_on_objects(masks: dict[str, torch.Tensor], on_object: torch.Tensor) -> torch.Tensor:
    """[B] share of each scene's masked tokens, over all given modalities, that lie on objects."""
    masked = torch.stack(list(masks.values()))  # [M, B, N]
    return (masked & on_object).sum(dim=(0, 2)) / masked.sum(dim=(0, 2)).clamp_min(1)


def per_scene(scenes: SceneSet) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The table's rows: {name: (the number of each scene [B], what a choice blind to objects scores [B])}.
    A further per-scene number is one more line here."""
    chance = scenes.on_object.double().mean(dim=1)
    rows = {
        f"{side}: masked tokens on objects": (_masked_on_objects(masks, scenes.on_object), chance)
        for side, masks in scenes.masks.items()
    }
    for name, scores in scenes.attention.items():
        rows[f"premise, {name}: most attended tokens on objects"] = (
            top_attended_object_share(scores.float(), scenes.on_object),
            chance,
        )
        rows[f"premise, {name}: attention AUC for object tokens"] = (
            object_auc(scores.float(), scenes.on_object),
            torch.full_like(chance, 0.5),
        )
    # The null a premise must beat: ranking tokens by how often their position is an object in these scenes.
    position = scenes.on_object.double().mean(dim=0).expand_as(scenes.on_object)
    rows["position alone: most object-frequent positions on objects"] = (
        top_attended_object_share(position, scenes.on_object),
        chance,
    )
    return rows


@dataclass
class Summary:
    mean: float
    interval: tuple[float, float]  # 95 % Student-t interval of the mean
    chance: float  # the mean of what a choice blind to objects scores
    above_chance: tuple[float, float]  # 95 % interval of the mean paired difference to chance


@dataclass
class SceneTable:
    scenes: int  # scenes asked for: held-out scenes 0..scenes-1
    with_objects: int  # those with an object token in view, which the rows are over
    sides: tuple[str, str]  # each side's strategy as it describes itself
    rows: dict[str, Summary]


def _interval(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std().item() / len(values) ** 0.5
    return values.mean().item() - half, values.mean().item() + half


def _summary(values: torch.Tensor, chance: torch.Tensor) -> Summary:
    values, chance = values.double(), chance.double()
    return Summary(values.mean().item(), _interval(values), chance.mean().item(), _interval(values - chance))


@torch.no_grad()
def across_scenes(
    demo: Demo, budget: Budget, left: StrategyChoice, right: StrategyChoice, scenes: int
) -> SceneTable:
    """Both strategies on held-out scenes 0..scenes-1, each scene with its own draw of the budget."""
    if not 1 <= scenes <= min(MAX_SCENES, SCENES):
        raise ValueError(f"{scenes} scenes; expected 1..{min(MAX_SCENES, SCENES)}")
    modalities = list(demo.model.config.inputs)
    if "semseg" not in modalities:
        raise ValueError("the model takes no semseg input, which tells the scenes' objects apart")
    strategies = {"left": demo.strategy(left), "right": demo.strategy(right)}
    counts = demo.visible_counts(budget, modalities, scenes)  # [scenes, M]
    parts = []
    # In the held-out evaluation's batches: its memory bound, and the same sums as pretraining's premise
    # (an untrained model's near-equal attention then ranks the same tokens first).
    chunk = demo.config.eval.batch_size or demo.config.data.batch_size
    for start in range(0, scenes, chunk):
        numbers = range(start, min(start + chunk, scenes))
        images = [demo.scene(number).tensors for number in numbers]
        batch = {name: torch.stack([image[name] for image in images]).to(demo.device) for name in modalities}
        tokens = demo.model.tokenize(batch)
        on_object = demo.object_tokens(batch["semseg"])
        masks = {
            side: demo.choose(
                strategy, tokens, counts[numbers.start : numbers.stop], budget.seed + start
            ).selection.masks
            for side, strategy in strategies.items()
        }
        seen = on_object.any(dim=1)
        parts.append(
            SceneSet(
                on_object[seen],
                {name: scores[seen] for name, scores in demo.model.attention_scores(tokens).items()},
                {side: {name: mask[seen] for name, mask in chosen.items()} for side, chosen in masks.items()},
            )
        )
    if not any(len(part.on_object) for part in parts):
        raise ValueError(
            f"none of held-out scenes 0..{scenes - 1} has an object token in view; take more scenes"
        )
    joined = SceneSet(
        torch.cat([part.on_object for part in parts]),
        {name: torch.cat([part.attention[name] for part in parts]) for name in modalities},
        {
            side: {name: torch.cat([part.masks[side][name] for part in parts]) for name in modalities}
            for side in strategies
        },
    )
    rows = {name: _summary(values, chance) for name, (values, chance) in per_scene(joined).items()}
    left_side, right_side = (strategy.describe() for strategy in strategies.values())
    return SceneTable(scenes, len(joined.on_object), (left_side, right_side), rows)
