"""guidedmae: MultiMAE pretraining with attention-guided masking.

from guidedmae import MultiMAE, load_official_checkpoint, masking
"""

from guidedmae import masking
from guidedmae.models.architecture import MultiMAEConfig, preset_config
from guidedmae.models.multimae import MultiMAE
from guidedmae.models.official import load_official_checkpoint

__version__ = "0.1.0"
__all__ = ["MultiMAE", "MultiMAEConfig", "load_official_checkpoint", "masking", "preset_config"]
