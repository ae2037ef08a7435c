"""Pretraining: `guidedmae pretrain CONFIG [key=value ...]`, alone or under torchrun.

context  = init_distributed(config.run.device)         torchrun's process group, if any
model    = MultiMAE(config.model)                       or model.init: official / own weights
step     = MaskedAutoencoderStep(model, masking, loss)  the whole forward; DDP wraps it
dataset  = synthetic scenes or the MultiMAE folder layout
schedule = LRSchedule(schedule, peak lr = blr * total batch / 256 * lr_scale, steps per epoch)
state    = resume(...) if resume else LoopState(epoch=schedule.start_epoch)
train(job, state, logger)                               engine.loop: the shared loop
then a last picture and a check that every rank holds identical weights.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, default_collate

from guidedmae.config import PretrainConfig, config_to_yaml, save_config
from guidedmae.data.datasets import FolderDataset, SyntheticScenes, derived_generator
from guidedmae.data.modalities import DERIVED_TARGETS
from guidedmae.data.scenes import NUM_SEMSEG_CLASSES
from guidedmae.engine.checkpoint import (
    LAST,
    initialize_from,
    remove_stale_temps,
    resolve_resume,
)
from guidedmae.engine.distributed import (
    DistributedContext,
    all_gather_objects,
    close_distributed,
    init_distributed,
    threads_per_process,
    weights_digest,
)
from guidedmae.engine.logging import METRICS, TENSORBOARD, RunLogger
from guidedmae.engine.loop import (
    LoopState,
    TrainingJob,
    autocast,
    grad_scaler,
    resume,
    steps_per_epoch,
    train,
)
from guidedmae.engine.optim import build_optimizer, peak_lr
from guidedmae.engine.schedule import LRSchedule
from guidedmae.engine.step import MaskedAutoencoderStep
from guidedmae.models.multimae import MultiMAE, MultiMAEConfig
from guidedmae.viz import reconstruction_figure, save_png

CONFIG_FILE = "config.yaml"
PICTURES = "pictures"
# Independent random streams derived from the run seed: derived_generator(seed, rank, stream).
STEP_STREAM, TORCH_STREAM, PICTURE_STREAM = 1, 2, 3


@dataclass
class PretrainResult:
    out_dir: Path
    checkpoint: Path
    metrics: Path
    tensorboard: Path
    pictures: Path
    steps: int  # optimizer steps of the whole run (resumed parts included)
    weights_identical: bool  # every rank ended with the same weights


def data_modalities(model: MultiMAEConfig) -> tuple[str, ...]:
    """The modalities a batch must hold: the model's inputs and the sources of its outputs."""
    return tuple(dict.fromkeys([*model.inputs, *(DERIVED_TARGETS.get(name, name) for name in model.outputs)]))


def build_dataset(config: PretrainConfig) -> Dataset:
    """The pretraining data set of `config.data`, yielding the modalities the model needs."""
    data, model = config.data, config.model
    modalities = data_modalities(model)
    if data.source == "synthetic":
        if "semseg" in modalities and model.semseg_classes < NUM_SEMSEG_CLASSES:
            raise ValueError(
                f"model.semseg_classes={model.semseg_classes} is fewer than the synthetic scenes' "
                f"{NUM_SEMSEG_CLASSES} classes"
            )
        return SyntheticScenes(
            data.num_samples, data.render_size or data.augment.size, config.seed, modalities, data.augment
        )
    return FolderDataset(data.root, data.split, modalities, data.augment, seed=config.seed)


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
        batch, output.choice, output.preds, config.log.picture_samples, step.model.config.patch_size
    )
    return save_png(image, path)


def picture_path(out_dir: Path, step: int) -> Path:
    return out_dir / PICTURES / f"step-{step:08d}.png"


def write_run_config(config: PretrainConfig, out_dir: Path, resumed_step: int | None) -> Path:
    """config.yaml of the run; a resume with a different config writes config-resumed-<step>.yaml."""
    path = out_dir / CONFIG_FILE
    if resumed_step is not None and path.is_file() and path.read_text() != config_to_yaml(config):
        path = out_dir / f"config-resumed-{resumed_step:08d}.yaml"
    return save_config(config, path)


def verify_identical_weights(context: DistributedContext, model: torch.nn.Module, logger: RunLogger) -> bool:
    """Compare every rank's weight digest; the result goes to the log and metrics.jsonl."""
    digests = all_gather_objects(context, weights_digest(model))
    identical = len(set(digests)) == 1
    message = (
        f"weights check: all {context.world_size} processes hold identical weights (sha256 {digests[0][:16]}...)"
        if identical
        else f"WARNING: the processes hold different weights: {digests}"
    )
    logger.event(
        "weights_check", message, identical=identical, world_size=context.world_size, digests=digests
    )
    return identical


def log_resumed(
    logger: RunLogger, config: PretrainConfig, path: Path, state: LoopState, changed: list[str]
) -> None:
    notes = [f"config changed: {', '.join(changed)}"] if changed else []
    if config.model.init:
        notes.append(f"model.init={config.model.init} is not used when resuming")
    logger.event(
        "resumed",
        "; ".join(
            [f"resumed from {path} at step {state.step} (epoch {state.epoch}, batch {state.batch})", *notes]
        ),
        step=state.step,
        path=str(path),
        changed=changed,
    )


def log_start(logger: RunLogger, job: TrainingJob) -> None:
    """What the run is: size, processes, precision, batch, lr and its part of the schedule."""
    schedule, run = job.schedule, job.config.schedule
    parameters = sum(p.numel() for p in job.model.parameters())
    logger.event(
        "start",
        f"pretraining {parameters / 1e6:.2f}M parameters on {job.context.world_size} x {job.context.device} "
        f"({job.config.run.precision}); total batch {job.total_batch}, peak lr {schedule.base_lr:.3g}; "
        f"epochs {run.start_epoch}..{run.total_epochs} of a {run.total_epochs}-epoch schedule = "
        f"{schedule.run_steps} steps ({schedule.steps_per_epoch} per epoch), "
        f"lr {schedule.run_lr(0):.3g} -> {schedule.run_lr(schedule.run_steps - 1):.3g}",
        world_size=job.context.world_size,
        total_batch=job.total_batch,
        peak_lr=schedule.base_lr,
        steps=schedule.run_steps,
        steps_per_epoch=schedule.steps_per_epoch,
    )


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Run (or resume) a pretraining; returns where its outputs are."""
    context = init_distributed(config.run.device)
    try:
        return run_pretraining(config, context)
    finally:
        close_distributed(context)


def run_pretraining(config: PretrainConfig, context: DistributedContext) -> PretrainResult:
    torch.set_num_threads(threads_per_process(config.run.threads, context))
    out_dir = Path(config.out_dir)
    device = context.device
    # Every rank decides alone: nothing writes checkpoints before all ranks have started.
    resume_path = resolve_resume(config.resume, out_dir)

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = MultiMAE(config.model.architecture())
    init_report = None
    if config.model.init and resume_path is None:
        init_report = initialize_from(model, config.model.init)
    model.to(device)
    step = MaskedAutoencoderStep(model, config.masking, config.loss)

    dataset = build_dataset(config)
    per_epoch = steps_per_epoch(
        len(dataset), config.data.batch_size, context.world_size, config.optim.accum_steps
    )
    total_batch = config.data.batch_size * context.world_size * config.optim.accum_steps
    schedule = LRSchedule(config.schedule, peak_lr(config.optim, total_batch), per_epoch)
    optimizer = build_optimizer(model, config.optim)
    scaler = grad_scaler(device, config.run.precision)
    generator = derived_generator(config.seed, context.rank, STEP_STREAM)
    # Per-rank stream for what draws from the global generator (stochastic depth).
    torch.manual_seed(derived_generator(config.seed, context.rank, TORCH_STREAM).initial_seed())

    job = TrainingJob(context, model, step, optimizer, scaler, schedule, dataset, generator, config)
    state, changed = LoopState(epoch=config.schedule.start_epoch), []
    if resume_path is not None:
        state, changed = resume(job, resume_path)

    if context.is_distributed:
        job.step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
    if config.run.compile:  # the pictures keep using the eager `step`: no recompiling for eval mode
        job.step = torch.compile(job.step)

    logger = RunLogger(out_dir, schedule.run_steps, state.step, enabled=context.is_main)
    try:
        if context.is_main:
            remove_stale_temps(out_dir)
            write_run_config(config, out_dir, state.step if resume_path else None)
            if init_report is not None:
                logger.event("init", init_report.describe(), **asdict(init_report))
            if resume_path is not None:
                log_resumed(logger, config, resume_path, state, changed)
            log_start(logger, job)
            pictures = picture_batch(dataset, config.log.picture_samples)
            every = config.log.picture_every

            def after_step(state: LoopState) -> None:
                if every and state.step % every == 0:
                    save_reconstruction(step, pictures, config, picture_path(out_dir, state.step))

            job.after_step = after_step

        state = train(job, state, logger)

        if context.is_main:
            final_picture = picture_path(out_dir, state.step)
            if not final_picture.is_file():
                save_reconstruction(step, pictures, config, final_picture)
        identical = verify_identical_weights(context, model, logger)
    finally:
        logger.close()
    return PretrainResult(
        out_dir=out_dir,
        checkpoint=out_dir / LAST,
        metrics=out_dir / METRICS,
        tensorboard=out_dir / TENSORBOARD,
        pictures=out_dir / PICTURES,
        steps=state.step,
        weights_identical=identical,
    )
