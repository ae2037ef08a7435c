"""The MultiMAE architecture: official parameter names, the step-wise forward, input validation."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from guidedmae.masking import from_masks
from guidedmae.models import MultiMAE, preset_config
from guidedmae.models.adapters import PatchInputAdapter, SemSegInputAdapter, sincos_pos_emb
from guidedmae.models.vit import attend
from tests.conftest import random_inputs, tiny_config


def official_keys(fixtures_dir) -> dict[str, tuple[int, ...]]:
    rows = (
        line.split("\t") for line in (fixtures_dir / "official-multimae-b-keys.tsv").read_text().splitlines()
    )
    return {name: tuple(int(n) for n in shape.strip("()").split(",") if n.strip()) for name, shape in rows}


def test_base_model_has_exactly_the_official_parameter_names_and_shapes(fixtures_dir):
    expected = official_keys(fixtures_dir)
    model = MultiMAE(preset_config("base"))
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert len(expected) == 351
    assert ours == expected
    assert sum(t.numel() for t in model.state_dict().values()) == 98_569_360


@pytest.mark.parametrize(
    ("preset", "dim", "depth", "heads"), [("small", 384, 12, 6), ("large", 1024, 24, 16)]
)
def test_presets_set_the_encoder_size(preset, dim, depth, heads):
    config = preset_config(preset, outputs=())
    assert (config.dim, config.depth, config.num_heads) == (dim, depth, heads)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset_config("huge")


def test_sincos_table_matches_the_official_one_up_to_the_fixture_noise(fixtures_dir):
    # The fixture perturbs every tensor with N(0, 0.02) noise; the transposed table is far off.
    official = torch.load(fixtures_dir / "official-multimae-small/checkpoint.pth", weights_only=False)[
        "model"
    ]
    table = official["input_adapters.rgb.pos_emb"]
    ours = sincos_pos_emb(4, 4, table.shape[1])
    assert (table - ours).std() < 0.03
    assert (table - ours.transpose(-1, -2)).std() > 0.2
    # The first quarter of channels follows the row index: sin(row * 1) at channel 0.
    assert torch.allclose(ours[0, 0, :, 0], torch.sin(torch.arange(4.0)))


def test_position_embeddings_are_fixed_buffers_in_the_state_dict():
    model = MultiMAE(tiny_config())
    pos = dict(model.named_parameters())["input_adapters.rgb.pos_emb"]
    assert not pos.requires_grad
    assert "input_adapters.rgb.pos_emb" in model.no_weight_decay()
    assert "encoder.0.attn.qkv.weight" not in model.no_weight_decay()
    assert "encoder.0.attn.qkv.bias" in model.no_weight_decay()
    assert "input_adapters.semseg.class_emb.weight" in model.no_weight_decay()


def test_stepwise_forward_equals_forward_with_masks():
    config = tiny_config()
    model = MultiMAE(config).eval()
    inputs = random_inputs(config)
    masks = {name: torch.rand(2, 16).argsort(1) >= 3 for name in config.inputs}  # 3 visible each
    tokens = model.tokenize(inputs)
    selection = from_masks(masks)
    stepwise = model.decode(model.encode(tokens.embeddings, selection.ids_keep), tokens, selection)
    direct = model(inputs, masks)
    assert tokens.embeddings.shape == (2, 48, 32) and tokens.grid == (4, 4)
    assert set(direct) == {"rgb", "depth", "semseg", "norm_rgb"}
    assert direct["rgb"].shape == (2, 3, 32, 32)
    assert direct["semseg"].shape == (2, 5, 8, 8)
    for name in direct:
        torch.testing.assert_close(stepwise[name], direct[name], rtol=0, atol=0)


def test_visible_token_order_does_not_change_the_reconstruction():
    # The encoder is permutation-equivariant and the decoders restore the order: only the set matters.
    config = tiny_config()
    model = MultiMAE(config).eval()
    inputs = random_inputs(config, batch=1)
    masks = {name: torch.rand(1, 16).argsort(1) >= 4 for name in config.inputs}
    tokens = model.tokenize(inputs)
    selection = from_masks(masks)
    reversed_keep = selection.ids_keep.flip(1)
    restore = torch.empty_like(selection.ids_restore)
    order = torch.cat([reversed_keep, selection.ids_restore.argsort(1)[:, reversed_keep.shape[1] :]], dim=1)
    restore.scatter_(1, order, torch.arange(order.shape[1])[None])
    shuffled = type(selection)(selection.masks, reversed_keep, restore)
    a = model.decode(model.encode(tokens.embeddings, selection.ids_keep), tokens, selection)
    b = model.decode(model.encode(tokens.embeddings, reversed_keep), tokens, shuffled)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)


def test_masked_input_patches_do_not_influence_the_encoder():
    config = tiny_config(outputs=())
    model = MultiMAE(config).eval()
    inputs = random_inputs(config, batch=1)
    masks = {name: torch.zeros(1, 16, dtype=torch.bool) for name in config.inputs}
    masks["rgb"][0, 0] = True  # rgb patch 0 = pixels [0:8, 0:8]
    selection = from_masks(masks)
    changed = {**inputs, "rgb": inputs["rgb"].clone()}
    changed["rgb"][..., :8, :8] += 10.0
    encoded = [model.encode(model.tokenize(x).embeddings, selection.ids_keep) for x in (inputs, changed)]
    torch.testing.assert_close(encoded[0], encoded[1], rtol=0, atol=0)
    changed["rgb"][..., 8:16, :8] += 10.0  # patch 4, visible
    assert not torch.equal(encoded[0], model.encode(model.tokenize(changed).embeddings, selection.ids_keep))


def test_other_input_sizes_interpolate_the_position_embeddings():
    config = tiny_config()
    model = MultiMAE(config).eval()
    inputs = random_inputs(config, batch=1, size=48)  # 6x6 grid instead of 4x4
    masks = {name: torch.rand(1, 36).argsort(1) >= 6 for name in config.inputs}
    preds = model(inputs, masks)
    assert preds["rgb"].shape == (1, 3, 48, 48) and preds["semseg"].shape == (1, 5, 12, 12)
    assert model.forward_features(inputs).shape == (1, 3 * 36 + 1, 32)


def test_a_subset_of_inputs_is_tokenized_in_model_order():
    config = tiny_config()
    model = MultiMAE(config)
    inputs = random_inputs(config)
    tokens = model.tokenize({"semseg": inputs["semseg"], "rgb": inputs["rgb"]})
    assert tokens.modalities == ("rgb", "semseg")
    split = tokens.split(tokens.embeddings)
    torch.testing.assert_close(split["rgb"], model.input_adapters["rgb"](inputs["rgb"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: {**x, "rgb": x["rgb"][:, :2]}, r"input 'rgb' must be \[B, 3, H, W\]"),
        (lambda x: {**x, "semseg": x["semseg"].float()}, "input 'semseg' must be integer class ids"),
        (lambda x: {**x, "depth": x["depth"][..., :30, :]}, "input 'depth' of size 30x32 is not divisible"),
        (lambda x: {**x, "normals": x["rgb"]}, r"do not fit this model"),
        (lambda x: {**x, "semseg": x["semseg"][:, :4]}, "different token grids"),
    ],
)
def test_bad_inputs_are_named_in_the_error(change, message):
    config = tiny_config()
    with pytest.raises(ValueError, match=message):
        MultiMAE(config).tokenize(change(random_inputs(config)))


def test_masks_must_keep_the_same_count_per_sample_and_cover_every_input():
    config = tiny_config()
    model = MultiMAE(config)
    inputs = random_inputs(config)
    masks = {name: torch.zeros(2, 16, dtype=torch.bool) for name in config.inputs}
    masks["rgb"][0, :3] = True
    with pytest.raises(ValueError, match=r"visible counts per sample: \[45, 48\]"):
        model(inputs, masks)
    with pytest.raises(ValueError, match="expected one per input"):
        model(inputs, {"rgb": masks["rgb"]})


def test_gradients_reach_every_trainable_parameter():
    config = tiny_config()
    model = MultiMAE(config)
    inputs = random_inputs(config)
    masks = {name: torch.rand(2, 16).argsort(1) >= 5 for name in config.inputs}
    preds = model(inputs, masks)
    sum(p.float().square().mean() for p in preds.values()).backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []


def test_semseg_decoder_runs_in_fp32_under_bf16_autocast():
    config = tiny_config()
    model = MultiMAE(config)
    masks = {name: torch.rand(2, 16).argsort(1) >= 4 for name in config.inputs}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = model(random_inputs(config), masks)
    assert preds["semseg"].dtype == torch.float32
    assert preds["rgb"].dtype == torch.bfloat16


def test_drop_path_rises_linearly_with_depth():
    model = MultiMAE(tiny_config(depth=3, drop_path=0.2, outputs=()))
    rates = [getattr(block.drop_path, "drop_prob", 0.0) for block in model.encoder]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize("height, width", [(16, 16), (16, 24)])
def test_patch_embeddings_equal_the_official_convolution(height, width):
    torch.manual_seed(0)
    image = PatchInputAdapter(num_channels=3, patch_size=4, dim=24, image_size=16)
    x = torch.randn(2, 3, height, width)
    expected = torch.nn.functional.conv2d(x, image.proj.weight, image.proj.bias, stride=4)
    torch.testing.assert_close(image.embed(x), expected.flatten(2).transpose(1, 2))

    semseg = SemSegInputAdapter(num_classes=7, class_dim=5, patch_size=8, dim=24, image_size=32, stride=4)
    ids = torch.randint(0, 7, (2, height // 2, width // 2))
    per_pixel = semseg.class_emb(ids).permute(0, 3, 1, 2)  # [B, class_dim, H, W], as the official adapter
    expected = torch.nn.functional.conv2d(per_pixel, semseg.proj.weight, semseg.proj.bias, stride=2)
    torch.testing.assert_close(semseg.embed(ids), expected.flatten(2).transpose(1, 2))


class Ops(TorchDispatchMode):
    """Records the name of every aten op run inside it."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_and_its_gradients_equal_softmax_attention(dtype):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    weights = (reference[0] @ reference[1].transpose(-2, -1) / 8**0.5).softmax(dim=-1)
    (weights @ reference[2]).square().sum().backward()
    ours = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = attend(*ours)
    out.float().square().sum().backward()
    tolerance = dict(atol=0.05, rtol=0.05) if dtype == torch.bfloat16 else {}
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), (weights @ reference[2]).detach(), **tolerance)
    for mine, theirs in zip(ours, reference, strict=True):
        torch.testing.assert_close(mine.grad.float(), theirs.grad, **tolerance)


@pytest.mark.parametrize(
    "dtype, tokens, trained, fused",
    [
        (torch.bfloat16, 99, True, False),  # a training step's encoder: explicit products
        (torch.bfloat16, 196, True, False),  # a decoder's
        (torch.float32, 99, True, True),  # fp32: the fused kernel (explicit products were slower in the step)
        (torch.bfloat16, 99, False, True),  # no gradients (the guided-masking pass): the fused kernel
        (torch.bfloat16, 300, True, True),  # a map above 256 x 256: the fused kernel, no stored map
        (torch.float16, 99, True, True),  # fp16 softmax would overflow in explicit products
    ],
)
def test_attention_takes_the_fused_kernel_only_where_it_is_fast(dtype, tokens, trained, fused):
    q, k, v = (torch.randn(1, 2, tokens, 8, dtype=dtype, requires_grad=trained) for _ in range(3))
    with Ops() as recorded:
        attend(q, k, v)
    assert any("scaled_dot_product" in name for name in recorded.names) == fused
