"""`guidedmae ui CHECKPOINT`: a local web page comparing two masking strategies on one image.

    guidedmae ui runs/demo/checkpoint-last.pt                          # http://127.0.0.1:7860
    guidedmae ui multimae-b_98_rgb+-depth-semseg_1600e.pth --port 8080
    guidedmae ui runs/demo/checkpoint-last.pt --pseudolabel-depth models/dpt-hybrid-midas \
        --pseudolabel-semseg models/mask2former                        # fill in what an upload lacks

The checkpoint (and the pseudo-label models) load before the page is served: one that does not ends the
command with its message. Needs `pip install 'guidedmae[ui]'` (Gradio); see docs/ui.md.
"""

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator

import torch

from guidedmae.ui.app import require_gradio, serve
from guidedmae.ui.demo import Demo

__all__ = ["add_parser"]


@contextlib.contextmanager
def _own_files_folder() -> Iterator[None]:
    """Gradio's files (uploads, until the page has read them) in a folder of this server's own, removed
    when it stops, rather than left in the system's shared one; GRADIO_TEMP_DIR set by the user is kept.
    Set before gradio is imported: it reads the variable then."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="guidedmae-ui-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["GRADIO_TEMP_DIR"]


def run(args: argparse.Namespace) -> int:
    cpus = os.cpu_count() or 1
    if not 0 <= args.threads <= cpus:
        raise ValueError(
            f"--threads {args.threads}; expected 0 (the run's run.threads, else torch's) or 1..{cpus} (this "
            "machine's CPUs)"
        )
    models = {
        task: folder
        for task, folder in (("depth", args.pseudolabel_depth), ("semseg", args.pseudolabel_semseg))
        if folder
    }
    with _own_files_folder():
        require_gradio()  # missing: said before the model loads
        demo = Demo.load(args.checkpoint, models, args.device)
        # One image per request: for a small model more threads cost more in synchronization than they
        # save (the demo run: 60 ms with 1 thread, 400 ms with 2 on 2 busy cores), so the run's own count
        # is kept, on this machine's CPUs.
        threads = args.threads or min(demo.config.run.threads, cpus)
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
        "--threads",
        type=int,
        default=0,
        help="CPU threads, 1..this machine's CPUs (default: the run's run.threads, else torch's)",
    )
    parser.add_argument("--pseudolabel-depth", help="a depth model's folder (transformers), to fill in depth")
    parser.add_argument("--pseudolabel-semseg", help="a segmentation model's folder, to fill in semseg")
    parser.set_defaults(func=run)
