"""Models: the ViT pieces (vit), MultiMAE's adapters, its architecture and presets (architecture), the
MultiMAE itself (multimae), token selections (selection: what masking hands the model), official
checkpoints (official), weights from a run or a timm ViT (pretrained), save_pretrained folders
(hf_folder), exports (export), and the encoder with a task head (heads, task_model).

Layer: may import guidedmae.infra and guidedmae.data (modality records) only.
"""

from guidedmae.models.architecture import PRESETS, MultiMAEConfig, preset_config
from guidedmae.models.multimae import MultiMAE, Tokens

__all__ = ["PRESETS", "MultiMAE", "MultiMAEConfig", "Tokens", "preset_config"]
