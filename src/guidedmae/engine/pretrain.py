"""Pretraining: `guidedmae pretrain CONFIG [key=value ...]`, alone or under torchrun.

What is pretraining's own; the runner (guidedmae.engine.fit) does the rest:
    model    = MultiMAE(config.model)                            model.init: official or own weights
    strategy = build_strategy(config.masking, ...)                saved beside the model, own param group
    step     = MaskedAutoencoderStep(model, strategy, loss)       the whole forward; DDP wraps it
    dataset  = synthetic scenes or the MultiMAE folder layout
    pictures of a fixed batch every log.picture_every steps and at the end (rank 0)
    held-out evaluation every eval.every steps and at the end: the reconstruction losses under fixed
    random masks, fixed block masks (neutral: no run trains on them) and the run's own strategy; where the
    data names its object classes (the synthetic scenes) also the premise and the share of the object
    tokens each kind of mask hides (guidedmae.engine.premise)
"""

from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import default_collate

from guidedmae.config import PretrainConfig
from guidedmae.data.datasets import EpochSubset, SizedDataset
from guidedmae.data.modalities import Modality
from guidedmae.data.seeding import derived_generator
from guidedmae.data.sources import ClassIds, build_dataset
from guidedmae.engine.evaluate import shard_loader
from guidedmae.engine.fit import fit
from guidedmae.engine.job import Job, JobParts, LoopState, RunResult, Training
from guidedmae.engine.premise import (
    hidden_object_shares,
    object_class_ids,
    premise_measures,
    random_init_premise,
)
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.distributed import DistributedContext, all_reduce_sum
from guidedmae.infra.optim import param_groups
from guidedmae.infra.precision import autocast
from guidedmae.infra.run_log import RunLogger
from guidedmae.infra.schedule import Progress
from guidedmae.masking.config import MaskingConfig, build_strategy
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.pretrained import InitReport, load_pretrained
from guidedmae.pictures import reconstruction_figure, save_png

__all__ = ["PICTURES", "PretrainJob", "picture_batch", "pretrain", "pretraining_set", "save_reconstruction"]

PICTURES = "pictures"
PICTURE_STREAM = 3  # derived_generator(seed, 0, PICTURE_STREAM): the masks of every picture
STRATEGY_KEY = "strategy"  # the strategy's state in checkpoints, beside "model"


def data_modalities(model: MultiMAEConfig) -> list[Modality]:
    """The modalities a batch must hold: the model's inputs and the sources of its outputs."""
    names = dict.fromkeys(model.modality(name).name for name in (*model.inputs, *model.outputs))
    return [model.modality(name) for name in names]


def pretraining_set(config: PretrainConfig, held_out: bool = False) -> SizedDataset:
    """The pretraining data set of `config.data`, yielding the modalities the model needs; held_out: the
    evaluation's (config.eval: its series or split, the first eval.num_samples, no augmentation)."""
    modalities = data_modalities(config.model.architecture(config.modalities))
    # Every semseg id must index the model's class embedding (inputs) and logits (outputs).
    class_ids = ClassIds(semseg_classes=config.model.semseg_classes)
    if not held_out:
        return build_dataset(
            config.data, config.data.split, modalities, train=True, seed=config.seed, class_ids=class_ids
        )
    data, split = config.data, config.eval.split
    if data.source == "synthetic":
        data = replace(data, num_samples=config.eval.num_samples, scene_seed=config.eval.scene_seed)
    elif not (Path(data.root) / split).is_dir():
        raise FileNotFoundError(
            f"no split folder {Path(data.root) / split} for the held-out evaluation; set "
            "eval.split to a split of data.root, or eval.num_samples=0 to evaluate nothing"
        )
    dataset = build_dataset(data, split, modalities, train=False, seed=config.seed, class_ids=class_ids)
    return (
        dataset
        if data.source == "synthetic"
        else EpochSubset(dataset, range(min(config.eval.num_samples, len(dataset))))
    )


def picture_batch(dataset: SizedDataset, samples: int) -> dict[str, torch.Tensor]:
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
        step.model.modalities,
    )
    return save_png(image, path)


def _picture_path(out_dir: Path, step: int) -> Path:
    return out_dir / PICTURES / f"step-{step:08d}.png"


class PretrainJob(Job[MultiMAE]):
    kind = "pretraining"
    config: PretrainConfig

    def build(self, context: DistributedContext) -> JobParts:
        config = self.config
        model = MultiMAE(config.model.architecture(config.modalities))
        dataset = pretraining_set(config)
        strategy = build_strategy(config.masking, model.config, len(dataset), context)
        self.step = MaskedAutoencoderStep(model, strategy, config.loss)
        groups = param_groups(model, config.optim.weight_decay)
        groups += [
            {**group, "name": STRATEGY_KEY, "lr_scale": strategy.lr_scale}
            for group in param_groups(strategy, config.optim.weight_decay)
        ]
        self.pictures = picture_batch(dataset, config.log.picture_samples)
        self.held_out = pretraining_set(config, held_out=True) if config.eval.num_samples else None
        # Every run is also scored on the same random and block masks, whatever its own strategy: random masks
        # are random masking's own objective, block masks no run's.
        self.eval_steps = {
            name: MaskedAutoencoderStep(
                model,
                build_strategy(
                    MaskingConfig(strategy=name, num_visible=config.masking.num_visible), model.config
                ),
                config.loss,
            )
            for name in ("random", "block")
        }
        self.eval_steps["own"] = self.step
        self.object_classes = object_class_ids(config) if self.held_out is not None else None
        self.init_premise: dict[str, float] | None = None  # the random-init encoder's, measured once
        return JobParts(
            model=model,
            step=self.step,
            dataset=dataset,
            param_groups=[group for group in groups if group["params"]],
            saved={STRATEGY_KEY: strategy},
            evaluation=self.held_out,
        )

    def initialize(self, model: MultiMAE, path: str) -> InitReport:
        return load_pretrained(model, path)

    def describe(self, training: Training) -> str:
        strategy = self.step.strategy.describe()
        return f"{strategy} masking, {self.config.masking.num_visible} visible tokens"

    def _picture(self, training: Training, step: int, logger: RunLogger) -> None:
        path = _picture_path(training.out_dir, step)
        if training.context.is_main and not path.is_file():
            logger.picture(save_reconstruction(self.step, self.pictures, self.config, path), step)

    def _evaluate(
        self, training: Training, state: LoopState, logger: RunLogger, held_out: SizedDataset
    ) -> dict[str, float]:
        """The held-out losses under the fixed random and block masks and the run's own strategy, and the
        premise on synthetic scenes (every rank)."""
        progress = training.schedule.progress(min(state.step, training.schedule.run_steps - 1))
        values, classes, context = {}, self.object_classes, training.context
        for name, step in self.eval_steps.items():
            losses = held_out_losses(step, held_out, self.config, context, progress, classes)
            values.update({f"eval_{name}/{key}": value for key, value in losses.items()})
        if classes is not None:
            if self.init_premise is None:
                self.init_premise = random_init_premise(self.config, held_out, context, classes)
            premise = {
                **premise_measures(self.step.model, held_out, self.config, context, classes),
                **self.init_premise,
            }
            values.update({f"premise/{key}": value for key, value in premise.items()})
        logger.scalars(state.step, values)
        shown = ", ".join(f"{key} {value:.4g}" for key, value in values.items() if key.endswith("/loss"))
        logger.event(
            "eval",
            f"step {state.step}, {len(held_out)} held-out samples: {shown}",
            step=state.step,
            **values,
        )
        return values

    def after_step(self, training: Training, state: LoopState, logger: RunLogger) -> None:
        every = self.config.log.picture_every
        if every and state.step % every == 0:
            self._picture(training, state.step, logger)
        every = self.config.eval.every
        last = state.step == training.schedule.run_steps
        if self.held_out is not None and every and state.step % every == 0 and not last:
            self._evaluate(training, state, logger, self.held_out)

    def finish(self, training: Training, state: LoopState, logger: RunLogger) -> dict:
        self._picture(training, state.step, logger)
        if self.held_out is None:
            return {}
        return {"task": "pretraining", "metrics": self._evaluate(training, state, logger, self.held_out)}


@torch.no_grad()
def held_out_losses(
    step: MaskedAutoencoderStep,
    dataset: SizedDataset,
    config: PretrainConfig,
    context: DistributedContext,
    progress: Progress,
    object_classes: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean reconstruction losses over a held-out split ({"loss": total, "loss_<output>": ...}), every
    process its share (summed over processes), masks drawn from a generator seeded eval.mask_seed; with
    object_classes, also the share of each modality's object tokens the masks hide (hidden_objects_<m>,
    over the images with objects). The samples' indices stay out of the batch: a strategy that remembers
    training samples has not seen these."""
    was_training = step.training
    step.eval()
    generator = torch.Generator().manual_seed(config.eval.mask_seed)
    grid = (step.model.config.grid_side,) * 2
    sums: dict[str, torch.Tensor] = {}  # name -> [sum, count]

    def add(name: str, values: torch.Tensor, skip_nan: bool = False) -> None:
        """Sum and count of values [B]; shares skip the NaN of images without objects, losses never."""
        values = values.double().flatten()
        kept = values[~values.isnan()] if skip_nan else values
        count = torch.tensor(float(len(kept)), dtype=torch.float64, device=kept.device)
        total = torch.stack([kept.sum(), count])
        sums[name] = total if name not in sums else sums[name] + total

    for batch in shard_loader(dataset, config.eval.batch_size or config.data.batch_size, 0, context):
        batch = {name: value.to(context.device) for name, value in batch.items() if name != "index"}
        with autocast(context.device, config.run.precision):
            output = step(batch, generator, progress)
        size = len(next(iter(batch.values())))
        for name, value in output.losses.items():
            add("loss" if name == "total" else f"loss_{name}", value.detach().expand(size))
        if object_classes is not None and "semseg" in batch:
            masks = output.choice.selection.masks
            for name, shares in hidden_object_shares(masks, batch["semseg"], grid, object_classes).items():
                add(name, shares, skip_nan=True)
    names = list(sums)
    totals = all_reduce_sum(context, torch.stack([sums[name] for name in names]))
    step.train(was_training)
    return {
        name: (total[0] / total[1]).item() if total[1] else float("nan") for name, total in zip(names, totals)
    }


def pretrain(config: PretrainConfig) -> RunResult:
    """Run (or resume) a pretraining; returns where its outputs are."""
    return fit(PretrainJob(config))
