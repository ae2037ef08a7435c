"""Checkpoint files: read safely (no pickled code runs), loaded strictly, written atomically, kept and resumed.

Files are read with `torch.load(weights_only=True)`: the only non-tensor class admitted is
`argparse.Namespace` (the arguments official MultiMAE files store).


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

import argparse
import contextlib
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from guidedmae.infra.files import atomic_write

# Classes that official MultiMAE checkpoints pickle besides tensors and builtins.
OFFICIAL_SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


class UnreadableCheckpoint(CheckpointError):
    """A file that is not a complete, safe torch checkpoint (junk, truncated, empty, or pickling code)."""


def refused_pickle(error: Exception) -> str | None:
    """What torch's safe (weights-only) loader refused, in its own words (a class it does not admit, an
    opcode it does not read) but without its advice to load unsafely; None for an error of another kind."""
    text = str(error)
    if "Weights only load failed" not in text:
        return None
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [
        line.strip() for line in detail.splitlines() if line.strip() and not line.strip().startswith(advice)
    ]
    return lines[0] if lines else "an object it does not read"


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file without executing pickled code; returns the stored dict.

    Raises FileNotFoundError if there is no such file, UnreadableCheckpoint (one line naming the file)
    for anything that is not a complete, safe torch checkpoint holding a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(OFFICIAL_SAFE_GLOBALS) if allow else contextlib.nullcontext(), warnings.catch_warnings():
            # A plain pickle of a newer protocol is refused below; torch's warning about it would be a second line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # junk makes the unpickler fail in every way (IndexError, struct.error, ...)
        detail = refused_pickle(error)
        if detail is not None and "global" in detail.lower():  # a class it does not admit, named
            raise UnreadableCheckpoint(
                f"{path}: refused to load, it pickles something beyond tensors and "
                f"{[cls.__name__ for cls in OFFICIAL_SAFE_GLOBALS]} (loading never executes pickled code; "
                f"{detail})"
            ) from error
        # What the safe unpickler refused (junk, a plain pickle), without torch's advice; else torch's first line.
        reason = detail or (str(error).splitlines() or [""])[0][:200]
        raise UnreadableCheckpoint(
            f"{path}: not a readable torch checkpoint (empty, truncated, damaged or another kind of file, such as "
            f"a plain pickle: {type(error).__name__}: {reason}); loading never executes pickled code"
        ) from error
    if not isinstance(checkpoint, dict):
        raise UnreadableCheckpoint(f"{path}: expected a checkpoint dict, found {type(checkpoint).__name__}")
    return checkpoint


def state_dict_of(checkpoint: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict: its 'model' entry, or the dict itself if it is one."""
    weights = checkpoint.get("model", checkpoint)
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source}: no state dict found (expected a 'model' entry of tensors)")
    return dict(weights)


SHOWN_KEYS = 12  # keys named per kind of mismatch; the rest are counted


def fit_problems(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state_dict` from loading strictly into a model whose state dict is `own`: one entry
    per kind of mismatch (missing, unexpected, mis-shaped keys), empty if it fits."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    ]
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{title} ({len(keys)}): {', '.join(keys[:SHOWN_KEYS])}{more}")
    return problems


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load; a mismatch is one error listing the missing, unexpected and mis-shaped keys."""
    problems = fit_problems(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(f"{source} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


BuiltModel = TypeVar("BuiltModel", bound=nn.Module)


def build_to_fit(
    build: Callable[[], BuiltModel], state_dict: Mapping[str, torch.Tensor], source: str
) -> BuiltModel:
    """`build()` a model for the weights of `source`, with what the file declares about its architecture.

    The model is first built on the meta device, where nothing is allocated, and its parameter names
    and shapes are compared with the file's tensors: a file whose stored config or arguments declare a
    larger (or any other) model than its tensors hold is an error before a byte is allocated.
    """
    with torch.device("meta"):
        problems = fit_problems(build().state_dict(), state_dict)
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model it declares (its stored config or arguments): {'; '.join(problems)}"
        )
    model = build()
    load_weights(model, state_dict, source)
    return model


def module_names(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    """Child module names under `prefix.` in first-seen order (the official ModuleDict order), e.g. the
    modalities of "input_adapters" or "output_adapters"."""
    return list(dict.fromkeys(key.split(".")[1] for key in state_dict if key.startswith(prefix + ".")))


LAST = "checkpoint-last.pt"
STEP_PATTERN = re.compile(r"checkpoint-(\d+)\.pt")


def _step_checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.pt"


def atomic_save(obj: object, path: Path) -> Path:
    """torch.save that never leaves a half-written file (see guidedmae.infra.files.atomic_write)."""
    return atomic_write(path, lambda file: torch.save(obj, file))


def _copy_atomically(source: Path, name: Path) -> Path:
    """Make `name` a copy of the complete file `source`: its own file (editing one never changes the
    other), written like every other file (see guidedmae.infra.files.atomic_write)."""
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
