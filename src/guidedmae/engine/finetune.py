"""Fine-tuning and linear probing: `guidedmae finetune CONFIG [key=value ...]`, alone or under torchrun.

What is fine-tuning's own; the runner (guidedmae.engine.fit) does the rest:
    model    = FineTuneModel(MultiMAE encoder, build_head(head), freeze_encoder)   linear probe: frozen
               model.init: ours or official pretraining weights (decoders dropped)
    step     = FinetuneStep(model, ...)      mixup / cutmix, task loss; DDP wraps it
    dataset  = the train split (a class-balanced seeded subset with data.fraction / data.per_class)
    groups   = AdamW groups with layer-wise lr decay (optim.layer_decay)
    evaluation every eval.every epochs and at the end; the last one is the run's scores (results.json)
`evaluate_checkpoint` scores a finished run's checkpoint again, on another split or mode if asked.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guidedmae.config import FinetuneConfig, load_config
from guidedmae.data.datasets import SizedDataset
from guidedmae.data.mixup import mix_batch
from guidedmae.data.sources import get_source
from guidedmae.engine.evaluate import evaluate
from guidedmae.engine.finetune_setup import build_model, evaluation_set, split_name, training_set
from guidedmae.engine.fit import fit
from guidedmae.engine.job import Job, JobParts, LoopState, RunResult, Training
from guidedmae.engine.knn import KnnJob
from guidedmae.infra.checkpoints import CheckpointError, build_to_fit, read_checkpoint, state_dict_of
from guidedmae.infra.distributed import (
    DistributedContext,
    close_distributed,
    init_distributed,
    threads_per_process,
)
from guidedmae.infra.optim import layer_decay_groups
from guidedmae.infra.run_log import RunLogger
from guidedmae.infra.schedule import START, Progress
from guidedmae.models.pretrained import InitReport, load_pretrained
from guidedmae.models.task_model import FineTuneModel

__all__ = ["FinetuneJob", "FinetuneStep", "evaluate_checkpoint", "finetune", "training_set"]


@dataclass
class FinetuneOutput:
    losses: dict[str, torch.Tensor]  # {"total": the task loss}
    output: torch.Tensor
    scalars: dict[str, float] = field(default_factory=dict)  # nothing to log beside the loss


class FinetuneStep(nn.Module):
    """One training forward: inputs (mixed for classification with mixup on) -> the task loss."""

    def __init__(self, model: FineTuneModel, config: FinetuneConfig):
        super().__init__()
        self.model = model
        self.task, self.num_classes = config.head.task_record, config.head.num_classes
        self.task_config, self.mixup = config.task, config.mixup

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, progress: Progress = START
    ) -> FinetuneOutput:
        """batch: loader tensors (inputs and target); generator: CPU generator of the mixing."""
        inputs = {name: batch[name] for name in self.model.encoder.config.inputs}
        target = self.task.target(batch, self.task_config)
        if self.task.mixes_labels and self.mixup.enabled:
            inputs, target = mix_batch(inputs, target, self.num_classes, self.mixup, generator)
        output = self.model(inputs)
        loss = self.task.loss(output, target, self.task_config, self.mixup.label_smoothing)
        return FinetuneOutput({"total": loss}, output)


def _evaluate_split(
    model: FineTuneModel, dataset: SizedDataset, config: FinetuneConfig, context: DistributedContext
) -> Any:
    """The task's meter over the evaluation split, with the run's evaluation settings."""
    return evaluate(
        model,
        dataset,
        config.head.task_record,
        config.head.num_classes,
        config.task,
        config.eval,
        context,
        config.run.precision,
        config.eval.batch_size or config.data.batch_size,
        config.data.num_workers,
    )


def _scores_of(meter: Any, config: FinetuneConfig) -> dict:
    """The task's scores from its meter, with the class names the data source knows (per-class IoU)."""
    source, task = get_source(config.data.source), config.head.task_record
    names = source.class_names(config.data).get(task.target_key)
    return task.scores(meter, list(names) if names else None, source.object_classes)


class FinetuneJob(Job[FineTuneModel]):
    kind = "fine-tuning"
    config: FinetuneConfig

    def build(self, context: DistributedContext) -> JobParts:
        config = self.config
        self.model = build_model(config)
        self.eval_set = evaluation_set(config)
        dataset = training_set(config)
        groups = layer_decay_groups(self.model, config.optim.weight_decay, config.optim.layer_decay)
        return JobParts(
            self.model, FinetuneStep(self.model, config), dataset, groups, evaluation=self.eval_set
        )

    def initialize(self, model: FineTuneModel, path: str) -> InitReport:
        return load_pretrained(model.encoder, path)

    def describe(self, training: Training) -> str:
        config = self.config
        what = "linear probe" if config.model.freeze_encoder else "full fine-tuning"
        return (
            f"{what} ({config.head.task}, {config.head.head_kind} head, layer decay {config.optim.layer_decay}); "
            f"{len(training.dataset)} training samples, {len(self.eval_set)} evaluation samples"
        )

    def _evaluate(self, training: Training, step: int, logger: RunLogger) -> dict:
        scores = _scores_of(
            _evaluate_split(self.model, self.eval_set, self.config, training.context), self.config
        )
        logger.scalars(step, {f"eval/{name}": value for name, value in scores["metrics"].items()})
        shown = ", ".join(f"{name} {value:.4g}" for name, value in scores["metrics"].items())
        logger.event(
            "eval", f"step {step}, {split_name(self.config)}: {shown}", step=step, **scores["metrics"]
        )
        return scores

    def after_step(self, training: Training, state: LoopState, logger: RunLogger) -> None:
        schedule, every = self.config.schedule, self.config.eval.every
        # At epoch ends only, and never the last one: `finish` evaluates it.
        epoch_end = not state.batch and state.epoch < schedule.total_epochs
        if epoch_end and every and (state.epoch - schedule.start_epoch) % every == 0:
            self._evaluate(training, state.step, logger)

    def finish(self, training: Training, state: LoopState, logger: RunLogger) -> dict:
        scores = self._evaluate(training, state.step, logger)
        if "iou_table" in scores:
            logger.event("per_class_iou", "per-class IoU:\n" + scores["iou_table"])
        return {"task": self.config.head.task, **scores}


def finetune(config: FinetuneConfig) -> RunResult:
    """Run (or resume) a fine-tuning or linear probe, or the k-NN probe (head.kind=knn, which trains
    nothing); returns its final evaluation and where its outputs are."""
    return fit(KnnJob(config) if config.head.head_kind == "knn" else FinetuneJob(config))


def evaluate_checkpoint(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[FinetuneConfig, dict]:
    """Evaluate a fine-tuning checkpoint on its config's evaluation split (changed by `overrides`).

    Returns the config used and the scores ({"metrics": ...}, plus per-class IoU for semseg).
    """
    checkpoint = read_checkpoint(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or "head" not in saved:
        raise CheckpointError(
            f"{path}: not a fine-tuning checkpoint (it holds no fine-tuning config); evaluate takes the "
            "checkpoints `guidedmae finetune` writes"
        )
    config = load_config(
        FinetuneConfig, None, overrides, base=saved, base_source=f"{path} (its stored config)"
    )
    context = init_distributed(config.run.device)
    try:
        torch.set_num_threads(threads_per_process(config.run.threads, context))
        model = build_to_fit(lambda: build_model(config), state_dict_of(checkpoint, str(path)), str(path))
        meter = _evaluate_split(model.to(context.device), evaluation_set(config), config, context)
    finally:
        close_distributed(context)
    return config, _scores_of(meter, config)
