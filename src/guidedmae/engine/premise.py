"""The method's premise, measured on held-out images whose class maps say where the objects are (the
synthetic scenes'): does attention find the objects, against the right nulls, and what does masking hide?

    premise/<modality>        share of each image's R most attended tokens on objects (R = its object
                              tokens): 1 = attention ranks every object token first
    premise/auc_<modality>    the attention's AUC as a detector of object tokens (0.5 = chance)
    premise/chance            the objects' share of the tokens: what a ranking blind to objects scores
    premise/position          the best ranking by position alone: tokens ordered by how often their
                              position is an object token in these very images (objects sit mid-image, so
                              this is well above chance, and a premise below it is no evidence)
    premise/init_<modality>   the premise of the same architecture with random weights (what attention
                              finds with nothing learned), computed once per run
    eval_<masks>/hidden_objects_<modality>   the share of the object tokens a strategy's masks hide
                              (own: the run's; random and block at the same budget: the references)

Every value is a mean over the images with object tokens (AUC: with tokens of both kinds).
"""

import torch

from guidedmae.config import PretrainConfig
from guidedmae.data.datasets import SizedDataset
from guidedmae.data.sources import get_source
from guidedmae.engine.evaluate import shard_loader
from guidedmae.infra.distributed import DistributedContext, all_gather_objects
from guidedmae.infra.precision import autocast
from guidedmae.metrics import hidden_object_share, object_auc, object_tokens, top_attended_object_share
from guidedmae.models.multimae import MultiMAE

__all__ = ["hidden_object_shares", "object_class_ids", "premise_measures", "scene_object_tokens"]


def object_class_ids(config: PretrainConfig) -> torch.Tensor | None:
    """The semseg ids of the data's object classes (the synthetic scenes' shapes), or None where the data
    source names none (or the model reads no semseg)."""
    source = get_source(config.data.source)
    names = source.class_names(config.data).get("semseg")
    used = (*config.model.inputs, *config.model.outputs)
    if not source.object_classes or not names or "semseg" not in used:
        return None
    return torch.tensor([names.index(name) for name in source.object_classes])


def scene_object_tokens(semseg: torch.Tensor, grid: tuple[int, int], classes: torch.Tensor) -> torch.Tensor:
    """Which tokens lie on objects: semseg [B, H, W] class ids -> bool [B, rows * cols]."""
    return object_tokens(semseg, grid, classes)


def hidden_object_shares(
    masks: dict[str, torch.Tensor], semseg: torch.Tensor, grid: tuple[int, int], classes: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per modality, [B] the share of each image's object tokens its mask hides (NaN without objects)."""
    on_object = scene_object_tokens(semseg, grid, classes)
    return {f"hidden_objects_{name}": hidden_object_share(mask, on_object) for name, mask in masks.items()}


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return kept.mean().item() if len(kept) else float("nan")


@torch.no_grad()
def _scores_and_objects(
    model: MultiMAE,
    dataset: SizedDataset,
    config: PretrainConfig,
    context: DistributedContext,
    classes: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every held-out image's attention scores per modality [n, N] and object tokens [n, N] (every
    process's share gathered, on the CPU)."""
    was_training = model.training
    model.eval()
    scores: dict[str, list[torch.Tensor]] = {}
    objects = []
    for batch in shard_loader(dataset, config.eval.batch_size or config.data.batch_size, 0, context):
        batch = {name: value.to(context.device) for name, value in batch.items()}
        with autocast(context.device, config.run.precision):
            tokens = model.tokenize({name: batch[name] for name in model.config.inputs})
            batch_scores = model.attention_scores(tokens)
        objects.append(scene_object_tokens(batch["semseg"], tokens.grid, classes).cpu())
        for name, value in batch_scores.items():
            scores.setdefault(name, []).append(value.float().cpu())
    model.train(was_training)
    parts = all_gather_objects(
        context, ({name: torch.cat(v) for name, v in scores.items()}, torch.cat(objects))
    )
    return {name: torch.cat([part[0][name] for part in parts]) for name in scores}, torch.cat(
        [p[1] for p in parts]
    )


def premise_measures(
    model: MultiMAE,
    dataset: SizedDataset,
    config: PretrainConfig,
    context: DistributedContext,
    classes: torch.Tensor,
    baselines: bool = True,
) -> dict[str, float]:
    """The premise of `model` on the held-out images (see the module docstring): per modality its top
    share and AUC; with baselines, chance and the best positional ranking too."""
    scores, on_object = _scores_and_objects(model, dataset, config, context, classes)
    values = {}
    for name, score in scores.items():
        values[name] = _nanmean(top_attended_object_share(score, on_object))
        values[f"auc_{name}"] = _nanmean(object_auc(score, on_object))
    if baselines:
        seen = on_object.any(dim=1)
        values["chance"] = on_object.double().mean(dim=1)[seen].mean().item() if seen.any() else float("nan")
        prior = on_object.double().mean(dim=0).expand_as(on_object)  # how often each position is an object
        values["position"] = _nanmean(top_attended_object_share(prior, on_object))
    return values


def random_init_premise(
    config: PretrainConfig, dataset: SizedDataset, context: DistributedContext, classes: torch.Tensor
) -> dict[str, float]:
    """premise/init_<modality>: the premise of the run's architecture with random weights (seeded by the
    run's seed, drawn aside so that the run's own random streams are untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MultiMAE(config.model.architecture(config.modalities)).to(context.device)
    values = premise_measures(model, dataset, config, context, classes, baselines=False)
    return {f"init_{name}": value for name, value in values.items() if not name.startswith("auc_")}
