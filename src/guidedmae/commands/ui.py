"""`guidedmae ui CHECKPOINT`: a local web page comparing two masking strategies on one image.

    guidedmae ui runs/demo/checkpoint-last.pt                          # http://127.0.0.1:7860
    guidedmae ui multimae-b_98_rgb+-depth-semseg_1600e.pth --port 8080
    guidedmae ui runs/demo/checkpoint-last.pt --pseudolabel-depth models/dpt-hybrid-midas \
        --pseudolabel-semseg models/mask2former                        # fill in what an upload lacks

The checkpoint (and the pseudo-label models) load before the page is served: one that does not ends the
command with its message. Needs `pip install 'guidedmae[ui]'` (Gradio); see docs/ui.md.
"""

import argparse

import torch

from guidedmae.ui.app import require_gradio, serve
from guidedmae.ui.demo import Demo

__all__ = ["add_parser"]


def run(args: argparse.Namespace) -> int:
    require_gradio()  # missing: said before the model loads
    models = {
        task: folder
        for task, folder in (("depth", args.pseudolabel_depth), ("semseg", args.pseudolabel_semseg))
        if folder
    }
    if args.threads < 0:
        raise ValueError(
            f"--threads {args.threads}; expected 0 (the run's run.threads, else torch's) or more"
        )
    demo = Demo.load(args.checkpoint, models, args.device)
    # One image per request: for a small model more threads cost more in synchronization than they save
    # (the demo run: 60 ms with 1 thread, 400 ms with 2 on 2 busy cores), so the run's own count is kept.
    threads = args.threads or demo.config.run.threads
    if threads:
        torch.set_num_threads(threads)
    serve(demo, args.host, args.port)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `ui`."""
    parser = subparsers.add_parser(
        "ui", help="local web page: two masking strategies side by side on a scene or your image"
    )
    parser.add_argument("checkpoint", help="a guidedmae pretraining checkpoint or an official MultiMAE .pth")
    parser.add_argument("--port", type=int, default=7860, help="default 7860")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: the run's run.threads, else torch's)"
    )
    parser.add_argument("--pseudolabel-depth", help="a depth model's folder (transformers), to fill in depth")
    parser.add_argument("--pseudolabel-semseg", help="a segmentation model's folder, to fill in semseg")
    parser.set_defaults(func=run)
