"""The masking strategies, one module each; importing this package registers them."""

from guidedmae.masking.strategies import (
    attention,
    block,
    cached_attention,
    color_noise,
    loss_memory,
    multiblock,
    objects,
    predicted_loss,
    random,
    scout_attention,
)
from guidedmae.masking.strategies.attention import AttentionMasking, AttentionOptions
from guidedmae.masking.strategies.block import BlockMasking, BlockOptions
from guidedmae.masking.strategies.cached_attention import CachedAttentionMasking, CachedAttentionOptions
from guidedmae.masking.strategies.color_noise import ColorNoiseMasking, ColorNoiseOptions
from guidedmae.masking.strategies.loss_memory import LossMemoryMasking, LossMemoryOptions
from guidedmae.masking.strategies.multiblock import MultiBlockMasking, MultiBlockOptions
from guidedmae.masking.strategies.objects import ObjectsMasking, ObjectsOptions
from guidedmae.masking.strategies.predicted_loss import PredictedLossMasking, PredictedLossOptions
from guidedmae.masking.strategies.random import RandomMasking
from guidedmae.masking.strategies.scout_attention import ScoutAttentionMasking, ScoutAttentionOptions

__all__ = [
    "AttentionMasking",
    "AttentionOptions",
    "BlockMasking",
    "BlockOptions",
    "CachedAttentionMasking",
    "CachedAttentionOptions",
    "ColorNoiseMasking",
    "ColorNoiseOptions",
    "LossMemoryMasking",
    "LossMemoryOptions",
    "MultiBlockMasking",
    "MultiBlockOptions",
    "ObjectsMasking",
    "ObjectsOptions",
    "PredictedLossMasking",
    "PredictedLossOptions",
    "RandomMasking",
    "ScoutAttentionMasking",
    "ScoutAttentionOptions",
    "attention",
    "block",
    "cached_attention",
    "color_noise",
    "loss_memory",
    "multiblock",
    "objects",
    "predicted_loss",
    "random",
    "scout_attention",
]
