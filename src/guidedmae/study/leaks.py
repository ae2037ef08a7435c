"""What a study's runs train and evaluate on, and the check that no evaluation scores training data.

    check_no_leak(runs)   # ValueError naming the runs, if any run evaluates on data any run trains on

A run's data is named by what identifies it: synthetic scenes by population and series (populations are
disjoint, whatever the seeds: guidedmae.data.scenes.scene_layout), stored data by source, root and split,
and also by the synthetic scenes its manifest lists where `guidedmae data synth` wrote it. Fine-tuning on a
fraction of a split counts as training on the split.
"""

from pathlib import Path

from guidedmae.config import FinetuneConfig, PretrainConfig
from guidedmae.data.scenes import HELD_OUT, TRAINING
from guidedmae.data.writers import read_manifest
from guidedmae.study.plan import Run

__all__ = ["check_no_leak", "data_footprint"]


def _stored(source: str, root: str, split: str) -> set[tuple]:
    """A split of stored data: (source, root, split), and ("synthetic", population, series) for every
    series of synthetic scenes its manifest lists."""
    folder = Path(root).resolve() / split
    scenes = {("synthetic", entry["population"], entry["series"]) for entry in read_manifest(folder)}
    return {(source, str(folder.parent), split), *scenes}


def data_footprint(config: PretrainConfig | FinetuneConfig) -> tuple[set[tuple], set[tuple]]:
    """(training, evaluation): the data a run's config trains on and evaluates on (its held-out
    evaluation, or a fine-tuning's evaluation split), as ("synthetic", population, series) or
    (source, root, split)."""
    data = config.data
    if data.source == "synthetic":
        training = {("synthetic", TRAINING, data.scene_seed)}
    else:
        training = _stored(data.source, data.root, data.split)
    if isinstance(config, FinetuneConfig):
        series, split = config.data.eval_scene_seed, config.data.eval_split
    elif config.eval.num_samples:
        series, split = config.eval.scene_seed, config.eval.split
    else:
        return training, set()
    if data.source == "synthetic":
        return training, {("synthetic", HELD_OUT, series)}
    return training, _stored(data.source, data.root, split)


def check_no_leak(runs: list[Run]) -> None:
    """Raise ValueError if a run evaluates on data that a run of the study (itself included) trains on."""
    trained_by: dict[tuple, str] = {}
    footprints = {run.name: data_footprint(run.resolved()) for run in runs}
    for name, (training, _) in footprints.items():
        for item in training:
            trained_by.setdefault(item, name)
    for name, (_, evaluation) in footprints.items():
        for item in evaluation & trained_by.keys():
            raise ValueError(
                f"{name} evaluates on {item}, which {trained_by[item]} trains on: the study would score "
                "training data; give the evaluation another split (or series of held-out scenes)"
            )
