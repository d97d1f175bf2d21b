"""The inner problems learned optimizers are trained and evaluated on.

``get_task(name)`` gives a `Task` (init, loss, spec, datasets, normalizer);
`tasks.data` prepares and loads the data offline-first through tfds.
"""

from unf_lopt.tasks.base import Datasets, Task, TaskFamily, batch_iterator
from unf_lopt.tasks.registry import get_task, get_task_family, register, registered_tasks

__all__ = ["Datasets", "Task", "TaskFamily", "batch_iterator", "get_task", "get_task_family",
           "register", "registered_tasks"]
