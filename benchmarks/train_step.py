"""One random-masking pretraining step (forward, backward, AdamW) of this checkout against another one and
against the official MultiMAE code.

    python benchmarks/train_step.py --baseline ../base/src                    # MultiMAE-B, batch 8, fp32 and bf16
    python benchmarks/train_step.py --official ../MultiMAE --model demo --batch 32 --threads 1
    python benchmarks/train_step.py --official ../MultiMAE --compile          # our step also compiled

Each version runs in its own interpreter (`--baseline` is put first on PYTHONPATH), the versions
alternating round by round so that a shared machine's drifts hit both; every round times `--steps` steps
after one warm-up step, and the table gives the median seconds per step and the ratios. The batch is the
same synthetic scenes for all; our step is what `guidedmae pretrain` runs: MaskedAutoencoderStep, then
AdamW with MultiMAE's parameter groups, in a process whose malloc keeps freed memory (guidedmae.infra.memory, as
a training process sets it; the official step runs as its own code leaves the process).

`--official` is a checkout of github.com/EPFL-VILAB/MultiMAE (not part of this project; it needs `einops`).
Its step is its training loop's: truncated depth standardization, `model(inputs, num_encoded_tokens,
alphas, fp32_output_adapters=['semseg'])` with random masking, its masked losses (MSE rgb, L1 depth,
cross-entropy semseg, normalized-pixel MSE norm_rgb) summed, backward, and torch.optim.AdamW (betas 0.9,
0.95; weight decay 0.05 except biases, norms and its no_weight_decay names), which is what its optimizer
factory builds. bf16 wraps its forward in CPU autocast (its loop's torch.cuda.amp.autocast does nothing on
a CPU). Only its model, adapters and losses are imported: the `utils` package of its training scripts
needs timm and torchvision, so the one name the model takes from it (`utils.registry.register_model`, a
decorator) is given as a no-op.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16")


def measure(
    model_name: str, batch_size: int, precision: str, steps: int, threads: int, compiled: bool
) -> float:
    """Seconds per training step of this interpreter's guidedmae (median of `steps`); compiled: the step
    compiled as `run.compile=true` compiles it (its first two steps compile and are not timed)."""
    import torch
    from torch.utils.data import default_collate

    from guidedmae.data.datasets import SyntheticScenes
    from guidedmae.data.transforms import AugmentConfig
    from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
    from guidedmae.infra.optim import OptimConfig, build_optimizer
    from guidedmae.infra.precision import autocast
    from guidedmae.losses import LossConfig
    from guidedmae.masking.config import MaskingConfig, build_strategy
    from guidedmae.models.architecture import MultiMAEConfig
    from guidedmae.models.multimae import MultiMAE

    torch.set_num_threads(threads)
    try:  # what a training process does first (a baseline checkout may predate it)
        from guidedmae.infra.memory import TRAINING_TRIM_THRESHOLD, keep_freed_memory
    except ImportError:
        pass
    else:
        keep_freed_memory(TRAINING_TRIM_THRESHOLD)
    torch.manual_seed(0)
    if model_name == "base":
        config, visible = MultiMAEConfig(), 98
    else:  # the demo architecture (configs/pretrain/demo.yaml)
        config = MultiMAEConfig(
            image_size=64, patch_size=8, dim=128, depth=4, num_heads=4, decoder_dim=128, decoder_depth=1,
            decoder_heads=4, semseg_classes=8, semseg_class_dim=32,
        )  # fmt: skip
        visible = 32
    model = MultiMAE(config).train()
    scenes = SyntheticScenes(
        batch_size, config.image_size, 0, ("rgb", "depth", "semseg"), AugmentConfig(config.image_size)
    )
    batch = default_collate([scenes[index] for index in range(batch_size)])
    masking = MaskingConfig(strategy="random", num_visible=visible)
    step = MaskedAutoencoderStep(model, build_strategy(masking, config, batch_size), LossConfig())
    untimed = 1
    if compiled:
        step, untimed = torch.compile(step), 2
    optimizer = build_optimizer(model, OptimConfig())
    generator = torch.Generator().manual_seed(0)
    times = []
    for index in range(steps + untimed):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), precision):
            output = step(batch, generator)
        output.losses["total"].backward()
        optimizer.step()
        if index >= untimed:  # the first allocates the optimizer state (and compiles, with the second)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _import_official(root: Path):
    """The official `multimae` package of the checkout at `root`."""
    import types

    registry = types.ModuleType("utils.registry")
    registry.register_model = lambda function: function
    package = types.ModuleType("utils")
    package.__path__, package.registry = [], registry
    sys.modules.update({"utils": package, "utils.registry": registry})
    sys.path.insert(0, str(root))
    import multimae

    return multimae


def measure_official(
    root: Path, model_name: str, batch_size: int, precision: str, steps: int, threads: int, device="cpu"
):
    """Seconds per training step of the official MultiMAE code at `root` (median of `steps`), on `device`
    (benchmarks/gpu_check.py times it on a GPU)."""
    from functools import partial

    import torch
    from torch import nn
    from torch.utils.data import default_collate

    from guidedmae.data.datasets import SyntheticScenes
    from guidedmae.data.transforms import AugmentConfig

    official = _import_official(root)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_name == "base":  # its pretrain_multimae_base with the 1600-epoch recipe's adapters
        size, patch, dim, depth, heads, classes, class_dim, visible = 224, 16, 768, 12, 12, 133, 64, 98
        decoder_dim, decoder_depth, decoder_heads = 256, 2, 8
    else:  # the demo architecture, as measure() builds ours
        size, patch, dim, depth, heads, classes, class_dim, visible = 64, 8, 128, 4, 4, 8, 32, 32
        decoder_dim, decoder_depth, decoder_heads = 128, 1, 4
    inputs = ("rgb", "depth", "semseg")
    input_adapters = {
        "rgb": official.PatchedInputAdapter(num_channels=3, stride_level=1, patch_size_full=patch, image_size=size),
        "depth": official.PatchedInputAdapter(num_channels=1, stride_level=1, patch_size_full=patch, image_size=size),
        "semseg": official.SemSegInputAdapter(
            num_classes=classes, stride_level=4, patch_size_full=patch, dim_class_emb=class_dim,
            interpolate_class_emb=False, image_size=size,
        ),
    }  # fmt: skip
    decoder = dict(
        patch_size_full=patch, dim_tokens=decoder_dim, depth=decoder_depth, num_heads=decoder_heads,
        use_task_queries=True, context_tasks=list(inputs), use_xattn=True, image_size=size,
    )  # fmt: skip
    output_adapters = {
        "rgb": official.SpatialOutputAdapter(num_channels=3, stride_level=1, task="rgb", **decoder),
        "depth": official.SpatialOutputAdapter(num_channels=1, stride_level=1, task="depth", **decoder),
        "semseg": official.SpatialOutputAdapter(
            num_channels=classes, stride_level=4, task="semseg", **decoder
        ),
        "norm_rgb": official.SpatialOutputAdapter(num_channels=3, stride_level=1, task="rgb", **decoder),
    }
    model = official.MultiMAE(
        input_adapters=input_adapters, output_adapters=output_adapters, num_global_tokens=1, dim_tokens=dim,
        depth=depth, num_heads=heads, mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).train()  # fmt: skip
    losses = {
        "rgb": official.MaskedMSELoss(patch_size=patch, stride=1),
        "depth": official.MaskedL1Loss(patch_size=patch, stride=1),
        "semseg": official.MaskedCrossEntropyLoss(patch_size=patch, stride=4),
        "norm_rgb": official.MaskedMSELoss(patch_size=patch, stride=1, norm_pix=True),
    }
    exempt = model.no_weight_decay()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        decayed = parameter.ndim > 1 and name not in exempt and not name.endswith(".bias")
        (decay if decayed else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), eps=1e-8)
    scenes = SyntheticScenes(batch_size, size, 0, inputs, AugmentConfig(size))
    batch = {
        key: value.to(device)
        for key, value in default_collate([scenes[i] for i in range(batch_size)]).items()
    }
    times = []
    for index in range(steps + 1):
        start = time.perf_counter()
        tasks = {name: batch[name] for name in inputs}
        flat = tasks["depth"].flatten(1).sort(dim=1).values
        trimmed = flat[:, int(0.1 * flat.shape[1]) : int(0.9 * flat.shape[1])]
        mean, var = trimmed.mean(dim=1), trimmed.var(dim=1)
        tasks["depth"] = (tasks["depth"] - mean[:, None, None, None]) / torch.sqrt(
            var[:, None, None, None] + 1e-6
        )
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            preds, masks = model(
                dict(tasks), num_encoded_tokens=visible, alphas=1.0, fp32_output_adapters=["semseg"]
            )
            tasks["norm_rgb"], masks["norm_rgb"] = tasks["rgb"], masks["rgb"]
            loss = sum(losses[name](preds[name].float(), tasks[name], mask=masks[name]) for name in preds)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first step allocates the optimizer state
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_in(src: Path | None, arguments: list[str]) -> float:
    environment = dict(os.environ)
    if src is not None:
        environment["PYTHONPATH"] = str(src)
    result = subprocess.run(
        [sys.executable, __file__, "--measure", *arguments], capture_output=True, text=True, env=environment
    )
    if result.returncode:
        raise RuntimeError(f"measuring with {src or 'this checkout'} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to measure against")
    parser.add_argument("--official", type=Path, help="a checkout of EPFL-VILAB/MultiMAE to measure against")
    parser.add_argument("--model", choices=("base", "demo"), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=PRECISIONS, nargs="+", default=list(PRECISIONS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per version (median)")
    parser.add_argument("--compile", action="store_true", help="also time our step under torch.compile")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        if args.official:
            seconds = measure_official(
                args.official, args.model, args.batch, args.precision[0], args.steps, args.threads
            )
        else:
            seconds = measure(
                args.model, args.batch, args.precision[0], args.steps, args.threads, args.compile
            )
        print(json.dumps(seconds))
        return
    from guidedmae.infra.machine import cpu_name  # this checkout's (a baseline may predate it)

    # name -> (src put first on PYTHONPATH, extra arguments of its measuring interpreter)
    versions = {"this checkout": (None, [])}
    if args.compile:
        versions["this checkout, compiled"] = (None, ["--compile"])
    ours = list(versions)
    if args.baseline:
        versions["baseline"] = (args.baseline, [])
    if args.official:
        versions["official"] = (None, ["--official", str(args.official.resolve())])
    others = [name for name in versions if name not in ours]
    ratios = [(other, mine) for other in others for mine in ours]
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads; {args.model}, batch {args.batch}; "
        f"median of {args.rounds} rounds x {args.steps} steps, versions alternating"
    )
    header = [f"{name} s/step" for name in versions] + [f"{other} / {mine}" for other, mine in ratios]
    print("\n| precision | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    for precision in args.precision:
        common = ["--model", args.model, "--batch", str(args.batch), "--precision", precision]
        common += ["--threads", str(args.threads), "--steps", str(args.steps)]
        rounds: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name, (src, extra) in versions.items():
                rounds[name].append(measure_in(src, common + extra))
        medians = {name: statistics.median(values) for name, values in rounds.items()}
        cells = [f"{seconds:.3f}" for seconds in medians.values()]
        cells += [f"{medians[other] / medians[mine]:.2f}" for other, mine in ratios]
        print(f"| {precision} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
