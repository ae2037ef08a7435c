"""Shared test set-up: the official-MultiMAE fixtures and small model configs."""

from pathlib import Path

import pytest
import torch

from guidedmae.models import MultiMAEConfig

# ../shared next to the checkout (CI has it; a user's clone may not: those tests then skip).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"official MultiMAE fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)


def tiny_config(**overrides) -> MultiMAEConfig:
    """A MultiMAE small enough for unit tests: 32x32 images, 4x4 token grid, dim 32."""
    settings = dict(
        image_size=32,
        patch_size=8,
        dim=32,
        depth=2,
        num_heads=4,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
        semseg_classes=5,
        semseg_class_dim=8,
    )
    return MultiMAEConfig(**{**settings, **overrides})


def random_inputs(config: MultiMAEConfig, batch: int = 2, size: int | None = None, generator=None) -> dict:
    size = size or config.image_size
    return {
        "rgb": torch.randn(batch, 3, size, size, generator=generator),
        "depth": torch.randn(batch, 1, size, size, generator=generator),
        "semseg": torch.randint(0, config.semseg_classes, (batch, size // 4, size // 4), generator=generator),
    }
