"""Fine-tuning and linear probing: `guidedmae finetune CONFIG [key=value ...]`, alone or under torchrun.

context  = init_distributed(config.run.device)
encoder  = MultiMAE(model, outputs=())  <- load_encoder(model.init): ours or official, decoders dropped
model    = FineTuneModel(encoder, build_head(head), freeze_encoder)       linear probe: frozen encoder
step     = FinetuneStep(model, ...)      mixup / cutmix, task loss; DDP wraps it
dataset  = the train split (a class-balanced seeded subset with data.fraction / data.per_class)
optimizer= AdamW over layer-wise lr-decayed groups (optim.layer_decay)
train(job, state, logger)                engine.loop, the loop pretraining runs; its after_step hook
                                         evaluates every eval.every epochs and at the end
results.json                             the final evaluation (what `guidedmae report` reads)
"""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from guidedmae.config import (
    CheckpointConfig,
    DataConfig,
    LogConfig,
    ModelSettings,
    RunConfig,
    load_config,
)
from guidedmae.data.datasets import ADE20KDataset, FolderDataset, SyntheticScenes, derived_generator
from guidedmae.data.mixup import MixupConfig, mix_batch
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES, SEMSEG_CLASSES, SHAPES, render_scene
from guidedmae.data.subset import balanced_subset
from guidedmae.engine.checkpoint import LAST, remove_stale_temps, resolve_resume
from guidedmae.engine.distributed import (
    DistributedContext,
    close_distributed,
    init_distributed,
    threads_per_process,
)
from guidedmae.engine.evaluate import EvalConfig, WholeImages, evaluate
from guidedmae.engine.logging import METRICS, RunLogger
from guidedmae.engine.loop import LoopState, TrainingJob, grad_scaler, resume, steps_per_epoch, train
from guidedmae.engine.optim import OptimConfig, build_optimizer, layer_decay_groups, peak_lr, validate_optim
from guidedmae.engine.pretrain import verify_identical_weights, write_run_config
from guidedmae.engine.schedule import LRSchedule, ScheduleConfig
from guidedmae.files import atomic_write
from guidedmae.metrics import format_iou_table, iou_per_class
from guidedmae.models.checkpoints import CheckpointError, load_weights, read_checkpoint, state_dict_of
from guidedmae.models.finetune import FineTuneModel, HeadConfig, build_head, load_encoder
from guidedmae.models.multimae import MultiMAE
from guidedmae.tasks import TaskConfig, target_of, task_loss

RESULTS = "results.json"
FINETUNE_SOURCES = ("synthetic", "folder", "ade20k")
STEP_STREAM, TORCH_STREAM = 1, 2  # derived_generator(seed, rank, stream), as pretraining


@dataclass
class FinetuneModelSettings(ModelSettings):
    """The encoder (MultiMAEConfig's fields; no decoders) and where its weights come from."""

    inputs: tuple[str, ...] = ("rgb",)
    outputs: tuple[str, ...] = ()
    drop_path: float = 0.1  # MultiMAE's fine-tuning recipes (0 for NYUv2 depth)
    freeze_encoder: bool = False  # linear probing: only the head trains


@dataclass
class FinetuneDataConfig(DataConfig):
    """The train split (DataConfig's fields) and the evaluation split."""

    sources: ClassVar[tuple[str, ...]] = FINETUNE_SOURCES
    eval_split: str = "val"  # folder / ade20k
    eval_num_samples: int = 1000  # synthetic: scenes of the evaluation series
    scene_seed: int = 0  # synthetic: the training scenes' series (pretraining renders series `seed`)
    eval_scene_seed: int = 1  # synthetic: a different series, never seen in training
    fraction: float = 1.0  # low-data regime: each class keeps this share of its samples (seeded)
    per_class: int = 0  # low-data regime: exactly this many samples per class; 0 = use fraction

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.fraction <= 1 or self.per_class < 0:
            raise ValueError(
                f"data.fraction={self.fraction}, data.per_class={self.per_class}; expected 0 < fraction <= 1 "
                "and per_class >= 0 (0 = use fraction)"
            )
        if self.per_class and self.fraction < 1:
            raise ValueError("give data.fraction or data.per_class, not both")
        if self.eval_num_samples < 1 or self.scene_seed < 0 or self.eval_scene_seed < 0:
            raise ValueError(
                f"data.eval_num_samples={self.eval_num_samples}, data.scene_seed={self.scene_seed}, "
                f"data.eval_scene_seed={self.eval_scene_seed}; expected a positive count and non-negative seeds"
            )


@dataclass
class FinetuneOptimConfig(OptimConfig):
    blr: float = 5e-4  # MultiMAE's IN1K recipe
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's default, as MultiMAE's fine-tuning
    layer_decay: float = 0.65  # lr of layer i scaled by layer_decay ** (depth + 1 - i); 1 = off


@dataclass
class FinetuneConfig:
    out_dir: str = "runs/finetune"
    seed: int = 0  # model init, data order, augmentation, mixup
    resume: str = ""  # "" = a fresh run | auto = the newest checkpoint in out_dir | PATH
    model: FinetuneModelSettings = field(default_factory=FinetuneModelSettings)
    head: HeadConfig = field(default_factory=HeadConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(total_epochs=100, warmup_epochs=5, min_lr=1e-6)
    )
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        validate_optim(self.optim)
        if not 0 < self.optim.layer_decay <= 1:
            raise ValueError(f"optim.layer_decay={self.optim.layer_decay}; expected 0 < layer_decay <= 1")
        if self.model.outputs:
            raise ValueError(
                f"model.outputs={list(self.model.outputs)}: a fine-tuning encoder has no decoders"
            )
        if self.data.augment.size != self.model.image_size:
            raise ValueError(
                f"data.augment.size={self.data.augment.size} must equal model.image_size={self.model.image_size}"
            )
        if self.seed < 0:
            raise ValueError(f"seed={self.seed}; expected a non-negative integer")
        check_task_data(self)


def check_task_data(config: FinetuneConfig) -> None:
    """The task's target and the inputs must come out of the data as the task needs them."""
    task, inputs, augment = config.head.task, config.model.inputs, config.data.augment
    if task in ("semseg", "depth") and task in inputs:
        raise ValueError(
            f"head.task={task} predicts {task}: it cannot also be in model.inputs {list(inputs)}"
        )
    depth_mode = "metres" if task == "depth" else "standardize"
    if ("depth" in inputs or task == "depth") and augment.depth != depth_mode:
        role = (
            "the depth target (metres)" if task == "depth" else "the depth input (MultiMAE standardizes it)"
        )
        raise ValueError(f"data.augment.depth={augment.depth!r}; {role} needs {depth_mode!r}")
    if task == "semseg" and augment.semseg_stride != 1:
        raise ValueError(
            f"data.augment.semseg_stride={augment.semseg_stride}; semseg targets are full resolution: set 1"
        )
    if "semseg" in inputs and augment.semseg_stride != 4:
        raise ValueError(
            f"data.augment.semseg_stride={augment.semseg_stride}; semseg inputs are at 1/4: set 4"
        )
    if config.mixup.enabled and task != "classification":
        raise ValueError(
            f"mixup / cutmix mix image labels; head.task={task} has none (set mixup.mixup=0 cutmix=0)"
        )
    if config.data.source == "ade20k" and (set(inputs) - {"rgb"} or task != "semseg"):
        raise ValueError(
            "data.source=ade20k has rgb and semseg only: use model.inputs=[rgb] and head.task=semseg"
        )


def data_modalities(config: FinetuneConfig) -> tuple[str, ...]:
    """The modalities a batch holds: the inputs, and the target if it is an image (the label always comes)."""
    target = () if config.head.task == "classification" else (config.head.task,)
    return tuple(dict.fromkeys([*config.model.inputs, *target]))


def build_split(config: FinetuneConfig, train: bool) -> Dataset:
    """The train split (with augmentation) or the evaluation split (the eval transform)."""
    data = config.data
    augment = data.augment if train else replace(data.augment, train=False)
    modalities = data_modalities(config)
    if data.source == "synthetic":
        if config.head.task == "semseg" and config.head.num_classes != NUM_SEMSEG_CLASSES:
            raise ValueError(
                f"head.num_classes={config.head.num_classes}; the synthetic scenes have {NUM_SEMSEG_CLASSES} classes"
            )
        if config.head.task == "classification" and config.head.num_classes != len(SHAPES):
            raise ValueError(
                f"head.num_classes={config.head.num_classes}; the synthetic scenes' labels are {len(SHAPES)} shapes"
            )
        count, seed = (
            (data.num_samples, data.scene_seed) if train else (data.eval_num_samples, data.eval_scene_seed)
        )
        return SyntheticScenes(count, data.render_size or augment.size, seed, modalities, augment)
    split = data.split if train else data.eval_split
    if data.source == "ade20k":
        # The task applies reduce_zero_label (task.reduce_zero_label), for every source alike.
        return ADE20KDataset(data.root, split, augment, reduce_zero_label=False, seed=config.seed)
    return FolderDataset(data.root, split, modalities, augment, seed=config.seed)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Image labels of every sample (for class-balanced subsets), without augmenting anything."""
    if isinstance(dataset, FolderDataset):
        return np.array([sample.label for sample in dataset.samples])
    if isinstance(dataset, SyntheticScenes):
        return np.array(
            [render_scene(dataset.seed, index, dataset.size).label for index in range(len(dataset))]
        )
    raise ValueError(f"data.fraction / data.per_class need image labels; {type(dataset).__name__} has none")


class EpochSubset(Subset):
    """A Subset that passes the epoch on to its data set (whose augmentations depend on it)."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def training_set(config: FinetuneConfig) -> Dataset:
    """The train split, or its class-balanced seeded subset in the low-data regime."""
    dataset = build_split(config, train=True)
    if config.data.fraction == 1 and not config.data.per_class:
        return dataset
    if config.head.task == "classification":
        indices = balanced_subset(
            labels_of(dataset),
            config.seed,
            fraction=None if config.data.per_class else config.data.fraction,
            per_class=config.data.per_class or None,
        )
    elif config.data.per_class:
        raise ValueError(f"data.per_class needs image labels; head.task={config.head.task} has none")
    else:  # dense tasks: a seeded uniform share of the images
        rng = np.random.default_rng(config.seed)
        count = max(1, round(config.data.fraction * len(dataset)))
        indices = np.sort(rng.permutation(len(dataset))[:count])
    return EpochSubset(dataset, indices.tolist())


def evaluation_set(config: FinetuneConfig) -> Dataset:
    dataset = build_split(config, train=False)
    if config.eval.mode == "center":
        return dataset
    depth_mode = "metres" if config.head.task == "depth" else "standardize"
    stride = config.data.augment.semseg_stride
    return WholeImages(
        dataset, config.model.image_size, config.eval.mode, depth_mode, config.task.ignore_index, stride
    )


def build_model(config: FinetuneConfig) -> FineTuneModel:
    """Encoder (random init; load_encoder fills it from model.init) and head, as the config says."""
    architecture = config.model.architecture()
    return FineTuneModel(
        MultiMAE(architecture),
        build_head(config.head, architecture),
        freeze_encoder=config.model.freeze_encoder,
    )


@dataclass
class FinetuneOutput:
    losses: dict[str, torch.Tensor]  # {"total": the task loss}
    output: torch.Tensor


class FinetuneStep(nn.Module):
    """One training forward: inputs (mixed for classification with mixup on) -> the task loss."""

    def __init__(self, model: FineTuneModel, config: FinetuneConfig):
        super().__init__()
        self.model = model
        self.task, self.num_classes = config.head.task, config.head.num_classes
        self.task_config, self.mixup = config.task, config.mixup

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> FinetuneOutput:
        """batch: loader tensors (inputs and target); generator: CPU generator of the mixing."""
        inputs = {name: batch[name] for name in self.model.encoder.config.inputs}
        target = target_of(self.task, batch, self.task_config)
        if self.task == "classification" and self.mixup.enabled:
            inputs, target = mix_batch(inputs, target, self.num_classes, self.mixup, generator)
        output = self.model(inputs)
        loss = task_loss(self.task, output, target, self.task_config, self.mixup.label_smoothing)
        return FinetuneOutput({"total": loss}, output)


def evaluate_split(
    model: FineTuneModel, dataset: Dataset, config: FinetuneConfig, context: DistributedContext
):
    """The task's meter over the evaluation split, with the run's evaluation settings."""
    return evaluate(
        model,
        dataset,
        config.head.task,
        config.head.num_classes,
        config.task,
        config.eval,
        context,
        config.run.precision,
        config.eval.batch_size or config.data.batch_size,
        config.data.num_workers,
    )


def split_name(config: FinetuneConfig) -> str:
    if config.data.source == "synthetic":
        return f"{config.data.eval_num_samples} held-out scenes (series {config.data.eval_scene_seed})"
    return f"{config.data.root} {config.data.eval_split}"


def class_names(config: FinetuneConfig) -> list[str] | None:
    if config.data.source == "synthetic":
        return list(SEMSEG_CLASSES) if config.head.task == "semseg" else list(SHAPES)
    return None


def scores_of(meter, config: FinetuneConfig) -> dict:
    """The meter's metrics, plus per-class IoU for semseg."""
    scores = {"metrics": meter.compute()}
    if config.head.task == "semseg":
        names = class_names(config) or [str(index) for index in range(config.head.num_classes)]
        ious = iou_per_class(meter.confusion).tolist()
        scores["per_class_iou"] = {
            name: None if np.isnan(iou) else 100 * iou for name, iou in zip(names, ious)
        }
        scores["iou_table"] = format_iou_table(meter.confusion, names)
    return scores


def write_results(path: Path, results: dict) -> Path:
    """results.json, atomically (never half-written)."""
    return atomic_write(path, lambda file: file.write(json.dumps(results, indent=2).encode()))


@dataclass
class FinetuneResult:
    out_dir: Path
    checkpoint: Path
    metrics: Path
    results: Path
    scores: dict  # {"metrics": {...}} (+ per-class IoU for semseg)
    steps: int
    weights_identical: bool


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run (or resume) a fine-tuning or linear probe; returns its final evaluation and where its outputs are."""
    context = init_distributed(config.run.device)
    try:
        return run_finetuning(config, context)
    finally:
        close_distributed(context)


def run_finetuning(config: FinetuneConfig, context: DistributedContext) -> FinetuneResult:
    torch.set_num_threads(threads_per_process(config.run.threads, context))
    out_dir = Path(config.out_dir)
    device = context.device
    resume_path = resolve_resume(config.resume, out_dir)

    torch.manual_seed(config.seed)  # the same initial head on every rank
    model = build_model(config)
    init_message = None
    if config.model.init and resume_path is None:
        init_message = load_encoder(model.encoder, config.model.init)
    model.to(device)
    step = FinetuneStep(model, config)

    dataset, eval_set = training_set(config), evaluation_set(config)
    per_epoch = steps_per_epoch(
        len(dataset), config.data.batch_size, context.world_size, config.optim.accum_steps
    )
    total_batch = config.data.batch_size * context.world_size * config.optim.accum_steps
    schedule = LRSchedule(config.schedule, peak_lr(config.optim, total_batch), per_epoch)
    optimizer = build_optimizer(
        model, config.optim, layer_decay_groups(model, config.optim.weight_decay, config.optim.layer_decay)
    )
    scaler = grad_scaler(device, config.run.precision)
    generator = derived_generator(config.seed, context.rank, STEP_STREAM)
    torch.manual_seed(derived_generator(config.seed, context.rank, TORCH_STREAM).initial_seed())

    job = TrainingJob(context, model, step, optimizer, scaler, schedule, dataset, generator, config)
    state, changed = LoopState(epoch=config.schedule.start_epoch), []
    if resume_path is not None:
        state, changed = resume(job, resume_path)
    if context.is_distributed:
        job.step = DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    if config.run.compile:
        job.step.compile()

    logger = RunLogger(out_dir, schedule.run_steps, state.step, enabled=context.is_main)
    final: dict = {}

    def run_evaluation(at_step: int) -> dict:
        scores = scores_of(evaluate_split(model, eval_set, config, context), config)
        logger.scalars(at_step, {f"eval/{name}": value for name, value in scores["metrics"].items()})
        shown = ", ".join(f"{name} {value:.4g}" for name, value in scores["metrics"].items())
        logger.event(
            "eval", f"step {at_step}, {split_name(config)}: {shown}", step=at_step, **scores["metrics"]
        )
        return scores

    def after_step(state: LoopState) -> None:
        if state.batch:  # evaluations happen at epoch ends
            return
        finished = state.epoch == config.schedule.total_epochs
        done = state.epoch - config.schedule.start_epoch
        if finished or (config.eval.every and done % config.eval.every == 0):
            scores = run_evaluation(state.step)
            if finished:
                final.update(scores)

    job.after_step = after_step
    try:
        if context.is_main:
            remove_stale_temps(out_dir)
            write_run_config(config, out_dir, state.step if resume_path else None)
            if init_message:
                logger.event("init", init_message)
            if resume_path is not None:
                logger.event(
                    "resumed",
                    f"resumed from {resume_path} at step {state.step} (epoch {state.epoch}, batch {state.batch})"
                    + (f"; config changed: {', '.join(changed)}" if changed else ""),
                    step=state.step,
                    path=str(resume_path),
                    changed=changed,
                )
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            logger.event(
                "start",
                f"{'linear probe' if config.model.freeze_encoder else 'fine-tuning'} ({config.head.task}, "
                f"{config.head.head_kind} head): {trainable / 1e6:.2f}M trainable parameters on "
                f"{context.world_size} x {device} ({config.run.precision}); {len(dataset)} training samples, "
                f"{len(eval_set)} evaluation samples; total batch {total_batch}, peak lr {schedule.base_lr:.3g}, "
                f"layer decay {config.optim.layer_decay}; {schedule.run_steps} steps ({per_epoch} per epoch)",
                steps=schedule.run_steps,
                total_batch=total_batch,
                peak_lr=schedule.base_lr,
            )
        state = train(job, state, logger)
        if not final:  # resumed after the end: the hook never reached the last epoch
            final.update(run_evaluation(state.step))
        identical = verify_identical_weights(context, model, logger)
        results = {"task": config.head.task, "step": state.step, **final}
        if context.is_main:
            write_results(out_dir / RESULTS, results)
            if "iou_table" in final:
                logger.event("per_class_iou", "per-class IoU:\n" + final["iou_table"])
    finally:
        logger.close()
    return FinetuneResult(
        out_dir=out_dir,
        checkpoint=out_dir / LAST,
        metrics=out_dir / METRICS,
        results=out_dir / RESULTS,
        scores=final,
        steps=state.step,
        weights_identical=identical,
    )


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
    config = load_config(FinetuneConfig, None, overrides, base=saved)
    context = init_distributed(config.run.device)
    try:
        torch.set_num_threads(threads_per_process(config.run.threads, context))
        model = build_model(config)
        load_weights(model, state_dict_of(checkpoint, str(path)), str(path))
        meter = evaluate_split(model.to(context.device), evaluation_set(config), config, context)
    finally:
        close_distributed(context)
    return config, scores_of(meter, config)
