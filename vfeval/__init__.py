"""vfeval: an evaluation-centric plugin framework for video encoders, above all for long videos."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("vfeval")
"""Decorate a plugin's hook functions with this (``@vfeval.hookimpl``)."""
