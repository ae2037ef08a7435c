"""Data: the synthetic scenes, the MultiMAE folder layout, shards, ADE20K / NYUv2, aligned augmentation.

One module per concept (nothing is imported here, so that importing one pulls in no other):
modalities (what a modality is), scenes (the procedural scenes), transforms (aligned augmentation),
folder (reading the folder layout), writers (writing it), nyuv2 (the .mat converter), shards, datasets
(torch data sets), sources (build_dataset: one registry of sources), loader (the resumable sharded
loader), seeding (derived generators), subset (class-balanced low-data subsets), mixup, pseudolabel.

Layer: may import guidedmae.infra only.
"""

__all__ = [
    "datasets",
    "folder",
    "loader",
    "mixup",
    "modalities",
    "nyuv2",
    "pseudolabel",
    "scenes",
    "seeding",
    "shards",
    "sources",
    "subset",
    "transforms",
    "writers",
]
