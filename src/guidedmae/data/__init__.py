"""Data: the synthetic scenes, the MultiMAE folder layout, ADE20K / NYUv2, aligned augmentation.

One module per concept (nothing is imported here, so that importing one pulls in no other):
modalities (what a modality is), scenes (the procedural scenes), transforms (aligned augmentation),
folder (the folder layout: reading, indexing, writing), nyuv2 (the .mat converter), datasets (torch
data sets and the resumable loader), subset (class-balanced low-data subsets), mixup, cli.
"""

__all__ = ["cli", "datasets", "folder", "mixup", "modalities", "nyuv2", "scenes", "subset", "transforms"]
