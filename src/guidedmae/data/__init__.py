"""Data: the synthetic scenes, the MultiMAE folder layout, ADE20K / NYUv2, aligned augmentation."""
