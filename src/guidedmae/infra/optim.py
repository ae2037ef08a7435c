"""AdamW with MultiMAE's parameter groups, and the peak learning rate of a run.

Weight decay applies to weight matrices only: norms, biases, tokens and embeddings (the model's
`no_weight_decay()` names, else every parameter of at most one dimension) are left out.
lr = blr * total_batch / 256, total_batch = per-process batch * processes * accumulation steps.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

REFERENCE_BATCH = 256  # the batch size `blr` refers to (MAE / MultiMAE convention)


@dataclass
class OptimConfig:
    lr: float | None = None  # peak lr; None = blr * total_batch / 256
    blr: float = 1e-4  # base lr per 256 samples of total batch
    lr_scale: float = 1.0  # multiplies the peak lr (continued-pretraining ablation: 10)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    clip_grad: float = 0.0  # max global gradient norm; 0 = no clipping
    accum_steps: int = 1  # batches per optimizer step (gradient accumulation)


def validate_optim(config: OptimConfig) -> None:
    """Check an optimizer config; errors name the offending key and what was expected."""
    rules = (
        ("lr", config.lr is None or config.lr > 0, "a positive number, or null to scale blr"),
        ("blr", config.blr > 0, "a positive number"),
        ("lr_scale", config.lr_scale > 0, "a positive number"),
        ("weight_decay", config.weight_decay >= 0, ">= 0"),
        ("betas", len(config.betas) == 2 and all(0 <= b < 1 for b in config.betas), "two values in [0, 1)"),
        ("eps", config.eps > 0, "a positive number"),
        ("clip_grad", config.clip_grad >= 0, ">= 0 (0 = no clipping)"),
        ("accum_steps", config.accum_steps >= 1, "an integer >= 1"),
    )
    for key, ok, expected in rules:
        if not ok:
            raise ValueError(f"optim.{key}={getattr(config, key)!r}; expected {expected}")


def peak_lr(config: OptimConfig, total_batch: int) -> float:
    """The lr reached at the end of warmup: (lr or blr * total_batch / 256) * lr_scale."""
    lr = config.lr if config.lr is not None else config.blr * total_batch / REFERENCE_BATCH
    return lr * config.lr_scale


class LayeredModel(Protocol):
    """A model that numbers its layers for layer-wise lr decay (models.task_model.FineTuneModel)."""

    @property
    def num_layers(self) -> int: ...

    def layer_id(self, name: str) -> int: ...

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]: ...


def param_groups(model: nn.Module | LayeredModel, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: with weight decay, and without.

    Exempt: the names in `model.no_weight_decay()` if the model has it, and every parameter of at
    most one dimension (norm weights, biases).
    """
    exempt: set[str] = getattr(model, "no_weight_decay", set)()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def layer_decay_groups(model: LayeredModel, weight_decay: float, layer_decay: float) -> list[dict]:
    """`param_groups` split by layer, each with lr_scale = layer_decay ** (num_layers + 1 - layer id).

    The model names its layers: `model.num_layers` and `model.layer_id(name)`, with MultiMAE's
    optim_factory convention (0 = input adapters and global tokens, i + 1 = encoder block i,
    num_layers + 1 = the head, whose lr is unscaled).
    """
    names = {id(param): name for name, param in model.named_parameters()}
    groups = []
    for group in param_groups(model, weight_decay):
        by_layer: dict[int, list] = {}
        for param in group["params"]:
            by_layer.setdefault(model.layer_id(names[id(param)]), []).append(param)
        for layer, params in sorted(by_layer.items()):
            scale = layer_decay ** (model.num_layers + 1 - layer)
            groups.append({"params": params, "weight_decay": group["weight_decay"], "lr_scale": scale})
    return groups


def build_optimizer(
    model: nn.Module, config: OptimConfig, groups: list[dict] | None = None
) -> torch.optim.AdamW:
    """AdamW over `groups` (default: `param_groups(model)`); the lr is set by the schedule before every step.

    The fused kernel where torch has one (CPU and CUDA): one pass over all parameters instead of ~5
    per-parameter operations each; same results up to float rounding (measured: docs/results/
    2026-12-02-train-step.md).
    """
    validate_optim(config)
    groups = param_groups(model, config.weight_decay) if groups is None else groups
    params = [param for group in groups for param in group["params"]]
    fused = all(param.device.type in ("cpu", "cuda") and param.is_floating_point() for param in params)
    beta1, beta2 = config.betas  # a YAML list: two values, validated above
    return torch.optim.AdamW(groups, lr=0.0, betas=(beta1, beta2), eps=config.eps, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr; a group may carry an `lr_scale` (e.g. layer-wise decay) that multiplies it."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
