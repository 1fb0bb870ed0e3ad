"""The rich consoles vfeval prints through.

In a terminal, rich fits every line to the terminal's width. Anywhere else (a log file, a pipe, CI) it assumes
80 columns, and a table then ends its names in "…": a suite's summary could not tell
``videofirst-stage1-torch`` from ``videofirst-stage1-jax``. There, unless ``COLUMNS`` says otherwise, lines
take up to ``LOG_WIDTH`` columns, so tables and progress lines are written whole.
"""

from __future__ import annotations

import os

from rich.console import Console

LOG_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that writes whole lines when its output is not a terminal."""
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = LOG_WIDTH
    return console
