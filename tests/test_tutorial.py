"""The tutorial notebook (docs/tutorial.ipynb) as the site shows it: its saved outputs are those of its cells
as written, and the cells run on today's code, giving outputs of the same kinds."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
import torch
from test_visualize import TINY

from guidedmae.config import DataConfig, ModelSettings, PretrainConfig, PretrainEvalConfig, config_to_dict
from guidedmae.data.transforms import AugmentConfig
from guidedmae.masking import MaskingConfig
from guidedmae.models import MultiMAE

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_maker():
    """docs/make_tutorial.py, the script that saves the notebook with its outputs."""
    spec = importlib.util.spec_from_file_location("make_tutorial", DOCS / "make_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_kinds(notebook: nbformat.NotebookNode) -> list[list[tuple[str, ...]]]:
    """Per code cell, each output's type and, for data, its formats (text/plain, image/png, ...)."""
    return [
        [(output.output_type, *sorted(output.get("data", {}))) for output in cell.outputs]
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


@pytest.fixture(scope="module")
def saved() -> nbformat.NotebookNode:
    return nbformat.read(DOCS / "tutorial.ipynb", as_version=4)


def test_the_saved_outputs_are_those_of_the_cells_as_written(saved):
    maker = load_maker()
    assert saved.metadata["guidedmae"]["code_digest"] == maker.code_digest(saved), (
        "a code cell changed since the outputs were saved: run python docs/make_tutorial.py"
    )
    code = [cell for cell in saved.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))  # one run, top to bottom
    assert all(cell.outputs for cell in code)
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    assert ("display_data", "image/png", "text/plain") in output_kinds(saved)[-1]  # the pictures


def test_the_tutorial_runs_on_a_model_and_gives_the_outputs_the_page_shows(saved, tmp_path):
    """On a small random-weight model with the run's config (the notebook reads both from the checkpoint):
    every cell runs, and each gives outputs of the kinds the saved notebook holds."""
    config = PretrainConfig(
        model=ModelSettings(**TINY),
        masking=MaskingConfig(strategy="attention", num_visible=8),
        data=DataConfig(num_samples=16, batch_size=4, augment=AugmentConfig(size=32)),
        eval=PretrainEvalConfig(num_samples=16),
    )
    model = MultiMAE(config.model.architecture(config.modalities))
    checkpoint = tmp_path / "checkpoint-last.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(config), "step": 0}, checkpoint)
    maker = load_maker()
    executed = maker.execute(maker.with_checkpoint(saved, checkpoint), timeout=120)
    assert output_kinds(executed) == output_kinds(saved)
