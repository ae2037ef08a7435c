"""Typed run configs (dataclasses used as OmegaConf structured configs) and how they are loaded.

config = load_config(PretrainConfig, "demo", ["optim.blr=2e-4"])       # a shipped config, or a path

The schemas compose the config sections of the modules they configure. Layer: may import
guidedmae.infra, data, models, losses, tasks and masking; never the engine.
"""

from guidedmae.config.finetune import (
    FinetuneConfig,
    FinetuneDataConfig,
    FinetuneModelSettings,
    FinetuneOptimConfig,
)
from guidedmae.config.loading import (
    ConfigError,
    config_differences,
    config_to_dict,
    config_to_yaml,
    load_config,
    save_config,
)
from guidedmae.config.schema import (
    CheckpointConfig,
    DataConfig,
    LogConfig,
    ModelSettings,
    PretrainConfig,
    PretrainEvalConfig,
    RunConfig,
    TrainingConfig,
)

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneModelSettings",
    "FinetuneOptimConfig",
    "LogConfig",
    "ModelSettings",
    "PretrainConfig",
    "PretrainEvalConfig",
    "RunConfig",
    "TrainingConfig",
    "config_differences",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
]
