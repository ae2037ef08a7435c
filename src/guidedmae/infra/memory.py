"""Keeping freed memory for reuse: glibc malloc settings for processes that free and reallocate the same
large buffers over and over.

glibc's malloc gives every freed block above its mmap threshold back to the OS, and trims its heap when
the free memory at its top exceeds the trim threshold. A loader worker (each sample's ~2 MB of decoded
images and crops) and a training step (its activations, weight casts and gradients, freed at the end of
every step) then get fresh zeroed pages for the same buffers each time (measured per sample and per step:
docs/results/2026-12-02-data-pipeline.md, 2026-12-02-train-step.md). Raising both thresholds keeps the
freed memory for reuse; a process then holds on to its peak, as PyTorch's CUDA caching allocator does.
Only glibc has these settings, and only where the environment sets none of its own: elsewhere (and for a
user's own settings) nothing changes.
"""

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's option numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest dynamic mmap threshold; mallopt refuses more on 64-bit
# A worker's transient memory is a few samples: trim above twice the mmap threshold (glibc's own ratio).
LOADER_TRIM_THRESHOLD = 64 * 2**20
# A training step frees hundreds of MB at once (MultiMAE-B, batch 8: ~0.5 GB); mallopt takes an int, and its
# largest value keeps everything below 2 GiB.
TRAINING_TRIM_THRESHOLD = 2**31 - 1
MALLOC_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory(trim_threshold: int) -> bool:
    """Make this process's malloc keep freed blocks below 32 MiB, and up to `trim_threshold` bytes of free
    heap, for reuse. Returns whether the settings were applied (glibc only, none of the user's own)."""
    if not ON_GLIBC or any(name in os.environ for name in MALLOC_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 and applied
