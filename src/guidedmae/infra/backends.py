"""The settings a GPU changes, applied once per process before the first step (`run:` keys):

    tf32                 fp32 matmuls and convolutions on TF32 tensor cores (Ampere and newer; ~10-bit
                         mantissa products, fp32 accumulation): several times faster than strict fp32
    sdpa_backend         the fused attention kernel: auto (PyTorch picks) | flash | efficient | cudnn | math
    cudnn_benchmark      cudnn tries its convolution algorithms once per shape (the dense heads' convolutions)
    deterministic        deterministic kernels everywhere (bit-exact reruns and resumes on a GPU, slower)

On a CPU only `deterministic` applies; the others name CUDA settings and change nothing there.
"""

import os
from dataclasses import dataclass

import torch

__all__ = ["SDPA_BACKENDS", "BackendSettings", "apply_backend_settings"]

SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


@dataclass
class BackendSettings:
    tf32: bool = True
    sdpa_backend: str = "auto"
    cudnn_benchmark: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"run.sdpa_backend={self.sdpa_backend!r}; expected one of {SDPA_BACKENDS}")


def apply_backend_settings(settings: BackendSettings, device: torch.device) -> None:
    """Set this process's backends as `settings` say (see the module docstring)."""
    if settings.deterministic:
        # cuBLAS needs a fixed workspace for deterministic results; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark and not settings.deterministic
    if settings.sdpa_backend != "auto":  # only the chosen kernel stays enabled
        chosen = settings.sdpa_backend
        torch.backends.cuda.enable_flash_sdp(chosen == "flash")
        torch.backends.cuda.enable_mem_efficient_sdp(chosen == "efficient")
        torch.backends.cuda.enable_cudnn_sdp(chosen == "cudnn")
        torch.backends.cuda.enable_math_sdp(chosen == "math")
