"""The whole plugin contract of vfeval.

A plugin is a module (or object) with functions decorated by ``vfeval.hookimpl`` whose names are the hooks
below. It is found through the ``vfeval`` entry-point group of an installed distribution::

    [project.entry-points.vfeval]
    myplugin = "my_package.plugin"

Registration hooks receive a ``register`` callback rather than returning objects, so the host knows which
plugin registered each name and can refuse duplicates. Specs point at ``"module:callable"`` factories: keep
heavy imports (torch, jax, transformers) inside those factories, never at the top of the plugin module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("vfeval")


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register benchmark tasks.

    :param register: call ``register(TaskSpec(name=..., factory="pkg.mod:make_task", config=MyTaskConfig,
        version="1", splits=("test",)))`` once per task. ``factory(config)`` returns a ``vfeval.task.Task``.
        ``config`` is a dataclass deriving from ``vfeval.config.TaskConfig``.
    """


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Register encoders.

    :param register: call ``register(EncoderSpec(name=..., factory="pkg.mod:make_encoder",
        config=MyEncoderConfig, backends=("torch",), capabilities=("embed_video", "embed_text")))``.
        ``factory(config)`` returns a ``vfeval.pipeline.Encoder``; ``config`` derives from
        ``vfeval.config.EncoderConfig``. A run picks one of ``backends`` with ``pipeline.encoder.backend`` (the
        first when left out), validated before the factory is called and set as ``config.backend``.
        ``family`` (``"video-first"``, ``"image-first"``, ``"baseline"``;
        default ``"other"``) is the leaderboard family written into each result.
    """


@hookspec
def register_aggregators(register: Callable[..., None]) -> None:
    """Register aggregators, which turn a video's per-segment encoder outputs into answers.

    :param register: call ``register(AggregatorSpec(name=..., factory="pkg.mod:make_aggregator",
        config=MyAggregatorConfig, kinds=("choice_scores",)))``. ``factory(config)`` returns a
        ``vfeval.pipeline.Aggregator``; ``config`` derives from ``vfeval.config.AggregatorConfig``.
        ``family`` (optional) overrides the encoder's leaderboard family (``"baseline"``,
        ``"llm-over-segments"``).
    """


@hookspec
def register_trainers(register: Callable[..., None]) -> None:
    """Register training recipes for ``vfeval train``.

    :param register: call ``register(TrainerSpec(name=..., factory="pkg.mod:train", config=MyTrainConfig))``.
        ``factory(config)`` runs the training and returns the path of the final checkpoint.
    """


@hookspec
def register_decoders(register: Callable[..., None]) -> None:
    """Register video decoders, chosen by a run's ``pipeline.sampling.decoder``.

    :param register: call ``register(DecoderSpec(name=..., factory="pkg.mod:MyDecoder"))``. The factory must be
        a ``"module:callable"`` string, because decoding worker processes import it themselves; it is called
        as ``factory(threads=N)`` and returns a ``vfeval.video.backends.VideoBackend`` (``name``,
        ``version()``, ``probe(path)``, ``read_window(window, sampling)``). Its name and ``version()`` are part
        of the pipeline fingerprint. Register a decoder only where its library is installed, without
        importing it (``importlib.util.find_spec``).
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add sub-commands to the ``vfeval`` command line.

    :param app: the root ``typer.Typer``; add commands with ``@app.command()`` or ``app.add_typer(...)``.
        Keep heavy imports inside the command functions.
    """
