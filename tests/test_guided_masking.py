"""Attention-guided masking on a model whose attention is known: known attention -> known masks.

The model's earlier blocks are identities and its last block's keys read planted embedding channels, so
the attention the global token pays to every token is a closed-form softmax of numbers the test chose.
"""

import math
from dataclasses import replace
from itertools import combinations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.masking import (
    MaskingConfig,
    attention_priorities,
    build_strategy,
    from_priorities,
    reveal_hints,
    sample_visible_counts,
    validate_masking,
)
from guidedmae.masking.strategies import AttentionOptions
from guidedmae.models import MultiMAE, Tokens
from tests.conftest import tiny_config

MODALITIES = ("rgb", "depth", "semseg")
GRID = (6, 6)  # 36 tokens per modality
DIM, HEADS = 32, 4
HEAD_DIM = DIM // HEADS
SHARPNESS = 3.0  # logit of token i in head h: SHARPNESS * planted[i, h]


def known_attention_model() -> MultiMAE:
    """A tiny MultiMAE whose last block gives the global token the logit SHARPNESS * x[i, h] for token i
    in head h, x being the token embeddings: earlier blocks add nothing (zero output projections), the last
    block's query is a constant bias and head h's key reads embedding channel h."""
    model = MultiMAE(tiny_config(dim=DIM, num_heads=HEADS, depth=3, outputs=())).eval()
    with torch.no_grad():
        for block in model.encoder[:-1]:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
        qkv = model.encoder[-1].attn.qkv
        qkv.weight.zero_()
        qkv.bias.zero_()
        for head in range(HEADS):
            qkv.bias[head * HEAD_DIM] = SHARPNESS * math.sqrt(HEAD_DIM)  # query, undoing the 1/sqrt(Dh)
            qkv.weight[DIM + head * HEAD_DIM, head] = 1.0  # key of head h = channel h
        model.global_tokens.copy_(planted_embeddings(torch.zeros(1, 1, HEADS)))
    return model


def planted_embeddings(values: torch.Tensor) -> torch.Tensor:
    """[B, N, H] values in [-1, 1] -> [B, N, DIM] embeddings holding them in channels 0..H-1, the other
    channels chosen so that every token has mean 0 and variance 1: LayerNorm then leaves it as it is."""
    rest = DIM - HEADS
    offset = -values.sum(dim=-1, keepdim=True) / rest  # the rest cancels the planted sum
    spread = ((DIM - values.square().sum(dim=-1, keepdim=True)) / rest - offset.square()).sqrt()
    alternating = torch.tensor([1.0, -1.0]).repeat(rest // 2)
    return torch.cat([values, offset + spread * alternating], dim=-1)


def planted_tokens(batch: int, seed: int) -> tuple[Tokens, torch.Tensor]:
    """Tokens with random planted values, and the per-head attention of the global token they give:
    {modality: [B, H, N_m]}, computed here in closed form."""
    generator = torch.Generator().manual_seed(seed)
    num_tokens = len(MODALITIES) * GRID[0] * GRID[1]
    values = torch.rand(batch, num_tokens, HEADS, generator=generator) * 2 - 1
    tokens = Tokens(planted_embeddings(values), MODALITIES, GRID)
    logits = SHARPNESS * torch.cat([values, torch.zeros(batch, 1, HEADS)], dim=1)  # global token: value 0
    attention = logits.softmax(dim=1)[:, :num_tokens].transpose(1, 2)  # [B, H, N]
    return tokens, dict(zip(MODALITIES, attention.split(GRID[0] * GRID[1], dim=-1)))


def masked_set(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask).flatten().tolist())


def ranked(score: torch.Tensor, descending: bool) -> list[int]:
    return score.argsort(descending=descending).tolist()


def attention(num_visible: int = 98, **options) -> MaskingConfig:
    """Attention-guided masking with the given options (masking.attention.<key>)."""
    return MaskingConfig(strategy="attention", num_visible=num_visible, attention=AttentionOptions(**options))


def choose_masks(config: MaskingConfig, model: MultiMAE, tokens: Tokens, generator: torch.Generator):
    """The masks the strategy of `config` chooses for one batch."""
    return build_strategy(config, model.config)(model, tokens, generator)


def draw_counts(config: MaskingConfig, batch: int, seed: int) -> torch.Tensor:
    """The visible counts a strategy draws first from a generator seeded `seed`."""
    tokens_per_modality = [GRID[0] * GRID[1]] * len(MODALITIES)
    generator = torch.Generator().manual_seed(seed)
    return sample_visible_counts(batch, tokens_per_modality, config.num_visible, 1.0, generator=generator)


@pytest.fixture(scope="module")
def model() -> MultiMAE:
    return known_attention_model()


def test_the_model_reports_the_planted_attention(model):
    tokens, per_head = planted_tokens(batch=3, seed=0)
    scores = model.attention_scores(tokens)
    for name in MODALITIES:
        torch.testing.assert_close(scores[name], per_head[name].mean(dim=1), rtol=0, atol=1e-6)
    one_head = torch.zeros(3, HEADS)
    one_head[:, 2] = 1.0
    scores = model.attention_scores(tokens, head_weights=one_head)
    for name in MODALITIES:
        torch.testing.assert_close(scores[name], per_head[name][:, 2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("select", ["high", "low"])
def test_select_masks_exactly_the_most_or_least_attended_tokens_of_each_modality(model, select):
    config = attention(num_visible=30, select=select)
    tokens, per_head = planted_tokens(batch=6, seed=1)
    choice = choose_masks(config, model, tokens, torch.Generator().manual_seed(7))
    counts = draw_counts(config, 6, seed=7)
    for column, name in enumerate(MODALITIES):
        expected_scores = per_head[name].mean(dim=1)
        for b in range(6):
            num_masked = GRID[0] * GRID[1] - int(counts[b, column])
            first = ranked(expected_scores[b], descending=select == "high")[:num_masked]
            assert masked_set(choice.selection.masks[name][b]) == set(first)


def test_zero_noise_is_plain_top_k_for_every_generator(model):
    tokens, per_head = planted_tokens(batch=4, seed=2)
    config = attention(num_visible=40, noise=0.0)
    for seed in (0, 1, 2):
        choice = choose_masks(config, model, tokens, torch.Generator().manual_seed(seed))
        counts = draw_counts(config, 4, seed)
        for column, name in enumerate(MODALITIES):
            for b in range(4):
                num_masked = GRID[0] * GRID[1] - int(counts[b, column])
                top = ranked(per_head[name][b].mean(dim=0), descending=True)[:num_masked]
                assert masked_set(choice.selection.masks[name][b]) == set(top)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
def test_noise_overlap_with_top_k_follows_the_gaussian_law_toward_chance(alpha):
    # Gaussian scores s and s + alpha * std(s) * eps have correlation rho = 1 / sqrt(1 + alpha^2); the top
    # halves of both then share 1/2 + arcsin(rho) / pi of their tokens: 1 at alpha = 0, falling toward
    # 1/2 (chance) as alpha grows. 3000 rows x 98 masked tokens: the standard error is below 0.002.
    generator = torch.Generator().manual_seed(0)
    scores = {"rgb": torch.randn(3000, 196, generator=generator)}
    counts = torch.full((3000, 1), 98)
    top = from_priorities(attention_priorities(scores, "high"), counts).masks["rgb"]
    noisy = from_priorities(attention_priorities(scores, "high", alpha, generator), counts).masks["rgb"]
    overlap = (noisy & top).sum(dim=1).double().mean().item() / 98
    rho = 1 / math.sqrt(1 + alpha**2)
    assert overlap == pytest.approx(0.5 + math.asin(rho) / math.pi, abs=0.01)


def test_noise_is_scaled_per_sample_and_modality():
    # Scaling one modality's scores by 1000 must not change how much noise reorders it (with one std over
    # both modalities, rgb's order would drown in noise and its overlap with top-k fall to chance).
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 36, generator=generator)
    counts = torch.full((200, 2), 18)
    priorities = attention_priorities(
        {"rgb": scores, "depth": scores * 1000}, "high", 0.5, torch.Generator().manual_seed(1)
    )
    masks = from_priorities(priorities, counts).masks
    assert not torch.equal(masks["rgb"], masks["depth"])  # independent noise per modality
    top = from_priorities({"rgb": scores, "depth": scores}, counts).masks["rgb"]
    overlaps = [(masks[name] & top).sum().item() / top.sum().item() for name in ("rgb", "depth")]
    assert overlaps[0] == pytest.approx(overlaps[1], abs=0.02)


def test_all_heads_as_a_subset_equal_the_mean(model):
    tokens, _ = planted_tokens(batch=5, seed=3)
    mean = choose_masks(attention(), model, tokens, torch.Generator().manual_seed(4))
    subset = choose_masks(attention(heads=HEADS), model, tokens, torch.Generator().manual_seed(4))
    for name in MODALITIES:
        torch.testing.assert_close(subset.scores[name], mean.scores[name], rtol=0, atol=1e-6)
        assert torch.equal(subset.selection.masks[name], mean.selection.masks[name])


def test_head_subsets_average_exactly_k_heads_drawn_per_sample(model):
    tokens, per_head = planted_tokens(batch=8, seed=5)
    choice = choose_masks(attention(heads=2), model, tokens, torch.Generator().manual_seed(6))
    rows = torch.cat([per_head[name] for name in MODALITIES], dim=-1)  # [B, H, N]
    scores = torch.cat([choice.scores[name] for name in MODALITIES], dim=-1)  # [B, N]
    chosen = []
    for b in range(8):
        matches = [
            heads
            for heads in combinations(range(HEADS), 2)
            if torch.allclose(rows[b, list(heads)].mean(dim=0), scores[b], rtol=0, atol=1e-6)
        ]
        assert len(matches) == 1, f"sample {b}: scores are the mean of {matches}, expected one pair"
        chosen.append(matches[0])
    assert len(set(chosen)) > 1  # each sample draws its own subset


def test_hint_reveals_top_tokens_and_masks_the_next_ones_instead(model):
    config = attention(num_visible=45, hint=0.2)
    tokens, per_head = planted_tokens(batch=6, seed=8)
    choice = choose_masks(config, model, tokens, torch.Generator().manual_seed(9))
    counts = draw_counts(config, 6, seed=9)
    num_tokens = GRID[0] * GRID[1]
    pool = round(0.1 * num_tokens)  # AttMask draws the hints from the top 10% of tokens
    num_revealed = 0
    for column, name in enumerate(MODALITIES):
        for b in range(6):
            visible = int(counts[b, column])
            mask = choice.selection.masks[name][b]
            assert int((~mask).sum()) == visible
            order = ranked(per_head[name][b].mean(dim=0), descending=True)
            revealed = set(order[: num_tokens - visible]) - masked_set(mask)  # masked by plain top-k
            assert revealed <= set(order[:pool])
            assert len(revealed) == min(round(0.2 * (num_tokens - visible)), visible, pool)
            rest = [token for token in order if token not in revealed]
            assert masked_set(mask) == set(rest[: num_tokens - visible])
            num_revealed += len(revealed)
    assert num_revealed > 10


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        [
            MaskingConfig(strategy="random"),
            attention(),
            attention(select="low"),
            attention(noise=0.7),
            attention(heads=3),
            attention(hint=0.5),
            attention(score="received", select="low", noise=0.3, heads=1, hint=0.1),
        ]
    ),
    st.integers(0, 3 * 36),
    st.integers(0, 2**31),
)
def test_every_strategy_keeps_the_dirichlet_budget_per_modality(model, config, num_visible, seed):
    config = replace(config, num_visible=num_visible)
    tokens, _ = planted_tokens(batch=3, seed=seed % 100)
    choice = choose_masks(config, model, tokens, torch.Generator().manual_seed(seed))
    counts = draw_counts(config, 3, seed)
    for column, name in enumerate(MODALITIES):
        assert torch.equal((~choice.selection.masks[name]).sum(dim=1), counts[:, column])
    assert choice.selection.ids_keep.shape == (3, num_visible)
    assert (choice.scores is None) == (config.strategy == "random")


@pytest.mark.parametrize(
    "config",
    [
        MaskingConfig(strategy="random"),
        attention(),
        attention(noise=0.5),
        attention(heads=2),
        attention(hint=0.3),
    ],
    ids=["random", "high", "noise", "heads", "hint"],
)
def test_same_seed_same_masks_other_seed_other_masks(model, config):
    tokens, _ = planted_tokens(batch=4, seed=10)

    def masks(seed):
        choice = choose_masks(config, model, tokens, torch.Generator().manual_seed(seed))
        return torch.cat([choice.selection.masks[name] for name in MODALITIES], dim=1)

    assert torch.equal(masks(11), masks(11))
    assert not torch.equal(masks(11), masks(12))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(2, 60),
    st.floats(0.0, 1.0),
    st.floats(0.05, 0.5),
    st.integers(0, 2**31),
)
def test_hints_come_from_the_top_fraction_and_keep_the_count(batch, num_tokens, fraction, top_fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    priority = torch.randn(batch, num_tokens, generator=generator)
    visible = torch.randint(0, num_tokens + 1, (1, 1), generator=generator).repeat(batch, 1)
    hinted = reveal_hints({"m": priority}, visible, fraction, top_fraction, generator)["m"]
    mask = from_priorities({"m": hinted}, visible).masks["m"]
    pool = max(1, round(top_fraction * num_tokens))
    for b in range(batch):
        order = ranked(priority[b], descending=True)
        num_visible = int(visible[b])
        revealed = set(order[: num_tokens - num_visible]) - masked_set(mask[b])  # masked by plain top-k
        assert revealed <= set(order[:pool])
        assert int((~mask[b]).sum()) == num_visible
        assert len(revealed) == min(round(fraction * (num_tokens - num_visible)), num_visible, pool)
        rest = [token for token in order if token not in revealed]
        assert masked_set(mask[b]) == set(rest[: num_tokens - num_visible])


def test_hints_are_drawn_uniformly_from_the_pool():
    # 30 tokens, pool of 3 (top 10%), 20 masked -> 2 hints: each pool token is revealed 2/3 of the time.
    priority = torch.arange(30.0).repeat(6000, 1)  # token 29 ranks first
    visible = torch.full((6000, 1), 10)
    hinted = reveal_hints({"m": priority}, visible, 0.1, generator=torch.Generator().manual_seed(0))["m"]
    revealed = from_priorities({"m": hinted}, visible).masks["m"][:, 27:].logical_not()
    assert (revealed.sum(dim=1) == 2).all()
    torch.testing.assert_close(
        revealed.double().mean(dim=0), torch.full((3,), 2 / 3).double(), atol=0.02, rtol=0
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"select": "middle"}, r"masking.attention.select='middle'; expected 'high' or 'low'"),
        ({"noise": 1.5}, r"masking.attention.noise=1.5; expected a value in \[0, 1\]"),
        ({"hint": -0.1}, r"masking.attention.hint=-0.1; expected a value in \[0, 1\]"),
        ({"heads": 5}, r"masking.attention.heads=5; expected 0 \(all\) .. 4 heads"),
        ({"score": "cls"}, r"masking.attention.score='cls'; expected 'global' or 'received'"),
    ],
)
def test_bad_masking_configs_name_the_key_and_the_expected_values(change, message):
    with pytest.raises(ValueError, match=message):
        validate_masking(attention(10, **change), tiny_config(num_heads=HEADS))


def test_an_unknown_strategy_is_named_with_the_registered_ones():
    with pytest.raises(
        ValueError,
        match=r"masking.strategy='loss'; expected one of \('attention', 'block', 'cached_attention', 'color_noise', 'loss_memory', 'multiblock', 'objects', "
        r"'predicted_loss', 'random', 'scout_attention'\)",
    ):
        validate_masking(MaskingConfig(strategy="loss"), tiny_config())
