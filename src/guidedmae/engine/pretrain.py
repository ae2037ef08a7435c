"""Pretraining: `guidedmae pretrain CONFIG [key=value ...]`, alone or under torchrun.

What is pretraining's own; the runner (engine.run) does the rest:
    model    = MultiMAE(config.model)                            model.init: official or own weights
    strategy = build_strategy(config.masking, ...)                saved beside the model, own param group
    step     = MaskedAutoencoderStep(model, strategy, loss)       the whole forward; DDP wraps it
    dataset  = synthetic scenes or the MultiMAE folder layout
    pictures of a fixed batch every log.picture_every steps and at the end (rank 0)
"""

from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from guidedmae.config import PretrainConfig
from guidedmae.data.datasets import FolderDataset, SyntheticScenes, derived_generator
from guidedmae.data.modalities import DERIVED_TARGETS
from guidedmae.engine.distributed import DistributedContext
from guidedmae.engine.logging import RunLogger
from guidedmae.engine.loop import LoopState, TrainingJob
from guidedmae.engine.optim import param_groups
from guidedmae.engine.precision import autocast
from guidedmae.engine.run import Job, JobParts, RunResult, run_job
from guidedmae.engine.step import MaskedAutoencoderStep
from guidedmae.masking.config import build_strategy
from guidedmae.models.multimae import MultiMAE, MultiMAEConfig
from guidedmae.models.pretrained import InitReport, load_pretrained
from guidedmae.viz import reconstruction_figure, save_png

__all__ = ["PICTURES", "PretrainJob", "build_dataset", "picture_batch", "pretrain", "save_reconstruction"]

PICTURES = "pictures"
PICTURE_STREAM = 3  # derived_generator(seed, 0, PICTURE_STREAM): the masks of every picture
STRATEGY_KEY = "strategy"  # the strategy's state in checkpoints, beside "model"


def data_modalities(model: MultiMAEConfig) -> tuple[str, ...]:
    """The modalities a batch must hold: the model's inputs and the sources of its outputs."""
    return tuple(dict.fromkeys([*model.inputs, *(DERIVED_TARGETS.get(name, name) for name in model.outputs)]))


def build_dataset(config: PretrainConfig) -> Dataset:
    """The pretraining data set of `config.data`, yielding the modalities the model needs."""
    data, modalities = config.data, data_modalities(config.model)
    if data.source == "synthetic":
        return SyntheticScenes(
            data.num_samples, data.render_size or data.augment.size, config.seed, modalities, data.augment
        )
    # Every semseg id must index the model's class embedding (inputs) and logits (outputs).
    return FolderDataset(
        data.root,
        data.split,
        modalities,
        data.augment,
        on_error=data.on_error,
        seed=config.seed,
        semseg_classes=config.model.semseg_classes,
    )


def picture_batch(dataset: Dataset, samples: int) -> dict[str, torch.Tensor]:
    """The first `samples` samples of the data set (epoch-0 augmentation): the same in every picture."""
    return default_collate([dataset[index] for index in range(min(samples, len(dataset)))])


@torch.no_grad()
def save_reconstruction(
    step: MaskedAutoencoderStep, batch: dict[str, torch.Tensor], config: PretrainConfig, path: Path
) -> Path:
    """Inputs, masks and reconstructions of `batch` under the run's masking strategy, as a PNG.

    The masks come from a generator reset to the same seed each time, so successive pictures show
    the same masks and only the reconstructions change.
    """
    device = next(step.parameters()).device
    was_training = step.training
    step.eval()
    with autocast(device, config.run.precision):
        output = step(
            {name: value.to(device) for name, value in batch.items()},
            derived_generator(config.seed, 0, PICTURE_STREAM),
        )
    step.train(was_training)
    image = reconstruction_figure(
        batch,
        output.choice,
        output.preds,
        config.log.picture_samples,
        step.model.config.patch_size,
        step.strategy.score_label,
    )
    return save_png(image, path)


def _picture_path(out_dir: Path, step: int) -> Path:
    return out_dir / PICTURES / f"step-{step:08d}.png"


class PretrainJob(Job):
    kind = "pretraining"
    config: PretrainConfig

    def build(self, context: DistributedContext) -> JobParts:
        config = self.config
        model = MultiMAE(config.model.architecture())
        dataset = build_dataset(config)
        strategy = build_strategy(config.masking, model.config, len(dataset), context)
        self.step = MaskedAutoencoderStep(model, strategy, config.loss)
        groups = param_groups(model, config.optim.weight_decay)
        groups += [
            {**group, "name": STRATEGY_KEY} for group in param_groups(strategy, config.optim.weight_decay)
        ]
        self.pictures = picture_batch(dataset, config.log.picture_samples)
        return JobParts(
            model=model,
            step=self.step,
            dataset=dataset,
            param_groups=[group for group in groups if group["params"]],
            saved={STRATEGY_KEY: strategy},
        )

    def initialize(self, model: MultiMAE, path: str) -> InitReport:
        return load_pretrained(model, path)

    def describe(self, training: TrainingJob) -> str:
        strategy = self.step.strategy.describe()
        return f"{strategy} masking, {self.config.masking.num_visible} visible tokens"

    def _picture(self, training: TrainingJob, step: int) -> None:
        path = _picture_path(training.out_dir, step)
        if training.context.is_main and not path.is_file():
            save_reconstruction(self.step, self.pictures, self.config, path)

    def after_step(self, training: TrainingJob, state: LoopState, logger: RunLogger) -> None:
        every = self.config.log.picture_every
        if every and state.step % every == 0:
            self._picture(training, state.step)

    def finish(self, training: TrainingJob, state: LoopState, logger: RunLogger) -> dict:
        self._picture(training, state.step)
        return {}


def pretrain(config: PretrainConfig) -> RunResult:
    """Run (or resume) a pretraining; returns where its outputs are."""
    return run_job(PretrainJob(config))
