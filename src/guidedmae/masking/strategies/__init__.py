"""The masking strategies, one module each; importing this package registers them."""

from guidedmae.masking.strategies import attention, loss_memory, predicted_loss, random
from guidedmae.masking.strategies.attention import AttentionMasking, AttentionOptions
from guidedmae.masking.strategies.loss_memory import LossMemoryMasking, LossMemoryOptions
from guidedmae.masking.strategies.predicted_loss import PredictedLossMasking, PredictedLossOptions
from guidedmae.masking.strategies.random import RandomMasking

__all__ = [
    "AttentionMasking",
    "AttentionOptions",
    "LossMemoryMasking",
    "LossMemoryOptions",
    "PredictedLossMasking",
    "PredictedLossOptions",
    "RandomMasking",
    "attention",
    "loss_memory",
    "predicted_loss",
    "random",
]
