"""Training engine: one runner for every training command and the jobs it runs.

    fit(PretrainJob(config))   ->   start (lock, build, resume)   ->   train: forward_backward -> step

One module per concept (nothing is imported here, so that importing one pulls in no other): job (what
a command is to the runner), fit (the runner and its loop), start (everything before the first step),
resume (a run's state in checkpoints), pretrain and pretrain_step (pretraining's job and its forward),
finetune, finetune_setup and knn (fine-tuning, its data and model, the k-NN probe), evaluate
(fine-tuned models on a split), from_checkpoint (a pretraining checkpoint as model and step), bench
(strategies timed side by side).

Layer: may import every package below it (infra, data, models, losses, tasks, metrics, masking,
pictures, config); never study, commands or the CLI.
"""

__all__ = [
    "bench",
    "evaluate",
    "finetune",
    "finetune_setup",
    "fit",
    "from_checkpoint",
    "job",
    "knn",
    "pretrain",
    "pretrain_step",
    "resume",
    "start",
]
