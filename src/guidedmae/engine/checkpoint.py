"""Training checkpoints: atomic writes, the last K kept, resume, and initialization from weights.

A run folder holds `checkpoint-<step>.pt` (the last `keep` of them) and `checkpoint-last.pt`, a copy of
the newest (its own file: damaging one never damages the other). A checkpoint is a dict:
    model      state dict (official MultiMAE parameter names)
    optimizer  AdamW state;  scaler: GradScaler state or None
    schedule   {"step": optimizer steps taken in this run, "first_step", "steps_per_epoch", "total_steps"}
    data       {"epoch": epoch to continue in, "batch": next batch index in it, "world_size", "batch_size"}
    rng        {"torch": [per rank], "cuda": [per rank], "step": [per rank]} generator states (global,
               CUDA, and the step's own generator: masks, mixup)
    config     the resolved config (plain dict);  step: same as schedule.step
    strategy   (pretraining) the masking strategy's weights and buffers, beside the model's
Every write goes to a temp file in the same folder, is flushed and fsynced, then renamed over the
final name, and the folder is fsynced: a crash at any moment leaves every name a complete file.
"""

import re
import shutil
from pathlib import Path

import torch

from guidedmae.files import atomic_write
from guidedmae.models.checkpoints import CheckpointError, read_checkpoint

LAST = "checkpoint-last.pt"
STEP_PATTERN = re.compile(r"checkpoint-(\d+)\.pt")


def _step_checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.pt"


def atomic_save(obj, path: Path) -> Path:
    """torch.save that never leaves a half-written file (see guidedmae.files.atomic_write)."""
    return atomic_write(path, lambda file: torch.save(obj, file))


def _copy_atomically(source: Path, name: Path) -> Path:
    """Make `name` a copy of the complete file `source`: its own file (editing one never changes the
    other), written like every other file (see guidedmae.files.atomic_write)."""
    with open(source, "rb") as original:
        return atomic_write(name, lambda file: shutil.copyfileobj(original, file))


def step_checkpoints(out_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    found = [
        (int(m.group(1)), p)
        for p in Path(out_dir).glob("checkpoint-*.pt")
        if (m := STEP_PATTERN.fullmatch(p.name))
    ]
    return [path for _, path in sorted(found)]


def save_checkpoint(state: dict, out_dir: Path, step: int, keep: int) -> Path:
    """Write `state` as checkpoint-<step>.pt and checkpoint-last.pt, then delete all but the newest `keep`."""
    if keep < 1:
        raise ValueError(f"checkpoint.keep={keep}; expected at least 1")
    out_dir = Path(out_dir)
    path = atomic_save(state, out_dir / _step_checkpoint_name(step))
    _copy_atomically(path, out_dir / LAST)
    for old in step_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def resume_candidates(out_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first: its newest step file (written before checkpoint-last.pt is
    copied from it, so never older), checkpoint-last.pt, then the older step files."""
    steps = step_checkpoints(out_dir)[::-1]
    last = Path(out_dir) / LAST
    return steps[:1] + ([last] if last.is_file() else []) + steps[1:]


def resolve_resume(resume: str, out_dir: Path) -> list[Path]:
    """The checkpoints to try resuming from, in order: '' -> none (the run folder must hold none),
    'auto' -> those in out_dir, newest first (none: a fresh run), a path -> that file, which must lie
    in out_dir if out_dir already holds another run's checkpoints."""
    existing = resume_candidates(out_dir)
    if resume == "":
        if existing:
            raise ValueError(
                f"{out_dir} already holds checkpoints ({existing[0].name}); pass resume=auto to continue "
                "that run, or choose another out_dir"
            )
        return []
    if resume == "auto":
        return existing
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file")
    if existing and path.resolve().parent != Path(out_dir).resolve():
        raise ValueError(
            f"resume={resume} into out_dir={out_dir}, which holds another run's checkpoints "
            f"({existing[0].name}): its files would be overwritten. Resume in {path.parent}, or choose an "
            "empty out_dir"
        )
    return [path]


def read_training_checkpoint(path: Path) -> dict:
    """A checkpoint written by save_checkpoint, with every entry resume needs."""
    checkpoint = read_checkpoint(path)
    required = ("model", "optimizer", "scaler", "schedule", "data", "rng", "config", "step")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path}: not a training checkpoint (missing {missing}); to start from its weights only, "
            "use model.init=PATH instead of resume"
        )
    return checkpoint
