"""The strategies a guided method must beat, and the oracle that tells why it does or does not: coloured
noise (ColorMAE), multi-block masks (I-JEPA / iBOT) and objects-high / objects-low (the batch's semseg)."""

import pytest
import torch

from guidedmae.cli import main
from guidedmae.config import ConfigError, PretrainConfig, load_config
from guidedmae.masking import MaskingConfig, build_strategy, validate_masking
from guidedmae.masking.strategies import ColorNoiseOptions, MultiBlockOptions, ObjectsOptions
from guidedmae.masking.strategies.color_noise import colored_noise
from guidedmae.masking.strategies.multiblock import block_coverage
from guidedmae.models import Tokens
from tests.conftest import tiny_config
from tests.test_pretrain import tiny_config as tiny_config_file

GRID = (8, 8)
MODALITIES = ("rgb", "depth", "semseg")


def tokens_of(batch: int, grid=GRID) -> Tokens:
    count = grid[0] * grid[1]
    return Tokens(torch.zeros(batch, len(MODALITIES) * count, 32), MODALITIES, grid)


def masked_frequency(config: MaskingConfig, samples: int, grid=GRID, class_map=None) -> torch.Tensor:
    """Per position, the share of `samples` images whose rgb token there is hidden: [rows, cols]."""
    model = tiny_config(image_size=grid[0] * 8, patch_size=8)
    strategy = build_strategy(config, model)
    choice = strategy(None, tokens_of(samples, grid), torch.Generator().manual_seed(0), class_map=class_map)
    return choice.selection.masks["rgb"].float().mean(dim=0).view(grid)


@pytest.mark.parametrize(
    "config",
    [
        MaskingConfig(strategy="multiblock"),
        MaskingConfig(strategy="multiblock", multiblock=MultiBlockOptions(blocks=1, scale=(0.3, 0.4))),
        *(
            MaskingConfig(strategy="color_noise", color_noise=ColorNoiseOptions(color=c))
            for c in ("red", "green", "blue")
        ),
    ],
    ids=["multiblock", "one-large-block", "red", "green", "blue"],
)
@pytest.mark.parametrize("num_visible", [48 * 3 // 4, 32])  # 25% and 83% of the tokens hidden
def test_every_position_is_hidden_equally_often(config, num_visible):
    # The known bugs of block masking: border tokens rarely covered, the last row and column never, the
    # centre never (a corner drawn only where the block fits, an exclusive bound). Here every position,
    # corners, last row and column and centre included, is hidden as often as the mean, within noise.
    config = MaskingConfig(**{**config.__dict__, "num_visible": num_visible * 4})  # 3 x 64 tokens
    frequency = masked_frequency(config, samples=4000)
    mean = frequency.mean()
    assert 0.9 * mean < frequency.min() and frequency.max() < 1.1 * mean, frequency
    for position in [(0, 0), (7, 7), (0, 7), (7, 0), (3, 4), (7, 3), (4, 7)]:
        assert frequency[position] > 0.9 * mean


def test_block_coverage_is_uniform_over_positions_and_blocks_have_their_scale():
    coverage = block_coverage(20000, GRID, 1, (0.25, 0.25), (1.0, 1.0), torch.Generator().manual_seed(1))
    # A 4 x 4 block (a quarter of 64 tokens) covers each position with probability 16 / 11^2 (121 corners).
    frequency = (coverage > 0).float().mean(dim=0)
    assert torch.allclose(frequency, torch.full_like(frequency, 16 / 121), atol=0.012)
    assert coverage.max() == 1 and (coverage.sum(dim=1) <= 16).all()  # clipped at the borders, never more


def test_coloured_noise_has_its_spectrum():
    generator = torch.Generator().manual_seed(2)

    def neighbour_correlation(color: str) -> float:
        noise = colored_noise(4000, (16, 16), color, 1.0, 2.0, generator).view(4000, 16, 16)
        a, b = noise[:, :, :-1].flatten(), noise[:, :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    correlations = {
        color: neighbour_correlation(color) for color in ("white", "red", "green", "blue", "purple")
    }
    assert abs(correlations["white"]) < 0.02
    assert correlations["red"] > 0.7  # low-pass: neighbours alike (large blobs)
    assert correlations["blue"] < -0.1  # high-pass: neighbours unlike (spread evenly)
    assert 0.2 < correlations["green"] < correlations["red"]  # band-pass: blobs of one size
    assert correlations["purple"] < 0.1


def test_the_oracle_hides_exactly_the_object_tokens_first():
    # A 4 x 4 grid whose class map (at 1/4 resolution: 2 x 2 ids per token) has shape-class objects on the
    # tokens of the first two rows; 3 x 16 tokens, 24 visible.
    class_map = torch.zeros(2, 8, 8, dtype=torch.long)
    class_map[:, :4, :] = 5  # a shape class of the synthetic scenes
    class_map[:, 4:, :] = 1  # floor
    model = tiny_config()
    grid = (4, 4)
    for select, hidden_first in (("high", slice(0, 8)), ("low", slice(8, 16))):
        config = MaskingConfig(strategy="objects", num_visible=24, objects=ObjectsOptions(select=select))
        strategy = build_strategy(config, model)
        choice = strategy(None, tokens_of(2, grid), torch.Generator().manual_seed(0), class_map=class_map)
        for column, name in enumerate(MODALITIES):
            mask = choice.selection.masks[name]
            hidden = 16 - choice.context.visible_counts[:, column]
            for row, count in zip(mask, hidden.tolist()):
                first = row[hidden_first]
                assert first.sum() == min(count, 8)  # the first 8 (objects or floor) go before any other
    # share: the oracle chooses that share of the hidden tokens, the rest are random
    many = class_map[:1].expand(2000, 8, 8)
    random = MaskingConfig(strategy="objects", num_visible=24, objects=ObjectsOptions(share=0.0))
    frequency = masked_frequency(random, 2000, grid, many).flatten()
    assert torch.allclose(frequency[:8].mean(), frequency[8:].mean(), atol=0.03)
    half = MaskingConfig(strategy="objects", num_visible=24, objects=ObjectsOptions(share=0.5))
    frequency = masked_frequency(half, 2000, grid, many).flatten()
    assert frequency[:8].mean() > frequency[8:].mean() + 0.2


def test_the_oracle_is_refused_where_there_is_no_semseg(tmp_path, capsys):
    with pytest.raises(ValueError, match="the model's inputs \\['rgb', 'depth'\\] or outputs"):
        validate_masking(
            MaskingConfig(strategy="objects"), tiny_config(inputs=("rgb", "depth"), outputs=("rgb",))
        )
    strategy = build_strategy(MaskingConfig(strategy="objects", num_visible=12), tiny_config())
    with pytest.raises(ValueError, match="needs the batch's semseg class map; this batch has none"):
        strategy(None, tokens_of(1, (4, 4)), torch.Generator())
    config = tiny_config_file(tmp_path)
    folder = ["data.source=folder", f"data.root={tmp_path}", "masking.strategy=objects"]
    with pytest.raises(ConfigError, match="does not say which semseg classes are objects; list them in"):
        load_config(PretrainConfig, config, folder)
    load_config(PretrainConfig, config, [*folder, "masking.objects.classes=[3,4]"])


def test_pretraining_with_the_oracle_and_the_baselines_runs(tmp_path):
    for strategy in ("objects", "color_noise", "multiblock"):
        out = tmp_path / strategy
        overrides = [f"out_dir={out}", f"masking.strategy={strategy}", "schedule.total_epochs=1"]
        assert main(["pretrain", str(tiny_config_file(tmp_path)), *overrides]) == 0
        assert (out / "results.json").is_file()
