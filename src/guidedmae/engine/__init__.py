"""Training engine: the step, schedules, optimizers, distributed set-up, checkpoints, logging, loops."""
