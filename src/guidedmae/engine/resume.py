"""A run's whole state in a checkpoint (see guidedmae.infra.checkpoints for the file and its entries),
and resuming from it exactly: model, saved state, optimizer, loss scaler, every rank's random
generators and the position in the data."""

from pathlib import Path

import torch

from guidedmae.config import config_differences, config_to_dict
from guidedmae.engine.job import LoopState, Training
from guidedmae.infra.checkpoints import (
    CheckpointError,
    load_weights,
    read_training_checkpoint,
    save_checkpoint,
)
from guidedmae.infra.distributed import all_gather_objects
from guidedmae.infra.run_log import RunLogger

__all__ = ["resume", "write_checkpoint"]


def _checkpoint_state(training: Training, state: LoopState) -> dict:
    """The checkpoint of the run at `state`. Collective: every rank must call it (RNG states are gathered)."""
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if training.context.device.type == "cuda" else None,
        "step": training.generator.get_state(),
    }
    per_rank = all_gather_objects(training.context, rng)
    return {
        "model": training.model.state_dict(),
        **{key: module.state_dict() for key, module in training.saved.items()},
        "optimizer": training.optimizer.state_dict(),
        "scaler": training.scaler.state_dict() if training.scaler is not None else None,
        "schedule": {
            "step": state.step,
            "first_step": training.schedule.first_step,
            "steps_per_epoch": training.schedule.steps_per_epoch,
            "total_steps": training.schedule.total_steps,
        },
        "data": {
            "epoch": state.epoch,
            "batch": state.batch,
            "nonfinite_in_a_row": state.nonfinite_in_a_row,
            "world_size": training.context.world_size,
            "batch_size": training.config.data.batch_size,
        },
        "rng": {key: [ranks[key] for ranks in per_rank] for key in rng},
        "config": config_to_dict(training.config),
        "step": state.step,
    }


def write_checkpoint(training: Training, state: LoopState, logger: RunLogger) -> None:
    """Gather the state on every rank; rank 0 writes it atomically."""
    checkpoint = _checkpoint_state(training, state)
    if training.context.is_main:
        path = save_checkpoint(checkpoint, training.out_dir, state.step, training.config.checkpoint.keep)
        logger.event("checkpoint", f"step {state.step}: wrote {path}", step=state.step, path=str(path))


def resume(training: Training, path: Path) -> tuple[LoopState, list[str]]:
    """Restore model, optimizer, scaler, RNG states and data position from a checkpoint (every rank).

    Returns the state to continue from and the config keys that changed since the checkpoint.
    """
    checkpoint = read_training_checkpoint(path)
    saved, data = checkpoint["schedule"], checkpoint["data"]
    ours = {
        "first_step": training.schedule.first_step,
        "steps_per_epoch": training.schedule.steps_per_epoch,
        "total_steps": training.schedule.total_steps,
    }
    layout = {"world_size": training.context.world_size, "batch_size": training.config.data.batch_size}
    mismatched = [f"{key}: {saved[key]} -> {value}" for key, value in ours.items() if saved[key] != value]
    mismatched += [f"{key}: {data[key]} -> {value}" for key, value in layout.items() if data[key] != value]
    if mismatched:
        raise CheckpointError(
            f"{path}: cannot resume exactly, the run's layout changed ({'; '.join(mismatched)}). "
            "Resume with the same schedule, batch size and number of processes, or start a new run "
            "from its weights with model.init=PATH"
        )
    load_weights(training.model, checkpoint["model"], str(path))
    for key, module in training.saved.items():
        if key not in checkpoint:
            raise CheckpointError(f"{path}: holds no {key!r} state, which this run keeps beside the model")
        load_weights(module, checkpoint[key], f"{path} ({key})")
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    if training.scaler is not None and checkpoint["scaler"] is not None:
        training.scaler.load_state_dict(checkpoint["scaler"])
    rank = training.context.rank
    torch.set_rng_state(checkpoint["rng"]["torch"][rank])
    if training.context.device.type == "cuda" and checkpoint["rng"]["cuda"][rank] is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"][rank])
    training.generator.set_state(checkpoint["rng"]["step"][rank])
    changed = [
        line
        for line in config_differences(checkpoint["config"], config_to_dict(training.config))
        if not line.startswith("resume:")
    ]
    state = LoopState(checkpoint["step"], data["epoch"], data["batch"], data["nonfinite_in_a_row"])
    return state, changed
