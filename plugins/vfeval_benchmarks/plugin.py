"""The benchmark tasks and the synthetic data command, registered through the ``vfeval`` entry point."""

from __future__ import annotations

from vfeval import hookimpl


@hookimpl
def register_tasks(register):
    from vfeval_benchmarks import tasks

    tasks.register(register)


@hookimpl
def register_commands(app):
    from vfeval_benchmarks.commands import add_data_commands

    add_data_commands(app)
