"""Numeric precision of a run: fp32, or bf16 / fp16 autocast (fp16 with loss scaling, CUDA only)."""

from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = ["AUTOCAST_DTYPES", "PRECISIONS", "autocast", "grad_scaler"]

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(AUTOCAST_DTYPES)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of a precision: fp32 runs without; bf16 and fp16 autocast matmuls."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"run.precision={precision!r}; expected one of {PRECISIONS}")
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (and CUDA); fp32 and bf16 need none."""
    if precision != "fp16":
        return None
    if device.type != "cuda":
        raise ValueError(f"run.precision=fp16 needs CUDA (this run is on {device}); use bf16 or fp32")
    return torch.amp.GradScaler("cuda")
