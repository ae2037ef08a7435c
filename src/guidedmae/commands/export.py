"""`guidedmae export CHECKPOINT --to timm|safetensors|hf --out PATH`: weights for other tools.

guidedmae export runs/demo/checkpoint-last.pt --to timm --out encoder.safetensors
"""

import argparse
from pathlib import Path

from guidedmae.infra.files import check_output
from guidedmae.models.export import encoder_to_timm, multimae_of
from guidedmae.models.hf_folder import save_safetensors

__all__ = ["add_parser"]


def _check_empty_folder(folder: Path) -> None:
    """A save_pretrained folder is written into a new or empty folder only: files already there (another
    model, a run) would be replaced or left beside the new ones."""
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"--out {folder} is a folder that already holds files; expected a new or empty folder for --to hf"
        )


def _run_export(args: argparse.Namespace) -> int:
    check_output(args.out, [args.checkpoint])
    if args.to == "hf":
        _check_empty_folder(Path(args.out))
    model = multimae_of(args.checkpoint)
    if args.to == "timm":
        written = save_safetensors(encoder_to_timm(model.state_dict()), args.out)
    elif args.to == "safetensors":
        written = save_safetensors(model.state_dict(), args.out)
    else:
        written = model.save_pretrained(args.out)
    print(f"wrote {written} ({args.to}: {'the encoder' if args.to == 'timm' else 'the whole MultiMAE'})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `export`."""
    parser = subparsers.add_parser(
        "export",
        help="weights for other tools: the encoder as a timm ViT, or the MultiMAE as safetensors / a folder",
        description="timm: the encoder with timm's vision_transformer names (safetensors); safetensors: "
        "the MultiMAE state dict; hf: a save_pretrained folder (config.json + model.safetensors) that "
        "MultiMAE.from_pretrained loads. A fine-tuning checkpoint exports its encoder.",
    )
    parser.add_argument("checkpoint", help="a guidedmae checkpoint or an official MultiMAE .pth")
    parser.add_argument("--to", choices=("timm", "safetensors", "hf"), required=True)
    parser.add_argument(
        "--out", required=True, help="the .safetensors file (timm, safetensors) or a new or empty folder (hf)"
    )
    parser.set_defaults(func=_run_export)
