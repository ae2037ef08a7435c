"""What a checkpoint offers the `guidedmae ui` page: the strategies it can be shown with (and why not the
others), what it was trained on, and the names of its semseg classes."""

from dataclasses import dataclass, replace

from guidedmae.config import PretrainConfig
from guidedmae.data.scenes import SEMSEG_CLASSES
from guidedmae.engine.from_checkpoint import load_strategy_state
from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.masking import MaskingConfig, build_strategy, strategy_variants
from guidedmae.masking.config import CurriculumConfig
from guidedmae.models.multimae import MultiMAE

__all__ = ["RUN_PREFIX", "StrategyMenu", "class_names", "strategy_menu", "trained_on"]

RUN_PREFIX = "this run: "  # the menu row of the checkpoint's own strategy, where no other row is it


@dataclass
class StrategyMenu:
    strategies: dict[str, MaskingConfig]  # {row: its config}, the rows that can be shown on one image
    labels: dict[str, str]  # {row: the menu's text}: the row, marked where it is the run's own strategy
    excluded: dict[str, str]  # {row: why it cannot be shown on one image}


def _unavailable(masking: MaskingConfig, model: MultiMAE, checkpoint: dict, path: str) -> str | None:
    """Why a strategy cannot be shown on one image, or None when it can."""
    one, two = (build_strategy(masking, model.config, samples).state_dict() for samples in (1, 2))
    # A state that grows with the training set is a memory of its samples by index (loss memory, cached
    # attention): an image from elsewhere gets the strategy's fallback (random masking, exact attention).
    if any(one[key].shape != two[key].shape for key in one):
        return (
            "remembers each training sample by its index; an image outside the training set gets its fallback"
        )
    if not one:
        return None
    run = checkpoint.get("config", {}).get("masking", {}).get("strategy")
    if run != masking.strategy:
        trained = (
            f"this checkpoint's run masked with {run}" if run else "an official MultiMAE file holds none"
        )
        return f"learns during pretraining; only a checkpoint of a run that masked with it holds what it learned ({trained})"
    try:
        load_strategy_state(build_strategy(masking, model.config, 1), checkpoint, path)
    except CheckpointError as error:
        return str(error)
    return None


def _ranking(masking: MaskingConfig) -> tuple:
    """The keys that decide which tokens a strategy hides (how many is the page's budget)."""
    return masking.strategy, getattr(masking, masking.strategy, None), masking.sampling, masking.temperature


def trained_on(config: PretrainConfig, official: bool) -> str:
    """What the checkpoint was trained on, in a few words: its image size and data."""
    size = f"{config.model.image_size}x{config.model.image_size}-pixel"
    if official:
        return f"{size} ImageNet-1K photos with pseudo-labelled depth and COCO semseg (an official MultiMAE file)"
    data = config.data
    if data.source == "synthetic":
        what = f"synthetic scenes ({data.num_samples} rooms, 1 to 5 objects each)"
    else:
        what = f"{data.source} data at {data.root} (split {data.split})"
    return f"{size} {what}"


def class_names(config: PretrainConfig, official: bool) -> list[str]:
    """The semseg classes' names by id where the run learned the synthetic scenes' classes; [] otherwise
    (the page then shows class ids)."""
    synthetic = config.data.source == "synthetic" and config.model.semseg_classes == len(SEMSEG_CLASSES)
    return list(SEMSEG_CLASSES) if synthetic and not official else []


def strategy_menu(config: PretrainConfig, model: MultiMAE, checkpoint: dict, path: str) -> StrategyMenu:
    """Every registered strategy's variants (bench's rows) and the run's own strategy: one row, marked as
    the run's where a variant ranks tokens as it does, else a row of its own first."""
    rows = strategy_variants(MaskingConfig(), model.config)
    labels = {row: row for row in rows}
    if "config" in checkpoint:  # a run of ours, not an official file
        # Training-time wrappers stay out: a curriculum at step 0, or a share of images masked at
        # random, would hide the strategy itself.
        own = replace(config.masking, curriculum=CurriculumConfig(), random_images=0.0)
        same = [row for row, masking in rows.items() if _ranking(masking) == _ranking(own)]
        if same:
            labels[same[0]] = f"{same[0]} (this run's)"
        else:
            row = RUN_PREFIX + build_strategy(own, model.config, 1).describe()
            rows, labels = {row: own, **rows}, {row: row, **labels}
    reasons = {row: _unavailable(masking, model, checkpoint, path) for row, masking in rows.items()}
    return StrategyMenu(
        {row: masking for row, masking in rows.items() if reasons[row] is None},
        {row: label for row, label in labels.items() if reasons[row] is None},
        {row: reason for row, reason in reasons.items() if reason is not None},
    )
