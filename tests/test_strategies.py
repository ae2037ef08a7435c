"""The original report's future work as strategies: learned and remembered loss-guided masking, adaptive and mixed
Dirichlet budgets, curricula, Gumbel sampling and per-image random masking; each tested for what it means."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.data.transforms import AugmentConfig, augment_sample
from guidedmae.infra.schedule import Progress
from guidedmae.losses import PatchLosses
from guidedmae.masking import MaskingConfig, build_strategy, from_priorities, gumbel_priorities
from guidedmae.masking.budget import VisibleBudget, adaptive_alphas
from guidedmae.masking.config import AdaptiveBudgetOptions, CurriculumConfig
from guidedmae.masking.source_cells import token_cells
from guidedmae.masking.strategies import (
    AttentionOptions,
    CachedAttentionOptions,
    ColorNoiseOptions,
    LossMemoryOptions,
    MultiBlockOptions,
    PredictedLossOptions,
    ScoutAttentionOptions,
)
from guidedmae.masking.strategies.attention import pool_tokens
from guidedmae.masking.strategies.scout_attention import scout_shape
from guidedmae.masking.strategy import curriculum_share
from guidedmae.models import MultiMAE, Tokens
from tests.conftest import tiny_config

GRID = (4, 4)  # the tiny model's token grid: 32-pixel images, patch 8
MODALITIES = ("rgb", "depth", "semseg")
PER_MODALITY = GRID[0] * GRID[1]


def identity_model() -> MultiMAE:
    """A tiny MultiMAE whose blocks add nothing: the scan's features are the layer-normed embeddings."""
    model = MultiMAE(tiny_config(outputs=())).eval()
    with torch.no_grad():
        for block in model.encoder:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
    return model


def random_tokens(batch: int, seed: int) -> Tokens:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, len(MODALITIES) * PER_MODALITY, 32, generator=generator)
    return Tokens(embeddings, MODALITIES, GRID)


def planted_losses(model: MultiMAE, tokens: Tokens) -> dict[str, torch.Tensor]:
    """A per-patch 'reconstruction loss' the features determine: exp of their first channel."""
    features = model.scan(tokens).features
    return tokens.split(features[..., 0].exp())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.flatten().argsort().argsort().double() for x in (a, b)]
    return torch.corrcoef(torch.stack(ranks))[0, 1].item()


def test_the_predictor_learns_the_planted_order_and_masks_the_hardest_patches():
    model = identity_model()
    config = MaskingConfig(
        strategy="predicted_loss", num_visible=24, predicted_loss=PredictedLossOptions(hidden=32)
    )
    torch.manual_seed(0)
    strategy = build_strategy(config, model.config)
    optimizer = torch.optim.Adam(strategy.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for step in range(300):
        tokens = random_tokens(16, seed=step)
        choice = strategy(model, tokens, generator)
        planted = planted_losses(model, tokens)
        patch_losses = {name: PatchLosses(planted[name], choice.selection.masks[name]) for name in MODALITIES}
        loss = strategy.observe(choice, patch_losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    held_out = random_tokens(32, seed=10_000)
    choice = strategy(model, held_out, generator)
    planted = planted_losses(model, held_out)
    correlation = min(spearman(choice.scores[name], planted[name]) for name in MODALITIES)
    print(f"rank correlation of predicted and planted losses (worst modality): {correlation:.3f}")
    assert correlation > 0.95
    # The masks hold the planted hardest patches of each modality, as many as the budget masks.
    overlaps = []
    for name in MODALITIES:
        masks = choice.selection.masks[name]
        for b in range(len(masks)):
            count = int(masks[b].sum())
            hardest = set(planted[name][b].argsort(descending=True)[:count].tolist())
            if count:
                overlaps.append(len(hardest & set(masks[b].nonzero().flatten().tolist())) / count)
    print(f"masked share of the planted hardest patches: {np.mean(overlaps):.3f}")
    assert np.mean(overlaps) > 0.97


def memory_strategy(momentum: float = 0.5, **options):
    config = MaskingConfig(
        strategy="loss_memory", num_visible=24, loss_memory=LossMemoryOptions(momentum=momentum, **options)
    )
    return build_strategy(config, tiny_config(), num_samples=6)


def whole_views(batch: int) -> torch.Tensor:
    """Every sample seen whole and unflipped: token cells are the source cells."""
    return torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]]).repeat(batch, 1)


def test_the_memory_holds_exactly_the_moving_average_of_what_was_observed():
    strategy = memory_strategy(momentum=0.25)
    model = identity_model()
    indices, views = torch.tensor([4, 1]), whole_views(2)
    tokens = random_tokens(2, seed=0)
    first = {
        name: torch.rand(2, PER_MODALITY, generator=torch.Generator().manual_seed(1)) for name in MODALITIES
    }
    second = {
        name: torch.rand(2, PER_MODALITY, generator=torch.Generator().manual_seed(2)) for name in MODALITIES
    }
    masks = []
    for losses in (first, second):
        choice = strategy(
            model, tokens, torch.Generator().manual_seed(len(masks)), indices=indices, views=views
        )
        masks.append(choice.selection.masks)
        strategy.observe(
            choice, {name: PatchLosses(losses[name], choice.selection.masks[name]) for name in MODALITIES}
        )
    for column, name in enumerate(MODALITIES):
        seen_first, seen_second = masks[0][name], masks[1][name]
        stored_first = torch.where(seen_first, first[name], torch.nan).half()
        both = 0.25 * stored_first.double() + 0.75 * second[name].double()
        expected = torch.where(
            seen_second, torch.where(seen_first, both, second[name].double()).half(), stored_first
        )
        memory = strategy.memory[indices, column]
        assert torch.equal(memory.isnan(), expected.isnan())
        assert torch.equal(memory.nan_to_num(), expected.nan_to_num())
    assert strategy.memory[[0, 2, 3, 5]].isnan().all()  # samples never seen stay unobserved


def test_unseen_cells_get_the_samples_mean_and_the_masks_follow_the_memory():
    strategy = memory_strategy()
    with torch.no_grad():
        strategy.memory[0, :, :8] = torch.arange(8.0).half()  # the first 8 cells of every modality
    recalled = strategy.recall(torch.tensor([0]), torch.arange(PER_MODALITY)[None], torch.Generator())
    for name in MODALITIES:
        assert torch.equal(recalled[name][0, :8], torch.arange(8.0))
        assert torch.equal(recalled[name][0, 8:], torch.full((8,), 3.5))  # mean of 0..7
    choice = strategy(
        identity_model(),
        random_tokens(1, 0),
        torch.Generator(),
        indices=torch.tensor([0]),
        views=whole_views(1),
    )
    for name in MODALITIES:
        masked = choice.selection.masks[name][0].nonzero().flatten().tolist()
        highest = [7, 6, 5, 4][: len(masked)]  # above the prior of 3.5: cells 7, 6, 5, 4
        if len(masked) <= 4:
            assert masked == sorted(highest)


def test_a_flipped_crop_maps_each_token_to_the_source_cell_under_its_centre():
    # The top-right quarter of a 4 x 4 grid, zoomed 2x and flipped: token (0, 0) lies over source
    # row 0.5 + 0.5 * 0.125 (cell 2) and column 0.5 + 0.5 * (1 - 0.125) (cell 3).
    view = torch.tensor([[0.5, 0.5, 0.5, 0.5, 1.0]])
    cells = token_cells(view, (4, 4), 4).view(4, 4)
    assert cells[0].tolist() == [11, 11, 10, 10] and cells[3].tolist() == [15, 15, 14, 14]
    # Through the real augmentation: a source image whose class ids name its memory cells comes out with,
    # under each token's centre, the cell token_cells computes from the sample's view.
    side, memory_grid = 64, 8
    rows, cols = np.meshgrid(
        np.arange(side) * memory_grid // side, np.arange(side) * memory_grid // side, indexing="ij"
    )
    source = {
        "semseg": (rows * memory_grid + cols).astype(np.uint8),
        "rgb": np.zeros((side, side, 3), np.uint8),
    }
    # 36 pixels, 4 x 4 tokens of 9: each token has a centre pixel.
    config = AugmentConfig(size=36, semseg_stride=1, hflip=0.5, scale=(0.1, 0.6))
    flips = 0
    for seed in range(20):
        sample = augment_sample(source, config, torch.Generator().manual_seed(seed))
        centres = sample["semseg"][4::9, 4::9].flatten()
        assert torch.equal(token_cells(sample["view"][None], (4, 4), memory_grid)[0], centres)
        flips += int(sample["view"][4])
    assert 0 < flips < 20


def cached_strategy(refresh: int) -> "torch.nn.Module":
    config = MaskingConfig(
        strategy="cached_attention", num_visible=24, cached_attention=CachedAttentionOptions(refresh=refresh)
    )
    return build_strategy(config, tiny_config(), num_samples=6)


def no_losses(choice) -> dict[str, PatchLosses]:
    """Per-patch losses for `observe` where a strategy learns nothing from them."""
    masks = choice.selection.masks
    return {name: PatchLosses(torch.zeros(mask.shape), mask) for name, mask in masks.items()}


def exact_masks(model: MultiMAE, tokens: Tokens, seed: int) -> dict[str, torch.Tensor]:
    strategy = build_strategy(MaskingConfig(strategy="attention", num_visible=24), model.config)
    return strategy(model, tokens, torch.Generator().manual_seed(seed)).selection.masks


def test_cached_attention_scores_exactly_when_due_and_remembers_in_between():
    model, changed = MultiMAE(tiny_config()).eval(), MultiMAE(tiny_config()).eval()
    strategy = cached_strategy(refresh=3)
    tokens, indices, views = random_tokens(2, seed=0), torch.tensor([4, 1]), whole_views(2)
    exact = model.attention_scores(tokens)
    for visit in range(4):
        # From the second visit on, the model changes: a due visit follows it, the others remember.
        current = model if visit == 0 else changed
        choice = strategy(current, tokens, torch.Generator().manual_seed(visit), indices=indices, views=views)
        strategy.observe(choice, no_losses(choice))
        if visit in (0, 3):  # first visit and the refresh-th after it: the exact pass of the current model
            assert all(torch.equal(choice.selection.masks[name], masks) for name, masks in
                       exact_masks(current, tokens, visit).items())  # fmt: skip
        else:  # whole views: every token reads its own cell, the first model's scores (float16)
            for name in MODALITIES:
                torch.testing.assert_close(choice.scores[name], exact[name].half().float())
    assert strategy.visits.tolist() == [0, 4, 0, 0, 4, 0]
    assert strategy.memory[[0, 2, 3, 5]].isnan().all()


def test_cached_attention_reads_a_flipped_view_from_the_mirrored_cells():
    model, strategy = MultiMAE(tiny_config()).eval(), cached_strategy(refresh=10)
    tokens, index = random_tokens(1, seed=3), torch.tensor([2])
    first = strategy(model, tokens, torch.Generator(), indices=index, views=whole_views(1))
    strategy.observe(first, no_losses(first))
    flipped = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]])
    second = strategy(model, tokens, torch.Generator(), indices=index, views=flipped)
    for name in MODALITIES:
        mirrored = first.scores[name].view(1, *GRID).flip(-1).flatten(1).half().float()
        torch.testing.assert_close(second.scores[name], mirrored)
    # A quarter crop: its 16 tokens read the 4 cells under it (each token its centre's cell).
    quarter = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]])
    third = strategy(model, tokens, torch.Generator(), indices=index, views=quarter)
    stored = first.scores["rgb"].view(*GRID)[:2, :2].half().float()
    expected = stored.repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(third.scores["rgb"].view(*GRID), expected)


def test_a_coarse_attention_pass_scores_averaged_tokens_and_a_full_grid_is_exact():
    model, tokens = MultiMAE(tiny_config()).eval(), random_tokens(2, seed=1)
    pooled = pool_tokens(tokens, 2)
    assert pooled.grid == (2, 2) and pooled.embeddings.shape == (2, 3 * 4, 32)
    depth = tokens.embeddings[:, PER_MODALITY : 2 * PER_MODALITY].view(2, *GRID, 32)
    torch.testing.assert_close(pooled.embeddings[:, 4 + 3], depth[:, 2:, 2:].mean(dim=(1, 2)))

    def masks(grid: int) -> dict[str, torch.Tensor]:
        config = MaskingConfig(strategy="attention", num_visible=24, attention=AttentionOptions(grid=grid))
        strategy = build_strategy(config, model.config)
        return strategy(model, tokens, torch.Generator().manual_seed(0))

    full, coarse = masks(GRID[0]), masks(2)
    exact = exact_masks(model, tokens, 0)
    assert all(torch.equal(full.selection.masks[name], exact[name]) for name in MODALITIES)
    # The coarse scores, upsampled bilinearly: within a 2 x 2 cell they follow the neighbouring cells.
    coarse_scores = model.attention_scores(pooled)
    for name in MODALITIES:
        cell = coarse.scores[name].view(2, *GRID)
        assert torch.allclose(cell.mean(dim=(1, 2)), coarse_scores[name].mean(dim=1), atol=1e-6)
        for scores, hidden in zip(coarse.scores[name], coarse.selection.masks[name]):
            if hidden.any() and (~hidden).any():  # the masks are the top of the upsampled scores
                assert scores[hidden].min() >= scores[~hidden].max()


def visible_agreement(masks: dict, exact: dict) -> dict[str, float]:
    """|V & V_exact| / |V_exact| per modality."""
    return {
        name: ((~masks[name]) & (~exact[name])).sum().item() / (~exact[name]).sum().item() for name in masks
    }


def test_the_scout_learns_the_exact_attention_and_masks_the_untaught_samples_by_it():
    model = MultiMAE(tiny_config(outputs=())).eval()  # random weights: attention that depends on the tokens
    options = ScoutAttentionOptions(exact_share=1.0, dim=32, heads=2)
    torch.manual_seed(0)
    teacher = build_strategy(
        MaskingConfig(strategy="scout_attention", num_visible=12, scout_attention=options), model.config
    )
    alone = build_strategy(  # the same scout with no exact pass: what it predicts on its own
        MaskingConfig(
            strategy="scout_attention", num_visible=12, scout_attention=replace(options, exact_share=0.0)
        ),
        model.config,
    )
    held_out = random_tokens(200, seed=10**6)

    def agreement(strategy) -> dict[str, float]:
        choice = strategy(model, held_out, torch.Generator().manual_seed(0))
        exact = from_priorities(model.attention_scores(held_out), choice.context.visible_counts).masks
        return visible_agreement(choice.selection.masks, exact)

    chance = agreement(build_strategy(MaskingConfig(strategy="random", num_visible=12), model.config))
    alone.load_state_dict(teacher.state_dict())
    before = agreement(alone)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for step in range(300):
        choice = teacher(model, random_tokens(32, seed=step), generator)
        exact = from_priorities(
            model.attention_scores(random_tokens(32, seed=step)), choice.context.visible_counts
        )
        assert all(torch.equal(choice.selection.masks[n], exact.masks[n]) for n in MODALITIES)  # all taught
        loss = teacher.observe(
            choice, {n: PatchLosses(torch.ones(32, PER_MODALITY), exact.masks[n]) for n in MODALITIES}
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    alone.load_state_dict(teacher.state_dict())
    after = agreement(alone)
    for name in MODALITIES:  # an untrained scout agrees by chance, or a little more
        assert after[name] > max(chance[name], before[name]) + 0.15, (chance, before, after)


def test_the_default_scout_is_a_quarter_of_the_encoders_width_in_64_channel_heads():
    assert scout_shape(ScoutAttentionOptions(), 768) == (192, 3)  # MultiMAE-B
    assert scout_shape(ScoutAttentionOptions(), 1024) == (256, 4)  # MultiMAE-L
    assert scout_shape(ScoutAttentionOptions(), 128) == (32, 1)  # the demo
    assert scout_shape(ScoutAttentionOptions(dim=200), 768) == (200, 2)  # heads that divide the width
    assert scout_shape(ScoutAttentionOptions(dim=96, heads=4), 768) == (96, 4)


def test_the_scout_masks_the_first_share_of_the_batch_exactly_and_learns_only_from_it():
    model = MultiMAE(tiny_config(outputs=())).eval()
    config = MaskingConfig(
        strategy="scout_attention",
        num_visible=12,
        scout_attention=ScoutAttentionOptions(exact_share=0.3, dim=16, heads=2),
    )
    strategy = build_strategy(config, model.config)
    tokens = random_tokens(10, seed=3)
    choice = strategy(model, tokens, torch.Generator().manual_seed(0))
    exact = model.attention_scores(tokens)
    exact_masks = from_priorities(exact, choice.context.visible_counts).masks
    with torch.no_grad():
        predicted = tokens.split(strategy.scout(tokens.embeddings))
    assert all(len(choice.predictions[n]) == 3 for n in MODALITIES)  # ceil(0.3 * 10) taught samples
    for name in MODALITIES:
        # The taught samples: the exact scores and masks, and the scout's predictions to learn from.
        torch.testing.assert_close(choice.scores[name][:3], exact[name][:3])
        assert torch.equal(choice.selection.masks[name][:3], exact_masks[name][:3])
        torch.testing.assert_close(choice.predictions[name].detach(), predicted[name][:3])
        # The others: the scout's scores.
        torch.testing.assert_close(choice.scores[name][3:], predicted[name][3:].softmax(-1))
    loss = strategy.learn(choice, {})
    loss.backward()
    # Every parameter learns (none is a constant that the softmax over tokens cancels, as a bias would be).
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in strategy.scout.parameters())
    assert strategy.scout.head.bias is None and strategy.scout.norm.bias is None
    # It learns from the taught samples only: changing the others' scores changes nothing.
    changed = {name: torch.cat([value[:3], value[3:].flip(-1)]) for name, value in choice.scores.items()}
    torch.testing.assert_close(strategy.learn(replace(choice, scores=changed), {}), loss)

    # Nothing taught: a zero loss that still gives every parameter a gradient (DDP expects one).
    untaught = build_strategy(
        replace(config, scout_attention=replace(config.scout_attention, exact_share=0.0)), model.config
    )
    choice = untaught(model, tokens, torch.Generator().manual_seed(0))
    assert all(len(choice.predictions[n]) == 0 for n in MODALITIES)
    loss = untaught.learn(choice, {})
    loss.backward()
    assert loss.item() == 0 and all(p.grad is not None for p in untaught.scout.parameters())


def test_adaptive_alphas_follow_the_harder_modality_and_respect_the_floor():
    harder_rgb = torch.tensor([2.0, 1.0, 1.0])
    more = adaptive_alphas(harder_rgb, concentration=1.0, temperature=1.0, sign=1, floor=0.1)
    fewer = adaptive_alphas(harder_rgb, concentration=1.0, temperature=1.0, sign=-1, floor=0.1)
    assert more[0] > more[1] == more[2] and fewer[0] < fewer[1] == fewer[2]
    assert more.sum().item() == pytest.approx(3.0)  # the total concentration is kept
    assert adaptive_alphas(torch.tensor([100.0, 1.0, 1.0]), 1.0, 0.2, -1, 0.1)[0] == pytest.approx(0.1)
    # The budget moves its visible tokens toward the modality whose loss average is higher.
    masking = MaskingConfig(num_visible=24, budget="adaptive", adaptive=AdaptiveBudgetOptions(momentum=0.5))
    budget = VisibleBudget(masking, MODALITIES)
    assert budget.alphas() == [1.0, 1.0, 1.0]  # symmetric until the first observation
    for _ in range(5):
        budget.observe(torch.tensor([3.0, 1.0, 1.0]))
    assert budget.loss_averages.tolist() == [3.0, 1.0, 1.0]
    counts = budget(2000, [16, 16, 16], torch.Generator().manual_seed(0)).double().mean(dim=0)
    assert counts[0] > counts[1] + 3 and counts[0] > counts[2] + 3
    assert set(budget.scalars()) == {"alpha_rgb", "alpha_depth", "alpha_semseg"}


def test_a_mixture_draws_one_alpha_vector_per_sample():
    masking = MaskingConfig(
        num_visible=24, budget="mixture", alpha_mixture=[[50.0, 0.1, 0.1], [0.1, 0.1, 50.0]]
    )
    counts = VisibleBudget(masking, MODALITIES)(400, [16, 16, 16], torch.Generator().manual_seed(0))
    mostly_rgb, mostly_semseg = (counts[:, 0] >= 15).sum().item(), (counts[:, 2] >= 15).sum().item()
    assert mostly_rgb + mostly_semseg == 400 and 150 < mostly_rgb < 250


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("none", [1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.0, 0.125, 0.25, 0.5]),
        ("cosine", [0.0, 0.25 * (1 - math.cos(math.pi / 4)), 0.25, 0.5]),
        ("step", [0.0, 0.0, 0.5, 0.5]),
    ],
)
def test_the_curriculum_share_at_known_points_of_the_run(shape, expected):
    curriculum = CurriculumConfig(shape=shape, start=0.0, end=0.5, at=0.5)
    assert [curriculum_share(curriculum, f) for f in (0.0, 0.25, 0.5, 1.0)] == pytest.approx(expected)


def test_a_half_guided_step_masks_the_top_half_and_the_rest_at_random():
    model = identity_model()
    config = MaskingConfig(
        strategy="attention", num_visible=24, curriculum=CurriculumConfig(shape="linear", start=0.0, end=1.0)
    )
    strategy = build_strategy(config, model.config)
    tokens = random_tokens(64, seed=3)
    scores = model.attention_scores(tokens)
    choice = strategy(model, tokens, torch.Generator().manual_seed(0), Progress(step=50, fraction=0.5))
    random_hits = []
    for name in MODALITIES:
        for b in range(64):
            mask = choice.selection.masks[name][b]
            masked = int(mask.sum())
            guided = round(0.5 * masked)
            order = scores[name][b].argsort(descending=True).tolist()
            assert all(mask[order[:guided]])  # the strategy's top choices are masked
            rest = order[guided:]
            random_hits.append(mask[rest].double().mean().item() if rest else 0)
    # The other masked tokens are spread over the rest, not its top: about (masked - guided) / rest.
    assert 0.2 < np.mean(random_hits) < 0.6


def test_gumbel_sampling_is_top_k_when_cold_and_chance_when_hot():
    generator = torch.Generator().manual_seed(0)
    scores = {"rgb": torch.rand(500, 40, generator=generator) + 0.01}
    counts = torch.full((500, 1), 30)  # 10 masked of 40
    top = from_priorities({"rgb": scores["rgb"]}, counts).masks["rgb"]
    cold = from_priorities(gumbel_priorities(scores, "high", 1e-4, generator), counts).masks["rgb"]
    hot = from_priorities(gumbel_priorities(scores, "high", 1e4, generator), counts).masks["rgb"]
    assert torch.equal(cold, top)
    overlap = (hot & top).sum().item() / top.sum().item()
    assert overlap == pytest.approx(10 / 40, abs=0.02)


def test_random_images_are_masked_at_random_and_the_others_by_the_strategy():
    model = identity_model()
    config = MaskingConfig(strategy="attention", num_visible=24, random_images=0.5)
    choice = build_strategy(config, model.config)(
        model, random_tokens(200, 4), torch.Generator().manual_seed(0)
    )
    tokens = random_tokens(200, 4)
    top = from_priorities(model.attention_scores(tokens), choice.context.visible_counts).masks
    guided = torch.stack([(choice.selection.masks[n] == top[n]).all(dim=1) for n in MODALITIES]).all(dim=0)
    assert 60 < guided.sum().item() < 140  # about half the images follow the attention exactly


STRATEGY_CONFIGS = [
    MaskingConfig(strategy="predicted_loss"),
    MaskingConfig(strategy="predicted_loss", sampling="gumbel", temperature=0.5),
    MaskingConfig(strategy="loss_memory", loss_memory=LossMemoryOptions(explore=0.5, select="low")),
    MaskingConfig(strategy="cached_attention", cached_attention=CachedAttentionOptions(refresh=2, noise=0.5)),
    MaskingConfig(strategy="attention", attention=AttentionOptions(grid=2, select="low")),
    MaskingConfig(
        strategy="scout_attention", scout_attention=ScoutAttentionOptions(exact_share=0.5, dim=16, heads=2)
    ),
    MaskingConfig(strategy="attention", curriculum=CurriculumConfig(shape="cosine"), random_images=0.3),
    MaskingConfig(strategy="attention", budget="adaptive"),
    MaskingConfig(strategy="random", budget="mixture", alpha_mixture=[[1.0, 2.0, 3.0], [3.0, 1.0, 1.0]]),
    MaskingConfig(
        strategy="color_noise", color_noise=ColorNoiseOptions(color="red", sigma=0.5, sigma_wide=1.0)
    ),
    MaskingConfig(strategy="multiblock", multiblock=MultiBlockOptions(blocks=2)),
]


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(STRATEGY_CONFIGS),
    st.integers(0, 3 * PER_MODALITY),
    st.integers(0, 2**31),
    st.floats(0, 0.99),
)
def test_every_strategy_keeps_the_budget_and_is_reproducible_from_its_seed(
    config, num_visible, seed, fraction
):
    config = replace(config, num_visible=num_visible)
    model = identity_model()

    def choose():
        torch.manual_seed(0)  # the same predictor weights
        strategy = build_strategy(config, model.config, num_samples=8)
        return strategy(
            model, random_tokens(3, seed % 100), torch.Generator().manual_seed(seed),
            Progress(step=10, fraction=fraction), indices=torch.tensor([0, 5, 7]), views=whole_views(3),
        )  # fmt: skip

    first, second = choose(), choose()
    for column, name in enumerate(MODALITIES):
        visible = (~first.selection.masks[name]).sum(dim=1)
        assert torch.equal(visible, first.context.visible_counts[:, column])
        assert torch.equal(first.selection.masks[name], second.selection.masks[name])
    assert first.selection.ids_keep.shape == (3, num_visible)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            dict(budget="adaptive", alphas=[1.0, 2.0, 3.0]),
            "masking.budget=adaptive scales one base concentration",
        ),
        (dict(budget="mixture"), "masking.budget=mixture needs a list of alpha vectors"),
        (
            dict(alpha_mixture=[[1.0, 1.0, 1.0]]),
            "masking.alpha_mixture is set but masking.budget='dirichlet'",
        ),
        (
            dict(curriculum=CurriculumConfig(shape="linear")),
            "apply to guided strategies; masking.strategy='random'",
        ),
        (dict(sampling="gumbel"), "masking.sampling apply to guided strategies"),
        (
            dict(strategy="loss_memory", loss_memory=LossMemoryOptions(prior="zero")),
            "masking.loss_memory.prior='zero'",
        ),
        (
            dict(strategy="cached_attention", cached_attention=CachedAttentionOptions(refresh=0)),
            r"masking.cached_attention.refresh=0; expected >= 1",
        ),
        (
            dict(strategy="scout_attention", scout_attention=ScoutAttentionOptions(dim=10, heads=3)),
            r"masking.scout_attention.depth=2, dim=10, heads=3; expected depth >= 1 and dim \(0 = a quarter",
        ),
        (
            dict(strategy="scout_attention", scout_attention=ScoutAttentionOptions(exact_share=1.5)),
            r"masking.scout_attention.exact_share=1.5; expected a value in \[0, 1\]",
        ),
        (
            dict(attention=AttentionOptions(grid=5)),
            r"masking.attention.grid=5; expected 0 \(every token\) or 1..4",
        ),
        (
            dict(
                strategy="predicted_loss", sampling="gumbel", predicted_loss=PredictedLossOptions(noise=0.5)
            ),
            "choose one kind of randomness",
        ),
    ],
)
def test_bad_settings_name_the_key(change, message):
    from guidedmae.masking import validate_masking

    with pytest.raises(ValueError, match=message):
        validate_masking(MaskingConfig(num_visible=10, **change), tiny_config())


def test_block_masking_hides_whole_blocks_and_keeps_the_budget():
    tokens = random_tokens(4, seed=1)  # 4 x 4 tokens per modality
    strategy = build_strategy(MaskingConfig(strategy="block", num_visible=12), tiny_config())
    choice = strategy(None, tokens, torch.Generator().manual_seed(0))
    counts = choice.context.visible_counts
    for index, name in enumerate(MODALITIES):
        # [B, block row, block column, the block's 4 tokens]
        masks = choice.selection.masks[name].view(-1, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).flatten(3)
        assert ((~masks).sum(dim=(1, 2, 3)) == counts[:, index]).all()
        # At most one block per image is partly masked: the one where the budget runs out.
        partial = ((masks.sum(-1) > 0) & (masks.sum(-1) < 4)).sum(dim=(1, 2))
        assert (partial <= 1).all()
