"""Task specs of the first-party benchmarks, registered from the plugin's ``register_tasks`` hook.

``TASKS`` is the table: one row per task, ``(task class, config class, factory in the task's module)``.
Everything else a spec says is read from the task class, so that each lives in one place: ``name``,
``version`` and ``splits`` from its attributes, and the line ``vfeval ls`` shows from the first paragraph
of its docstring.

Importing this module imports the task modules for their classes, so those modules stay light: numpy at
most, no video decoding or deep-learning library at module level.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from vfeval.specs import TaskSpec
from vfeval_benchmarks import egoschema, msrvtt, synthetic_order, youcook2

TASKS = (
    (egoschema.EgoSchemaTask, egoschema.EgoSchemaConfig, "make_task"),
    (msrvtt.MSRVTTRetrievalTask, msrvtt.MSRVTTRetrievalConfig, "make_retrieval"),
    (msrvtt.MSRVTTCaptioningTask, msrvtt.MSRVTTCaptioningConfig, "make_captioning"),
    (msrvtt.MSRVTTCategoryTask, msrvtt.MSRVTTCategoryConfig, "make_category"),
    (youcook2.YouCook2RetrievalTask, youcook2.YouCook2RetrievalConfig, "make_retrieval"),
    (youcook2.YouCook2CaptioningTask, youcook2.YouCook2CaptioningConfig, "make_captioning"),
    (youcook2.YouCook2SummaryTask, youcook2.YouCook2SummaryConfig, "make_summary"),
    (synthetic_order.SyntheticOrderTask, synthetic_order.SyntheticOrderConfig, "make_task"),
)


def task_spec(task: type, config: type, factory: str) -> TaskSpec:
    """The spec of one row of ``TASKS``."""
    summary = inspect.cleandoc(task.__doc__ or "").split("\n\n")[0]
    return TaskSpec(name=task.name, factory=f"{task.__module__}:{factory}", config=config, version=task.version,
                    splits=tuple(task.splits), description=" ".join(summary.split()))


def register(register_fn: Callable[..., Any]) -> None:
    """Call ``register_fn`` with the TaskSpec of each benchmark task this module knows."""
    for row in TASKS:
        register_fn(task_spec(*row))
