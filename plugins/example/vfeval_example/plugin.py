"""The hooks of the example plugin, found through the ``vfeval`` entry point ``example``.

Registration only names things: config classes come from light modules, and the factories are
``"module:callable"`` strings that vfeval imports when a run actually uses them.
"""

from __future__ import annotations

from vfeval import hookimpl
from vfeval.specs import EncoderSpec, TaskSpec


@hookimpl
def register_encoders(register):
    from vfeval_example.motion import MotionConfig

    register(
        EncoderSpec(
            name="motion",
            factory="vfeval_example.motion:make_encoder",
            config=MotionConfig,
            backends=("numpy",),
            capabilities=("embed_video",),
            description="Non-learned: where and when frames change (mean absolute frame differences on a grid).",
        )
    )


@hookimpl
def register_tasks(register):
    from vfeval_example.csv_mc import CsvMcConfig, CsvMcTask

    register(
        TaskSpec(
            name=CsvMcTask.name,
            factory="vfeval_example.csv_mc:make_task",
            config=CsvMcConfig,
            version=CsvMcTask.version,  # the task class owns its version; the spec reads it
            splits=CsvMcTask.splits,
            description="Multiple-choice video QA from a questions.csv under task.root (accuracy, 95% CI).",
        )
    )


@hookimpl
def register_commands(app):
    from vfeval_example.commands import csv_mc_template

    app.command("csv-mc-template")(csv_mc_template)
