"""The masking strategies, one module each; importing this package registers them (in bench order)."""

from guidedmae.masking.strategies import attention, random
from guidedmae.masking.strategies.attention import AttentionMasking, AttentionOptions
from guidedmae.masking.strategies.random import RandomMasking

__all__ = ["AttentionMasking", "AttentionOptions", "RandomMasking", "attention", "random"]
