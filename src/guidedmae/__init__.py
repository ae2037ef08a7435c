"""guidedmae: MultiMAE pretraining with attention-guided masking.

from guidedmae import MultiMAE, load_official_checkpoint, masking
"""

from guidedmae import masking
from guidedmae.models.checkpoints import load_official_checkpoint
from guidedmae.models.multimae import MultiMAE, MultiMAEConfig, preset_config

__version__ = "0.1.0"
__all__ = ["MultiMAE", "MultiMAEConfig", "load_official_checkpoint", "masking", "preset_config"]
