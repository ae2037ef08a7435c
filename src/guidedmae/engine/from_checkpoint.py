"""A pretraining checkpoint (ours, or an official MultiMAE .pth) as a model with its config, or as the
training step with its masking strategy: what `visualize`, `bench` and the viewer show.

A guidedmae checkpoint's stored config gives the model, the data and the masking; an official file is
shown on synthetic scenes, with MultiMAE-B's budget of 1/6 of the tokens visible. key=value overrides
change that config, the masking above all.
"""

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from guidedmae.config import DataConfig, ModelSettings, PretrainConfig, config_to_dict, load_config
from guidedmae.data.datasets import SizedDataset
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.pretrain import STRATEGY_KEY, pretraining_set
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.checkpoints import (
    CheckpointError,
    build_to_fit,
    load_weights,
    read_checkpoint,
    state_dict_of,
)
from guidedmae.masking import MaskingConfig, MaskingStrategy, build_strategy
from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.official import official_architecture

__all__ = ["load_model", "load_step", "load_strategy_state"]


def _official_config(architecture: MultiMAEConfig) -> PretrainConfig:
    """Settings to picture an official model: synthetic scenes at its size, MultiMAE's visible budget."""
    return PretrainConfig(
        model=ModelSettings(**{f.name: getattr(architecture, f.name) for f in fields(MultiMAEConfig)}),
        masking=MaskingConfig(num_visible=architecture.multimae_num_visible),
        data=DataConfig(augment=AugmentConfig(size=architecture.image_size)),
    )


def load_model(path: str | Path, overrides: Sequence[str] = ()) -> tuple[MultiMAE, PretrainConfig, dict]:
    """The MultiMAE of a pretraining checkpoint or an official file (decoders included), its pretraining
    config (changed by overrides; an official file gets synthetic scenes at its size and MultiMAE's
    budget) and the checkpoint as read."""
    checkpoint = read_checkpoint(path)
    weights = state_dict_of(checkpoint, str(path))
    saved = checkpoint.get("config")
    if isinstance(saved, dict) and "head" in saved:
        raise CheckpointError(
            f"{path}: a fine-tuning checkpoint (encoder and task head, no decoders); expected a pretraining "
            "checkpoint or an official MultiMAE file"
        )
    if not isinstance(saved, dict):
        architecture = official_architecture(checkpoint, str(path))
        saved = config_to_dict(_official_config(architecture))
    config = load_config(
        PretrainConfig, None, overrides, base=saved, base_source=f"{path} (its stored config)"
    )
    model = build_to_fit(lambda: MultiMAE(config.model.architecture(config.modalities)), weights, str(path))
    return model, config, checkpoint


def load_step(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[MaskedAutoencoderStep, PretrainConfig, SizedDataset]:
    """The checkpoint's model and masking strategy as a training step, the config to picture it with
    (changed by overrides) and its data set. A strategy with state (a loss predictor, a loss memory)
    takes the state the run saved beside the model; without it there is nothing true to picture."""
    model, config, checkpoint = load_model(path, overrides)
    dataset = pretraining_set(config)
    strategy = build_strategy(config.masking, model.config, len(dataset))
    if strategy.state_dict():
        load_strategy_state(strategy, checkpoint, path)
    return MaskedAutoencoderStep(model, strategy, config.loss), config, dataset


def load_strategy_state(strategy: MaskingStrategy, checkpoint: dict, path: str | Path) -> None:
    """Load the trained state (a loss predictor, a scout, a memory) that checkpoint `path` holds beside the
    model into `strategy`; only a checkpoint of a run that masked with the same strategy holds it."""
    saved = checkpoint["config"] if isinstance(checkpoint.get("config"), dict) else {}
    run_strategy = saved.get("masking", {}).get("strategy")
    if run_strategy != strategy.name or STRATEGY_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} holds no trained state of masking.strategy={strategy.name} (its run masked with "
            f"{run_strategy!r}); a strategy that learns can only be pictured from a checkpoint of its own run"
        )
    load_weights(strategy, checkpoint[STRATEGY_KEY], f"{path} ({STRATEGY_KEY})")
