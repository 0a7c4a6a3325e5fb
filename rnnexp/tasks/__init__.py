"""Context-dependent tasks: each a LightningDataModule that also says how it is scored."""

from rnnexp.tasks.base import IGNORE, Task, TaskIO
from rnnexp.tasks.synthetic import Adding, DelayedRecall, RunningParity

__all__ = ["IGNORE", "Adding", "DelayedRecall", "RunningParity", "Task", "TaskIO"]
