"""Models: the ViT pieces, MultiMAE's adapters, the MultiMAE itself and checkpoint loading."""

from guidedmae.models.multimae import PRESETS, MultiMAE, MultiMAEConfig, Tokens, preset_config

__all__ = ["PRESETS", "MultiMAE", "MultiMAEConfig", "Tokens", "preset_config"]
