"""Weights that travel: the encoder as a timm ViT, save_pretrained folders, safetensors, and back."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from guidedmae.cli import main
from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.models import MultiMAE
from guidedmae.models.export import encoder_to_timm
from guidedmae.models.hf_folder import save_safetensors
from guidedmae.models.pretrained import load_pretrained
from tests.conftest import random_inputs, tiny_config


class TimmStyleViT(nn.Module):
    """A ViT written from timm's vision_transformer parameter names and conventions: class token first,
    a learnt position table over [class, patches], pre-norm blocks, a final norm."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int, grid: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            block.attn = nn.Module()
            block.attn.qkv, block.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            block.mlp = nn.Module()
            block.mlp.fc1, block.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 1 + N, D]: the class token's features, then the patches'."""
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            batch, tokens, dim = x.shape
            q, k, v = (
                block.attn.qkv(block.norm1(x)).view(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            )
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
            x = x + block.attn.proj(attended)
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
        return self.norm(x)


def trained_looking(config) -> MultiMAE:
    torch.manual_seed(0)
    model = MultiMAE(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # the position tables are fixed sin-cos, never trained
                parameter.add_(0.02 * torch.randn_like(parameter))
    return model


def test_a_timm_vit_on_the_exported_weights_computes_our_encoders_features():
    config = tiny_config(inputs=("rgb",), outputs=())
    model = trained_looking(config)
    grid = config.image_size // config.patch_size
    vit = TimmStyleViT(config.dim, config.depth, config.num_heads, config.patch_size, grid).eval()
    vit.load_state_dict(encoder_to_timm(model.state_dict()), strict=True)
    images = random_inputs(config)["rgb"]
    with torch.no_grad():
        ours = model.forward_features({"rgb": images})  # [B, N + 1, D]: patches, then the global token
        theirs = vit(images)  # [B, 1 + N, D]: the class token, then the patches
    # timm ends with a LayerNorm (exported without affine effect); MultiMAE's encoder ends without one.
    ours = F.layer_norm(ours, (config.dim,), eps=1e-6)
    torch.testing.assert_close(theirs[:, 1:], ours[:, :-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs[:, 0], ours[:, -1], rtol=0, atol=1e-5)


def test_a_timm_vit_file_initializes_the_encoder_and_reports_what_starts_fresh(tmp_path):
    source = trained_looking(tiny_config(inputs=("rgb",), outputs=()))
    path = tmp_path / "mae-vit.pth"
    torch.save({"model": {**encoder_to_timm(source.state_dict()), "head.weight": torch.zeros(10, 32)}}, path)
    target = MultiMAE(tiny_config())  # rgb, depth, semseg and every decoder
    report = load_pretrained(target, path)
    assert report.fresh_inputs == ["depth", "semseg"] and report.fresh_decoders == [
        "rgb",
        "depth",
        "semseg",
        "norm_rgb",
    ]
    assert "input adapters not in the file, starting from random init: depth, semseg" in report.describe()
    rgb = random_inputs(source.config)["rgb"]
    with torch.no_grad():
        torch.testing.assert_close(
            target.forward_features({"rgb": rgb}), source.forward_features({"rgb": rgb})
        )


def test_save_pretrained_round_trips_through_the_command(tmp_path, capsys):
    model = trained_looking(tiny_config())
    checkpoint = tmp_path / "run.pt"
    torch.save(
        {"model": model.state_dict(), "config": {"model": {**vars(model.config)}}, "step": 3}, checkpoint
    )
    folder = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--to", "hf", "--out", str(folder)]) == 0
    assert json.loads((folder / "config.json").read_text())["dim"] == 32
    loaded = MultiMAE.from_pretrained(folder).eval()
    inputs = random_inputs(model.config)
    masks = {name: torch.rand(2, 16).argsort(dim=1) < 10 for name in model.config.inputs}
    with torch.no_grad():
        expected, got = model(inputs, masks), loaded(inputs, masks)
    assert all(torch.equal(expected[name], got[name]) for name in expected)

    assert main(["export", str(checkpoint), "--to", "timm", "--out", str(tmp_path / "vit.safetensors")]) == 0
    timm = load_file(str(tmp_path / "vit.safetensors"))
    assert timm["pos_embed"].shape == (1, 17, 32) and torch.equal(timm["pos_embed"][0, 0], torch.zeros(32))
    assert (
        main(["export", str(checkpoint), "--to", "safetensors", "--out", str(tmp_path / "all.safetensors")])
        == 0
    )
    assert set(load_file(str(tmp_path / "all.safetensors"))) == set(model.state_dict())


def test_a_fine_tuning_checkpoint_exports_its_encoder(tmp_path):
    from guidedmae.engine.finetune import finetune
    from tests.test_finetune import CLASSIFICATION, config_of

    result = finetune(config_of(tmp_path, *CLASSIFICATION))
    assert (
        main(["export", str(result.checkpoint), "--to", "timm", "--out", str(tmp_path / "vit.safetensors")])
        == 0
    )
    assert "blocks.1.mlp.fc2.weight" in load_file(str(tmp_path / "vit.safetensors"))


def test_broken_folders_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a save_pretrained folder: no config.json"):
        MultiMAE.from_pretrained(tmp_path)
    model = MultiMAE(tiny_config())
    model.save_pretrained(tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        MultiMAE.from_pretrained(tmp_path / "ok")
    save_safetensors(
        MultiMAE(replace(tiny_config(), dim=48, num_heads=4)).state_dict(),
        tmp_path / "ok" / "model.safetensors",
    )
    with pytest.raises(CheckpointError, match="does not fit the model it declares"):
        MultiMAE.from_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="no rgb input adapter"):
        encoder_to_timm(MultiMAE(tiny_config(inputs=("depth",), outputs=())).state_dict())
