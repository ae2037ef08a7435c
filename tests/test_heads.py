"""Fine-tuning heads and the encoder + head model: token layouts, pooling, freezing, layer ids."""

import pytest
import torch
from conftest import tiny_config

from guidedmae.models import MultiMAE
from guidedmae.models.heads import LinearHead, spread_layers, token_map, unfold_predictions
from guidedmae.models.task_model import FineTuneModel, encoder_layer_id
from guidedmae.tasks import HeadConfig, build_head

SMALL_DENSE = dict(
    num_classes=7, dim=64, preds_per_patch=16, depth=1, feature_dim=16, layer_dims=(8, 8, 16, 16)
)


def encoder_config(**overrides):
    return tiny_config(outputs=(), inputs=("rgb", "depth"), depth=4, **overrides)


def finetune_model(head: HeadConfig, freeze_encoder: bool = False, **overrides) -> FineTuneModel:
    config = encoder_config(**overrides)
    return FineTuneModel(MultiMAE(config), build_head(head, config), freeze_encoder)


def inputs(size: int, batch: int = 2) -> dict[str, torch.Tensor]:
    return {"rgb": torch.randn(batch, 3, size, size), "depth": torch.randn(batch, 1, size, size)}


def test_spread_layers_gives_dpt_hooks_for_vit_base_and_every_block_of_a_four_block_encoder():
    assert spread_layers(12) == (2, 5, 8, 11)
    assert spread_layers(4) == (0, 1, 2, 3)
    assert spread_layers(24) == (5, 11, 17, 23)


def test_token_map_places_token_r_c_of_the_chosen_modality_at_row_r_column_c():
    grid, dim = (2, 3), 4
    per_modality = grid[0] * grid[1]
    # Token t of modality m carries the value 100 * m + t in every channel; one global token at the end.
    values = torch.cat([torch.arange(per_modality) + 100 * m for m in range(2)] + [torch.tensor([-1])])
    encoded = values[None, :, None].expand(1, -1, dim).float()
    depth_map = token_map(encoded, ("rgb", "depth"), grid, ("depth",))
    assert depth_map.shape == (1, dim, 2, 3)
    assert depth_map[0, 0].tolist() == [[100, 101, 102], [103, 104, 105]]
    both = token_map(encoded, ("rgb", "depth"), grid, ("rgb", "depth"))
    assert both.shape == (1, 2 * dim, 2, 3)
    assert both[0, 0, 1, 2].item() == 5 and both[0, dim, 1, 2].item() == 105
    with pytest.raises(ValueError, match="semseg"):
        token_map(encoded, ("rgb", "depth"), grid, ("semseg",))


def test_unfold_predictions_lays_out_each_token_as_row_column_channel_blocks():
    side, channels = 2, 3
    x = torch.randn(2, 3, 4, side * side * channels)
    out = unfold_predictions(x, side)
    assert out.shape == (2, channels, 3 * side, 4 * side)
    for row, col, in_row, in_col, channel in [(0, 0, 0, 0, 0), (2, 3, 1, 0, 2), (1, 2, 1, 1, 1)]:
        feature = (in_row * side + in_col) * channels + channel
        assert out[1, channel, row * side + in_row, col * side + in_col] == x[1, row, col, feature]


def test_linear_head_mean_pools_every_token_including_the_global_one_or_reads_the_global_token():
    encoded = torch.randn(2, 5, 8)
    for pool, pooled in (("mean", encoded.mean(dim=1)), ("global", encoded[:, -1])):
        head = LinearHead(8, 3, depth=2, pool=pool, init_scale=1.0)
        expected = head.head(torch.nn.functional.layer_norm(pooled, (8,), eps=1e-6))
        assert torch.allclose(head([encoded], ("rgb",), (2, 2), (16, 16)), expected, atol=1e-6)
    with pytest.raises(ValueError, match="head.pool='max'"):
        LinearHead(8, 3, depth=2, pool="max")


def test_linear_head_init_scale_shrinks_the_initial_classifier():
    torch.manual_seed(0)
    full = LinearHead(32, 10, depth=2, init_scale=1.0).head.weight
    torch.manual_seed(0)
    small = LinearHead(32, 10, depth=2, init_scale=0.001).head.weight
    assert torch.allclose(small, full * 0.001)


def test_encode_layers_last_entry_equals_encode_and_order_follows_the_request():
    model = MultiMAE(encoder_config()).eval()
    embeddings = model.tokenize(inputs(32)).embeddings
    first, last, again = model.encode_layers(embeddings, (0, 3, 0))
    assert torch.allclose(last, model.encode(embeddings), atol=1e-6)
    assert torch.equal(first, again) and not torch.allclose(first, last)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.encode_layers(embeddings, (4,))


@pytest.mark.parametrize(
    ("task", "kind", "size", "shape"),
    [
        ("classification", "", 32, (2, 7)),
        ("semseg", "convnext", 24, (2, 7, 24, 24)),  # a 3x3 token grid: odd sizes stay aligned
        ("semseg", "dpt", 24, (2, 7, 24, 24)),
        ("depth", "dpt", 24, (2, 1, 24, 24)),
        ("depth", "convnext", 32, (2, 1, 32, 32)),
    ],
)
def test_finetune_model_predicts_at_the_input_resolution_and_trains_every_part(task, kind, size, shape):
    model = finetune_model(HeadConfig(task=task, kind=kind, **SMALL_DENSE))
    out = model(inputs(size))
    assert out.shape == shape
    out.square().mean().backward()
    block_grads = [block.attn.qkv.weight.grad for block in model.encoder.encoder]
    used = model.head.layers
    # Blocks up to the deepest one the head reads receive gradients; DPT reads all four.
    assert all(grad is not None and grad.abs().sum() > 0 for grad in block_grads[: max(used) + 1])
    assert all(p.grad is not None for p in model.head.parameters() if p.requires_grad)


def test_dense_head_reads_only_its_readout_modalities():
    config = encoder_config()
    head = build_head(HeadConfig(task="semseg", readout=("rgb",), **SMALL_DENSE), config)
    model = FineTuneModel(MultiMAE(config), head).eval()
    x = inputs(32)
    # The depth tokens still shape the rgb tokens through attention; only rgb tokens are read out.
    assert head.proj_dec.in_features == config.dim
    assert model(x).shape == (2, 7, 32, 32)
    with pytest.raises(ValueError, match="not among model.inputs"):
        build_head(HeadConfig(task="semseg", readout=("semseg",), **SMALL_DENSE), config)


def test_linear_probe_freezes_the_encoder_and_keeps_it_in_eval_mode():
    model = finetune_model(HeadConfig(num_classes=3), freeze_encoder=True, drop_path=0.5)
    model.train()
    assert not model.encoder.training and model.head.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    x = inputs(32)
    # Drop path is off in the frozen encoder: two training-mode passes agree.
    assert torch.equal(model(x), model(x))
    model(x).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.head.weight.grad is not None


def test_full_finetuning_applies_drop_path_in_training_only():
    model = finetune_model(HeadConfig(num_classes=3), drop_path=0.5)
    x = inputs(32, batch=8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_layer_ids_follow_multimae_optim_factory():
    depth = 4
    assert encoder_layer_id("input_adapters.rgb.proj.weight", depth) == 0
    assert encoder_layer_id("global_tokens", depth) == 0
    assert encoder_layer_id("encoder.0.norm1.weight", depth) == 1
    assert encoder_layer_id("encoder.3.mlp.fc2.bias", depth) == 4
    model = finetune_model(HeadConfig(num_classes=3))
    ids = {name: model.layer_id(name) for name, _ in model.named_parameters()}
    assert ids["encoder.encoder.2.attn.qkv.weight"] == 3
    assert ids["head.head.weight"] == ids["head.norm.bias"] == depth + 1
    assert set(ids.values()) == set(range(depth + 2))
    assert "encoder.global_tokens" in model.no_weight_decay()


def test_head_config_rejects_unknown_tasks_and_kinds_naming_them():
    with pytest.raises(ValueError, match="head.task='detection'"):
        HeadConfig(task="detection")
    with pytest.raises(ValueError, match="head.kind='knn' for task semseg"):
        HeadConfig(task="semseg", kind="knn")
    assert HeadConfig(task="depth").head_kind == "dpt" and HeadConfig(task="depth").out_channels == 1


def test_finetune_model_refuses_an_encoder_with_decoders():
    with pytest.raises(ValueError, match="outputs=()"):
        FineTuneModel(MultiMAE(tiny_config()), build_head(HeadConfig(num_classes=3), tiny_config()))
