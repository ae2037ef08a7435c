"""Fine-tuning tasks, one module each, found by name in a registry (`head.task`); the head they train.

    task = get_task(config.head.task)                  # or config.head.task_record
    target = task.target(batch, config.task)
    loss = task.loss(output, target, config.task)
    meter = task.meter(config.head.num_classes, config.task); task.update(meter, output, target, config.task)

classification, semseg, depth and normals are built in. Adding a task is one module here with a Task
subclass decorated `@register_task`, plus its import below (see docs/development.md).

Layer: may import guidedmae.infra, metrics, data (modality records, mixup) and models (the heads).
"""

from guidedmae.tasks import classification, depth, normals, semseg
from guidedmae.tasks.head import HeadConfig, build_head
from guidedmae.tasks.task import TASKS, EvalConfig, Task, TaskConfig, get_task, register_task

__all__ = [
    "TASKS",
    "EvalConfig",
    "HeadConfig",
    "Task",
    "TaskConfig",
    "build_head",
    "classification",
    "depth",
    "get_task",
    "normals",
    "register_task",
    "semseg",
]
