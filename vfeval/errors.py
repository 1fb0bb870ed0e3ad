"""The errors vfeval shows to users.

A `UsageError` is something the user can fix (a config key, a path, a plugin name): the CLI prints its
message on one line and exits with code 2. A `DataError` is a problem with one video or one file that a
run records as a failed sample and then continues past.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """A mistake in a config, a command line or a data root. Exit code 2, one line, no traceback."""


class DataError(Exception):
    """One input (a video, a caption file) cannot be used. Recorded with its reason; the run goes on."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the nearest valid names, or the list of valid names."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if close:
        return f" (did you mean: {', '.join(close)}?)"
    if choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f" (valid: {shown})"
    return ""
