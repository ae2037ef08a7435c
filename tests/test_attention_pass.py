"""The attention pass of guided masking: right scores, only the needed work, no gradients, one tokenization.

A reference here forms the last block's whole softmax attention map explicitly; the pass must agree with
it while never producing an N x N tensor and never running the parts of the last block a score ignores.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.losses import LossConfig
from guidedmae.masking import MaskingConfig, build_strategy
from guidedmae.models import MultiMAE
from guidedmae.models.vit import merge_heads, split_heads
from tests.conftest import random_inputs, tiny_config


def sharpened_model(**overrides) -> MultiMAE:
    """A random tiny encoder with larger query/key weights, so that attention is far from uniform."""
    model = MultiMAE(tiny_config(depth=3, outputs=(), **overrides)).eval()
    with torch.no_grad():
        for block in model.encoder:
            block.attn.qkv.weight[: 2 * model.config.dim] *= 2.0
    return model


def explicit_attention(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of a block's input x: [B, T, D] -> (map [B, H, T, T], output [B, T, D])."""
    q, k, v = (split_heads(t, attn.num_heads) for t in attn.qkv(x).chunk(3, dim=-1))
    weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return weights, attn.proj(merge_heads(weights @ v))


def reference_maps(model: MultiMAE, embeddings: torch.Tensor) -> torch.Tensor:
    """The last block's full attention map over tokens + global tokens, every block computed explicitly."""
    x = torch.cat([embeddings, model.global_tokens.expand(embeddings.shape[0], -1, -1)], dim=1)
    for block in model.encoder[:-1]:
        x = x + explicit_attention(block.attn, block.norm1(x))[1]
        x = x + block.mlp(block.norm2(x))
    last = model.encoder[-1]
    return explicit_attention(last.attn, last.norm1(x))[0]  # [B, H, T, T]


def head_weight_cases(batch: int, heads: int) -> dict[str, torch.Tensor | None]:
    subset = torch.zeros(batch, heads)
    for b in range(batch):
        subset[b, torch.randperm(heads)[:2]] = 0.5
    return {"mean": None, "one head": torch.eye(heads)[torch.arange(batch) % heads], "two heads": subset}


@pytest.mark.parametrize("num_global_tokens", [1, 2])
@pytest.mark.parametrize("score", ["global", "received"])
def test_scores_equal_the_explicit_softmax_attention_map(score, num_global_tokens):
    model = sharpened_model(num_global_tokens=num_global_tokens)
    tokens = model.tokenize(random_inputs(model.config, batch=3))
    maps = reference_maps(model, tokens.embeddings)
    num_tokens = tokens.embeddings.shape[1]
    # global: the (first) global token's row; received: the mean over every query's row.
    per_head = maps[:, :, num_tokens] if score == "global" else maps.mean(dim=2)
    per_head = per_head[..., :num_tokens]  # [B, H, N]
    assert per_head.std(dim=-1).mean() > 0.5 / num_tokens  # far from uniform: the test can tell tokens apart
    for case, weights in head_weight_cases(3, model.config.num_heads).items():
        expected = per_head.mean(dim=1) if weights is None else (per_head * weights[..., None]).sum(dim=1)
        scores = model.attention_scores(tokens, score, weights)
        assert list(scores) == list(tokens.modalities)
        torch.testing.assert_close(
            torch.cat(list(scores.values()), dim=1), expected, rtol=1e-5, atol=1e-6, msg=f"heads: {case}"
        )


class OutputSizes(TorchDispatchMode):
    """Records every aten op run inside it with the sizes (element counts) of its tensor outputs."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, list[int]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, tuple | list) else (out,)
        self.ops.append((str(func), [t.numel() for t in outputs if isinstance(t, torch.Tensor)]))
        return out


@pytest.mark.parametrize("score", ["global", "received"])
def test_the_pass_never_forms_an_n_by_n_attention_tensor(score):
    # 3 modalities x 16 x 16 tokens + the global token: N = 769, beyond the received score's query chunk.
    model = MultiMAE(tiny_config(image_size=128, depth=3, outputs=())).eval()
    tokens = model.tokenize(random_inputs(model.config, batch=1))
    num_tokens = tokens.embeddings.shape[1] + 1
    with OutputSizes() as recorded:
        model.attention_scores(tokens, score)
    largest = max(size for _, sizes in recorded.ops for size in sizes)
    assert largest < num_tokens * num_tokens * model.config.num_heads
    fused = [op for op, _ in recorded.ops if "scaled_dot_product" in op]
    assert len(fused) == model.config.depth - 1  # every block but the last runs the fused kernel


def test_the_last_block_computes_only_the_keys_and_the_global_query():
    model = MultiMAE(tiny_config(depth=3, outputs=())).eval()
    tokens = model.tokenize(random_inputs(model.config, batch=2))
    batch, num_tokens, dim = tokens.embeddings.shape
    total, heads = num_tokens + 1, model.config.num_heads
    last = model.encoder[-1]
    calls = {name: 0 for name in ("qkv", "proj", "mlp", "norm2")}
    for name in calls:
        module = last.attn.qkv if name == "qkv" else last.attn.proj if name == "proj" else getattr(last, name)
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))

    with FlopCounterMode(display=False) as counted:
        model.attention_scores(tokens)
    with FlopCounterMode(display=False) as one_block, torch.no_grad():  # as the pass runs its blocks
        model.encoder[0](torch.randn(batch, total, dim))
    keys = 2 * batch * total * dim * dim  # every token's key
    query = 2 * batch * dim * dim  # the global token's query
    logits = 2 * batch * heads * total * (dim // heads)  # one row of q k^T per head
    expected = (model.config.depth - 1) * one_block.get_total_flops() + keys + query + logits
    assert counted.get_total_flops() == expected
    assert calls == {"qkv": 0, "proj": 0, "mlp": 0, "norm2": 0}  # no values, projection or MLP


def test_the_pass_runs_without_gradients_and_without_stochastic_depth():
    model = MultiMAE(tiny_config(depth=3, drop_path=0.5, outputs=())).train()
    tokens = model.tokenize(random_inputs(model.config, batch=2))
    grad_enabled = []
    model.encoder[0].register_forward_pre_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    first, second = model.attention_scores(tokens), model.attention_scores(tokens)
    model.eval()
    whole_model = model.attention_scores(tokens)
    assert grad_enabled == [False, False, False]
    for name in tokens.modalities:
        assert not first[name].requires_grad
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
        torch.testing.assert_close(first[name], whole_model[name], rtol=0, atol=0)


def test_bf16_autocast_runs_the_pass_in_bf16_and_returns_float32_scores():
    model = sharpened_model()
    tokens = model.tokenize(random_inputs(model.config, batch=2))
    exact = model.attention_scores(tokens)
    dtypes = set()

    class MatmulDtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] in (
                "mm",
                "addmm",
                "bmm",
                "_scaled_dot_product_flash_attention_for_cpu",
            ):
                dtypes.add((out[0] if isinstance(out, tuple) else out).dtype)
            return out

    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes():
        low = model.attention_scores(tokens)
    assert dtypes == {torch.bfloat16}
    for name in tokens.modalities:
        assert low[name].dtype == torch.float32
        # bf16 keeps ~3 significant digits: the scores still tell the same tokens apart.
        correlation = torch.corrcoef(torch.stack([low[name].flatten(), exact[name].flatten()]))[0, 1]
        assert correlation > 0.99


def test_the_training_step_tokenizes_once_and_trains_the_input_adapters():
    config = tiny_config()
    model = MultiMAE(config).train()
    masking = MaskingConfig(strategy="attention", num_visible=12)
    step = MaskedAutoencoderStep(model, build_strategy(masking, config), LossConfig())
    adapter_calls = {name: 0 for name in config.inputs}
    for name, adapter in model.input_adapters.items():
        adapter.register_forward_hook(
            lambda *_, name=name: adapter_calls.__setitem__(name, adapter_calls[name] + 1)
        )
    seen = {}
    tokenize, attention_scores = model.tokenize, model.attention_scores

    def spy_tokenize(inputs):
        seen["tokens"] = tokenize(inputs)
        return seen["tokens"]

    def spy_attention_scores(tokens, *args):
        seen["pass"] = tokens.embeddings
        return attention_scores(tokens, *args)

    model.tokenize, model.attention_scores = spy_tokenize, spy_attention_scores
    output = step(random_inputs(config), torch.Generator().manual_seed(0))
    output.losses["total"].backward()

    assert adapter_calls == {"rgb": 1, "depth": 1, "semseg": 1}
    # The pass read the very same embeddings, detached: same storage, no graph.
    assert seen["pass"].data_ptr() == seen["tokens"].embeddings.data_ptr()
    assert not seen["pass"].requires_grad and seen["tokens"].embeddings.requires_grad
    assert output.choice.scores is not None
    for name, adapter in model.input_adapters.items():
        assert adapter.proj.weight.grad is not None and adapter.proj.weight.grad.abs().sum() > 0, name
    assert model.input_adapters["semseg"].class_emb.weight.grad.abs().sum() > 0


def test_head_weights_must_fit_the_batch_and_heads():
    model = MultiMAE(tiny_config(depth=2, outputs=())).eval()
    tokens = model.tokenize(random_inputs(model.config, batch=2))
    with pytest.raises(ValueError, match=r"head_weights of shape \(2, 3\); expected \[2, 4\]"):
        model.attention_scores(tokens, head_weights=torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="unknown attention score 'cls'"):
        model.attention_scores(tokens, "cls")
