"""Shared test set-up: the official-MultiMAE fixtures, small model configs and tiny pseudo-label models."""

from pathlib import Path

import pytest
import torch

from guidedmae.models import MultiMAEConfig

# ../shared next to the checkout (CI has it; a user's clone may not: those tests then skip).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
PSEUDOLABEL_CLASSES = 7  # of the tiny segmentation model of `pseudolabel_models`


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


@pytest.fixture(scope="session")
def pseudolabel_models(tmp_path_factory) -> dict[str, str]:
    """A DPT depth model and a SegFormer segmentation model (PSEUDOLABEL_CLASSES classes), random, saved as
    save_pretrained folders: what `pseudolabel` and `ui --pseudolabel-*` take, without a download."""
    transformers = pytest.importorskip("transformers")  # a test extra, installed by `make test`
    folder = tmp_path_factory.mktemp("models")
    depth = transformers.DPTForDepthEstimation(
        transformers.DPTConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3],
        )
    )  # fmt: skip
    semseg = transformers.SegformerForSemanticSegmentation(
        transformers.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
            strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=PSEUDOLABEL_CLASSES,
        )
    )  # fmt: skip
    size = {"height": 32, "width": 32}
    depth.save_pretrained(folder / "dpt")
    transformers.DPTImageProcessor(size=size, keep_aspect_ratio=False).save_pretrained(folder / "dpt")
    semseg.save_pretrained(folder / "segformer")
    transformers.SegformerImageProcessor(size=size).save_pretrained(folder / "segformer")
    return {"depth": str(folder / "dpt"), "semseg": str(folder / "segformer")}
