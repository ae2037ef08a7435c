"""guidedmae: MultiMAE pretraining with attention-guided masking."""

__version__ = "0.1.0"
