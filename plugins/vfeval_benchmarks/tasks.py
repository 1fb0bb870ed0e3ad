"""Task specs of the first-party benchmarks, registered from the plugin's ``register_tasks`` hook.

Importing this module imports the task modules for their config dataclasses, so those modules stay light:
numpy at most, no video decoding or deep-learning library at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval.specs import TaskSpec
from vfeval_benchmarks.egoschema import EgoSchemaConfig


def register(register_fn: Callable[..., Any]) -> None:
    """Call ``register_fn`` with the TaskSpec of each benchmark task this module knows."""
    register_fn(
        TaskSpec(
            name="egoschema",
            factory="vfeval_benchmarks.egoschema:make_task",
            config=EgoSchemaConfig,
            version="1",
            splits=("subset", "full"),
            description="EgoSchema long-video multiple-choice QA (5 options, 180 s egocentric clips); "
            "subset: 500 public answers scored offline; full: writes submission.json for the official grader",
        )
    )
