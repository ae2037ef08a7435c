"""`guidedmae visualize CHECKPOINT`: inputs, attention maps, masks and reconstructions of a model, as a PNG.

    guidedmae visualize runs/demo/checkpoint-last.pt                    # the run's own masking strategy
    guidedmae visualize runs/demo/checkpoint-last.pt masking.attention.select=low masking.attention.noise=0.5
    guidedmae visualize multimae-b_98_rgb+-depth-semseg_1600e.pth masking.strategy=attention --out b.png

CHECKPOINT is a guidedmae pretraining checkpoint (its stored config gives the model, the data and the
masking) or an official MultiMAE .pth (shown on synthetic scenes, with MultiMAE-B's budget of 1/6 of the
tokens visible). key=value overrides change that config, the masking above all; the batch and the masking
seed are those of the run's own pictures, so a picture made here sits beside the training pictures.
Computed in fp32.
"""

import argparse
from pathlib import Path

from guidedmae.engine.from_checkpoint import load_step
from guidedmae.engine.pretrain import picture_batch, save_reconstruction
from guidedmae.infra.distributed import resolve_device
from guidedmae.infra.files import check_output

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise ValueError(f"--samples {args.samples}; expected at least 1")
    overrides = [*args.overrides, f"log.picture_samples={args.samples}", "run.precision=fp32"]
    step, config, dataset = load_step(args.checkpoint, overrides)
    step.to(resolve_device(args.device, key="--device"))
    batch = picture_batch(dataset, args.samples)
    name = step.strategy.describe()
    out = Path(args.out or Path(args.checkpoint).parent / f"visualize-{name}.png")
    check_output(out, [args.checkpoint])
    save_reconstruction(step, batch, config, out)
    print(f"wrote {out} ({name}, {len(batch['rgb'])} samples)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `visualize` under the main command's sub-commands."""
    parser = subparsers.add_parser(
        "visualize", help="PNG grid of inputs, attention maps, masks and reconstructions of a checkpoint"
    )
    parser.add_argument("checkpoint", help="a guidedmae pretraining checkpoint or an official MultiMAE .pth")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value changes of the run's config, e.g. masking.strategy=attention masking.attention.select=low",
    )
    parser.add_argument("--samples", type=int, default=4, help="samples in the picture (default 4)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", help="PNG to write (default: visualize-<masking>.png beside the checkpoint)")
    parser.set_defaults(func=_run)
