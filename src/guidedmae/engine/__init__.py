"""Training engine: one runner for every training command and the pieces it is made of.

One module per concept (nothing is imported here, so that importing one pulls in no other): run (the
runner: Job, run_job), loop (the training loop), pretrain and finetune (each job's own parts), step
(the pretraining forward), schedule, optim, precision, checkpoint, run_folder (the lock and stale
files), distributed, logging, evaluate, commands (the training sub-commands).
"""

__all__ = [
    "checkpoint",
    "commands",
    "distributed",
    "evaluate",
    "finetune",
    "logging",
    "loop",
    "optim",
    "precision",
    "pretrain",
    "run",
    "run_folder",
    "schedule",
    "step",
]
