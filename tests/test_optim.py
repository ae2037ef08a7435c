"""AdamW parameter groups (no decay on norms, biases, tokens, embeddings) and the peak lr of a run."""

import pytest
import torch

from guidedmae.infra.optim import OptimConfig, build_optimizer, param_groups, peak_lr, set_lr
from guidedmae.models import MultiMAE
from tests.conftest import tiny_config


def names_in(model, group) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_skips_norms_biases_tokens_and_embeddings():
    model = MultiMAE(tiny_config())
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decayed, exempt = names_in(model, decay), names_in(model, no_decay)
    assert {
        "encoder.0.attn.qkv.weight",
        "encoder.1.mlp.fc2.weight",
        "input_adapters.rgb.proj.weight",
    } <= decayed
    assert {
        "global_tokens",
        "encoder.0.norm1.weight",
        "encoder.0.attn.qkv.bias",
        "input_adapters.semseg.class_emb.weight",
        "output_adapters.rgb.mask_token",
    } <= exempt
    # Fixed sin-cos position embeddings are not trained at all.
    assert "input_adapters.rgb.pos_emb" not in decayed | exempt
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert decayed | exempt == trainable and not decayed & exempt


def test_one_step_decays_only_the_weight_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.5))
    set_lr(optimizer, 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only weight decay moves a parameter
    optimizer.step()
    weight, bias, norm_weight, norm_bias = (p.detach() for p in model.parameters())
    assert torch.allclose(weight, before[0] * (1 - 0.1 * 0.5))
    assert (
        torch.equal(bias, before[1])
        and torch.equal(norm_weight, before[2])
        and torch.equal(norm_bias, before[3])
    )
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8


def test_peak_lr_scales_blr_by_the_total_batch_and_lr_scale():
    assert peak_lr(OptimConfig(blr=1e-4), total_batch=2048) == pytest.approx(8e-4)  # 256 x 8 GPUs
    assert peak_lr(OptimConfig(blr=1e-4, lr_scale=10), total_batch=256) == pytest.approx(1e-3)
    assert peak_lr(OptimConfig(lr=3e-4, blr=1.0), total_batch=4096) == pytest.approx(3e-4)


def test_groups_may_carry_an_lr_scale():
    optimizer = torch.optim.AdamW(
        [
            {"params": [torch.nn.Parameter(torch.ones(1))], "lr_scale": 0.5},
            {"params": [torch.nn.Parameter(torch.ones(1))]},
        ]
    )
    set_lr(optimizer, 2e-3)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 2e-3]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"accum_steps": 0}, r"optim.accum_steps=0; expected an integer >= 1"),
        ({"betas": (0.9, 1.0)}, r"optim.betas=\(0.9, 1.0\); expected two values in \[0, 1\)"),
        ({"lr": -1.0}, r"optim.lr=-1.0"),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(torch.nn.Linear(2, 2), OptimConfig(**settings))
