"""Whether a training run can fit in memory, from its config, before anything is allocated.

A config asking for model.dim=16384 or images of 16384 pixels a side passes every bound of its own, then
fails deep inside an allocation (or is killed by the system) once the run builds it. The estimate counts
what training cannot do without, so it is a lower bound: a run refused by it cannot fit, one it lets
through may still run out of memory.

    needed = training_bytes(config)            # {"model state": ..., "activations": ..., "batch": ...}
    check_fits_in_memory(config, context)      # ValueError naming the keys and both sizes
"""

import os
from pathlib import Path

import torch

from guidedmae.config import TrainingConfig
from guidedmae.infra.distributed import DistributedContext
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import MultiMAE

__all__ = ["check_fits_in_memory", "memory_bytes", "training_bytes"]

# Bytes per trained parameter: fp32 weights, their gradients and AdamW's two moments.
STATE_BYTES = 16
# Values per token and layer that a transformer block keeps for its backward pass, in units of its width:
# the two norms' inputs, q, k, v, the attention output and its projection, the MLP's output (8), and the
# MLP's hidden layer before and after its activation (2 x mlp_ratio). Attention maps are not counted
# (fused attention does not keep them).
BLOCK_VALUES = 8
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")  # cgroup v2: what a container may use


def _parameters(architecture: MultiMAEConfig) -> int:
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = MultiMAE(architecture)
    return sum(parameter.numel() for parameter in model.parameters())


def training_bytes(config: TrainingConfig) -> dict[str, int]:
    """A lower bound of the memory one training process needs, by part: the model's state (weights,
    gradients, AdamW), the activations its blocks keep for the backward pass, and the batch's inputs."""
    architecture = config.model.architecture(config.modalities)
    all_tokens = architecture.num_input_tokens
    masking = getattr(config, "masking", None)  # pretraining: the encoder sees the visible tokens only
    encoder_tokens = masking.num_visible if masking is not None else all_tokens
    decoder_tokens = len(architecture.outputs) * architecture.tokens_per_modality
    value_bytes = 4 if config.run.precision == "fp32" else 2
    per_width = BLOCK_VALUES + 2 * architecture.mlp_ratio
    per_sample = (
        per_width
        * value_bytes
        * (
            encoder_tokens * architecture.dim * architecture.depth
            + decoder_tokens * architecture.decoder_dim * architecture.decoder_depth
        )
    )
    channels = sum(
        architecture.modality(name).channels for name in {*architecture.inputs, *architecture.outputs}
    )
    pixels = architecture.image_size**2
    batch = config.data.batch_size
    return {
        "model state": _parameters(architecture) * STATE_BYTES,
        "activations": int(batch * per_sample),
        "batch": batch * pixels * channels * 4,  # float32 pixels
    }


def memory_bytes(device: torch.device) -> int:
    """The memory a process on `device` can have at most: the GPU's, or this machine's (or its container's
    limit, if lower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


def check_fits_in_memory(config: TrainingConfig, context: DistributedContext) -> None:
    """Refuse, naming the keys that size it, a run that cannot fit: on a CPU every local process needs its
    own share of the machine's memory, on a GPU its own GPU's."""
    needed = training_bytes(config)
    processes = context.local_world_size if context.device.type == "cpu" else 1
    total = sum(needed.values()) * processes
    available = memory_bytes(context.device)
    if total <= available:
        return
    model = config.model
    parts = ", ".join(f"{name} {size / 2**30:.1f}" for name, size in needed.items())
    shared = f" x {processes} processes" if processes > 1 else ""
    raise ValueError(
        f"model.dim={model.dim}, model.depth={model.depth}, model.image_size={model.image_size}, "
        f"model.patch_size={model.patch_size}, data.batch_size={config.data.batch_size}: training needs at "
        f"least {total / 2**30:.1f} GiB ({parts} GiB{shared}), more than the {available / 2**30:.1f} GiB of "
        f"{context.device}; choose a smaller model, image size or batch"
    )
