"""The settings a GPU run expects, checked where they apply on a CPU too: persistent loader workers give the
batches of per-epoch loaders, activation checkpointing the same gradients, and the backend keys are checked
and applied (their CUDA effects are checked by tests/test_cuda.py where a GPU is)."""

import pytest
import torch

from guidedmae.config import ConfigError, PretrainConfig, load_config
from guidedmae.data.datasets import SyntheticScenes
from guidedmae.data.loader import EpochLoader, build_loader
from guidedmae.data.transforms import AugmentConfig
from guidedmae.infra.backends import BackendSettings, apply_backend_settings
from guidedmae.models import MultiMAE
from tests.conftest import random_inputs, tiny_config
from tests.test_pretrain import tiny_config as tiny_config_file

OPTIONS = dict(batch_size=4, num_workers=2, shuffle=True, drop_last=True, seed=3, rank=0, world_size=1,
               pin_memory=False)  # fmt: skip


def test_persistent_workers_give_the_batches_of_a_loader_built_per_epoch():
    scenes = SyntheticScenes(12, 16, 0, ("rgb", "semseg"), AugmentConfig(size=16))
    persistent = EpochLoader(scenes, persistent=True, **OPTIONS)
    assert persistent.persistent
    # Epochs 0 and 1 whole, then epoch 2 resumed from its second batch, as a resumed run reads them.
    for epoch, start in ((0, 0), (1, 0), (2, 1)):
        fresh = build_loader(scenes, epoch=epoch, start_batch=start, **OPTIONS)
        ours = list(persistent.epoch(epoch, start))
        theirs = list(fresh)
        assert len(ours) == len(theirs) == 3 - start
        for a, b in zip(ours, theirs):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["rgb"], b["rgb"])
    with pytest.raises(ValueError, match="cannot skip 16 of the 12 samples"):
        persistent.epoch(3, 4)


def test_activation_checkpointing_gives_the_same_gradients_with_drop_path():
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(drop_path=0.3)).train()
    inputs = random_inputs(model.config, batch=2)
    gradients = []
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws
        tokens = model.tokenize(inputs)
        model.encode(tokens.embeddings).square().mean().backward()
        features = model.encode_layers(model.tokenize(inputs).embeddings, [0, 1])
        features[-1].mean().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], msg=name)


def test_backend_keys_are_checked_and_apply_where_they_mean_something(tmp_path):
    config = load_config(PretrainConfig, tiny_config_file(tmp_path))
    assert (config.run.tf32, config.run.sdpa_backend, config.run.deterministic) == (True, "auto", False)
    assert config.run.activation_checkpointing is False and config.data.persistent_workers is False
    with pytest.raises(ConfigError, match=r"run.sdpa_backend='fast'; expected one of \('auto', 'flash'"):
        load_config(PretrainConfig, tiny_config_file(tmp_path), ["run.sdpa_backend=fast"])
    before = torch.are_deterministic_algorithms_enabled()
    try:
        apply_backend_settings(BackendSettings(deterministic=True), torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_a_run_with_persistent_workers_trains_the_same_weights(tmp_path):
    from guidedmae.cli import main

    config, weights = tiny_config_file(tmp_path), []
    for persistent in (False, True):
        out = tmp_path / f"persistent-{persistent}"
        overrides = [f"out_dir={out}", "data.num_workers=1", f"data.persistent_workers={persistent}",
                     "schedule.total_epochs=2", "eval.num_samples=0", "log.picture_every=0"]  # fmt: skip
        assert main(["pretrain", str(config), *overrides]) == 0
        weights.append(torch.load(out / "checkpoint-last.pt", weights_only=True)["model"])
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
