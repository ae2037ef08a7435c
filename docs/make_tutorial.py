"""Run docs/tutorial.ipynb on a pretraining checkpoint and save it with its outputs, which the site shows
(mkdocs-jupyter renders them as they are: the site build runs nothing).

python docs/make_tutorial.py [--checkpoint runs/demo/checkpoint-last.pt]

The notebook reads `make demo`'s checkpoint; --checkpoint runs it on another file of the same kind, and the
saved cells keep the demo's path. The saved notebook records a digest of its code cells, so that
tests/test_tutorial.py can tell outputs of the cells as written from stale ones; the test also runs the
notebook on a model it makes.
"""

import argparse
import copy
import hashlib
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).with_name("tutorial.ipynb")
DEMO_CHECKPOINT = "runs/demo/checkpoint-last.pt"
# The line of the first code cell that names the checkpoint the notebook reads.
CHECKPOINT_LINE = re.compile(r'^checkpoint = Path\("[^"]*"\)', re.M)


def code_digest(notebook: nbformat.NotebookNode) -> str:
    """sha256 over the sources of the code cells, in order."""
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()


def with_checkpoint(notebook: nbformat.NotebookNode, checkpoint: Path) -> nbformat.NotebookNode:
    """A copy of the notebook that reads `checkpoint` (an absolute path) instead of the demo's."""
    changed = copy.deepcopy(notebook)
    first = next(cell for cell in changed.cells if cell.cell_type == "code")
    if not CHECKPOINT_LINE.search(first.source):
        raise ValueError(f"{NOTEBOOK}: its first code cell has no line `checkpoint = Path(...)`")
    first.source = CHECKPOINT_LINE.sub(f'checkpoint = Path("{checkpoint.resolve()}")', first.source)
    return changed


def execute(notebook: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook run top to bottom in a fresh kernel, from the docs folder (as a reader runs it); an
    error in a cell raises, naming it."""
    executed = copy.deepcopy(notebook)
    client = NotebookClient(
        executed,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the saved file
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    return executed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path(DEMO_CHECKPOINT))
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint; `make demo` writes {DEMO_CHECKPOINT}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    executed = execute(with_checkpoint(notebook, args.checkpoint))
    for cell, ran in zip(notebook.cells, executed.cells, strict=True):  # outputs onto the cells as written
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    notebook.metadata["guidedmae"] = {"code_digest": code_digest(notebook)}
    nbformat.write(notebook, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size // 1024} KiB), run on {args.checkpoint}")


if __name__ == "__main__":
    main()
