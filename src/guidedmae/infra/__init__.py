"""Infrastructure below everything else: files written atomically and folders locked (files), typed
field checks (fields), freed-memory reuse (memory), processes and collectives (distributed), autocast
(precision), lr schedules (schedule), AdamW and its parameter groups (optim), checkpoint files read
safely and kept (checkpoints), the run folder's lock (run_folder), the metrics log (run_log) and
experiment trackers (trackers).

Layer: imports nothing of guidedmae outside this package (tests/test_layers.py holds every package to
its layer). Nothing is imported here, so that importing one module pulls in no other.
"""

__all__ = [
    "checkpoints",
    "distributed",
    "fields",
    "files",
    "memory",
    "optim",
    "precision",
    "run_folder",
    "run_log",
    "schedule",
    "trackers",
]
