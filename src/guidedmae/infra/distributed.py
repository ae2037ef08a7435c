"""torchrun / torch.distributed set-up, passed around as a small context (no global state).

Under `torchrun --nproc_per_node N` every process reads RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE from its environment and joins one process group (env://): gloo on CPU, nccl on
CUDA. Without torchrun the context is a single process and every helper is a no-op.
"""

import gc
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


class LauncherGone(RuntimeError):
    """The torchrun agent that started this worker died: the worker stops instead of training on."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    launcher_pid: int | None = None  # the torchrun agent's pid (our parent), None without torchrun
    # Under torchrun even one process joins a process group (DDP and its collectives run as with more)
    in_process_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or self.in_process_group

    @property
    def backend(self) -> str | None:
        """The process group's backend (nccl, gloo), None outside one."""
        return dist.get_backend() if self.is_distributed and dist.is_initialized() else None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(name: str, local_rank: int = 0, key: str = "run.device") -> torch.device:
    """'auto' -> this process's GPU if CUDA is available, else the CPU; 'cuda' requires CUDA. Errors name
    `key`, where the name came from (a command's --device)."""
    if name not in DEVICES:
        raise ValueError(f"{key}={name!r}; expected one of {DEVICES}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}='cuda' but CUDA is not available (use {key}=cpu or auto)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", env: Mapping[str, str] | None = None) -> DistributedContext:
    """Join the process group torchrun describes in `env` (default os.environ), if there is one."""
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    local_world_size = _env_int(env, "LOCAL_WORLD_SIZE", world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    launched = "TORCHELASTIC_RUN_ID" in env
    if (world_size > 1 or launched) and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    # torchrun's workers outlive a killed agent (reparented); they watch their parent to notice.
    launcher = os.getppid() if launched else None
    return DistributedContext(
        rank, world_size, local_rank, local_world_size, resolved, launcher, dist.is_initialized()
    )


def check_launcher(context: DistributedContext) -> None:
    """Raise LauncherGone if the torchrun agent that started this process has died (a requeued job
    must not find the old one's workers still writing)."""
    if context.launcher_pid is not None and os.getppid() != context.launcher_pid:
        raise LauncherGone(
            f"the torchrun agent (pid {context.launcher_pid}) that started rank {context.rank} is gone; "
            "this worker stops instead of training on without it"
        )


def close_distributed(context: DistributedContext) -> None:
    """Leave the process group. DistributedDataParallel sits in reference cycles (its hooks hold it), so
    only the cycle collector frees it and the gloo work it keeps; collected during interpreter shutdown
    instead, that work aborts the process ("terminate called without an active exception")."""
    if context.is_distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def threads_per_process(requested: int, context: DistributedContext) -> int:
    """CPU threads for this process: `requested`, or (0) the cores shared among the local processes."""
    if requested < 0:
        raise ValueError(f"run.threads={requested}; expected 0 (automatic) or a positive count")
    if requested:
        return requested
    return max(1, (os.cpu_count() or 1) // context.local_world_size)


def all_reduce_mean(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (a copy; the input is left alone)."""
    values = values.detach().clone()
    if context.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= context.world_size
    return values


Value = TypeVar("Value")  # what a collective carries over unchanged in type


def all_reduce_sum(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (a copy; the input is left alone): meters' totals."""
    values = values.detach().clone()
    if context.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(context: DistributedContext, value: Value) -> list[Value]:
    """[value of rank 0, value of rank 1, ...] (picklable values)."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_gather_tensors(context: DistributedContext, tensor: torch.Tensor) -> list[torch.Tensor]:
    """[tensor of rank 0, tensor of rank 1, ...]; every rank must give the same shape and dtype."""
    if not context.is_distributed:
        return [tensor]
    gathered = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered


def broadcast_buffers(context: DistributedContext, module: nn.Module) -> None:
    """Every rank takes rank 0's buffers (e.g. BatchNorm running statistics, where they cannot be
    synchronized as they are computed)."""
    if context.is_distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(context: DistributedContext, value: Value) -> Value:
    """Rank 0's `value` on every process, e.g. a decision taken from files only rank 0 should read."""
    if not context.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes in state-dict order: equal digests, identical weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().flatten().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def launched_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank as torchrun set it (0 without torchrun): who prints a command's results."""
    return _env_int(os.environ if env is None else env, "RANK", 0)
