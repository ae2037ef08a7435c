"""Pretraining: `guidedmae pretrain CONFIG [key=value ...]`, alone or under torchrun.

What is pretraining's own; the runner (guidedmae.engine.fit) does the rest:
    model    = MultiMAE(config.model)                            model.init: official or own weights
    strategy = build_strategy(config.masking, ...)                saved beside the model, own param group
    step     = MaskedAutoencoderStep(model, strategy, loss)       the whole forward; DDP wraps it
    dataset  = synthetic scenes or the MultiMAE folder layout
    pictures of a fixed batch every log.picture_every steps and at the end (rank 0)
    held-out evaluation every eval.every steps and at the end: the reconstruction losses under fixed
    random masks, fixed block masks (neutral: no run trains on them) and the run's own strategy; on the
    synthetic scenes also the premise (how often the most attended tokens lie on objects)
"""

from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset, default_collate

from guidedmae.config import PretrainConfig
from guidedmae.data.modalities import Modality
from guidedmae.data.scenes import FIRST_SHAPE_CLASS, NUM_SEMSEG_CLASSES
from guidedmae.data.seeding import derived_generator
from guidedmae.data.sources import ClassIds, build_dataset
from guidedmae.engine.evaluate import shard_loader
from guidedmae.engine.fit import fit
from guidedmae.engine.job import Job, JobParts, LoopState, RunResult, Training
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.distributed import DistributedContext, all_reduce_sum
from guidedmae.infra.optim import param_groups
from guidedmae.infra.precision import autocast
from guidedmae.infra.run_log import RunLogger
from guidedmae.masking.config import MaskingConfig, build_strategy
from guidedmae.metrics import object_tokens, top_attended_object_share
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.pretrained import InitReport, load_pretrained
from guidedmae.pictures import reconstruction_figure, save_png

__all__ = [
    "PICTURES",
    "PretrainJob",
    "pretraining_set",
    "picture_batch",
    "pretrain",
    "save_reconstruction",
    "scene_object_tokens",
]

PICTURES = "pictures"
PICTURE_STREAM = 3  # derived_generator(seed, 0, PICTURE_STREAM): the masks of every picture
STRATEGY_KEY = "strategy"  # the strategy's state in checkpoints, beside "model"


def data_modalities(model: MultiMAEConfig) -> list[Modality]:
    """The modalities a batch must hold: the model's inputs and the sources of its outputs."""
    names = dict.fromkeys(model.modality(name).name for name in (*model.inputs, *model.outputs))
    return [model.modality(name) for name in names]


def pretraining_set(config: PretrainConfig, held_out: bool = False) -> Dataset:
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
        else Subset(dataset, range(min(config.eval.num_samples, len(dataset))))
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
        step.model.modalities,
    )
    return save_png(image, path)


def _picture_path(out_dir: Path, step: int) -> Path:
    return out_dir / PICTURES / f"step-{step:08d}.png"


class PretrainJob(Job):
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

    def _evaluate(self, training: Training, state: LoopState, logger: RunLogger) -> dict[str, float]:
        """The held-out losses under the fixed random and block masks and the run's own strategy, and the
        premise on synthetic scenes (every rank)."""
        progress = training.schedule.progress(min(state.step, training.schedule.run_steps - 1))
        values = {}
        for name, step in self.eval_steps.items():
            losses = held_out_losses(step, self.held_out, self.config, training.context, progress)
            values.update({f"eval_{name}/{key}": value for key, value in losses.items()})
        if self.config.data.source == "synthetic" and "semseg" in self.held_out.modalities:
            premise = premise_shares(self.step.model, self.held_out, self.config, training.context)
            values.update({f"premise/{key}": value for key, value in premise.items()})
        logger.scalars(state.step, values)
        shown = ", ".join(f"{key} {value:.4g}" for key, value in values.items() if key.endswith("/loss"))
        logger.event(
            "eval",
            f"step {state.step}, {len(self.held_out)} held-out samples: {shown}",
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
            self._evaluate(training, state, logger)

    def finish(self, training: Training, state: LoopState, logger: RunLogger) -> dict:
        self._picture(training, state.step, logger)
        if self.held_out is None:
            return {}
        return {"task": "pretraining", "metrics": self._evaluate(training, state, logger)}


@torch.no_grad()
def held_out_losses(
    step: MaskedAutoencoderStep,
    dataset: Dataset,
    config: PretrainConfig,
    context: DistributedContext,
    progress,
) -> dict[str, float]:
    """Mean reconstruction losses over a held-out split ({"loss": total, "loss_<output>": ...}), every
    process its share (summed over processes), masks drawn from a generator seeded eval.mask_seed.
    The samples' indices stay out of the batch: a strategy that remembers training samples has not
    seen these."""
    was_training = step.training
    step.eval()
    generator = torch.Generator().manual_seed(config.eval.mask_seed)
    sums, count = None, 0
    for batch in shard_loader(dataset, config.eval.batch_size or config.data.batch_size, 0, context):
        batch = {name: value.to(context.device) for name, value in batch.items() if name != "index"}
        with autocast(context.device, config.run.precision):
            losses = step(batch, generator, progress).losses
        values = torch.stack([losses["total"], *(value for name, value in losses.items() if name != "total")])
        size = len(next(iter(batch.values())))
        sums = values.detach().double() * size if sums is None else sums + values.detach().double() * size
        count += size
        names = ["loss", *(f"loss_{name}" for name in losses if name != "total")]
    totals = torch.cat([sums, torch.tensor([count], dtype=torch.float64, device=sums.device)])
    totals = all_reduce_sum(context, totals)
    step.train(was_training)
    return dict(zip(names, (totals[:-1] / totals[-1]).tolist()))


def scene_object_tokens(semseg: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which tokens of synthetic scenes lie on objects (not background, floor or wall): semseg [B, H, W]
    scene class ids -> bool [B, rows * cols]."""
    return object_tokens(semseg, grid, torch.arange(FIRST_SHAPE_CLASS, NUM_SEMSEG_CLASSES))


@torch.no_grad()
def premise_shares(
    model: MultiMAE, dataset: Dataset, config: PretrainConfig, context: DistributedContext
) -> dict[str, float]:
    """The method's premise, measured on held-out synthetic scenes: per input modality, the share of each
    image's R most attended tokens (R = its object tokens) that lie on objects, and `chance`: the objects'
    share of the tokens, which a ranking blind to objects scores. Means over images with an object token."""
    was_training = model.training
    model.eval()
    sums = None
    for batch in shard_loader(dataset, config.eval.batch_size or config.data.batch_size, 0, context):
        batch = {name: value.to(context.device) for name, value in batch.items()}
        with autocast(context.device, config.run.precision):
            tokens = model.tokenize({name: batch[name] for name in model.config.inputs})
            scores = model.attention_scores(tokens)
        on_object = scene_object_tokens(batch["semseg"], tokens.grid)
        seen = on_object.any(dim=1)
        shares = [top_attended_object_share(scores[name].float(), on_object)[seen].sum() for name in scores]
        chance = on_object.double().mean(dim=1)[seen].sum()
        values = torch.stack([*shares, chance, seen.sum().double()])
        sums = values if sums is None else sums + values
    sums = all_reduce_sum(context, sums)
    model.train(was_training)
    names = [*tokens.modalities, "chance"]
    return {name: (value / sums[-1]).item() for name, value in zip(names, sums[:-1])}


def pretrain(config: PretrainConfig) -> RunResult:
    """Run (or resume) a pretraining; returns where its outputs are."""
    return fit(PretrainJob(config))
