"""Decoder backends behind one small interface, and the registry that names them.

A backend reads the frames that a ``SamplingConfig`` chooses from a ``VideoWindow``; the pipeline's
``sampling.decoder`` names the one to use. Because the decoder decides the pixels the encoder sees, its name
and version are part of the pipeline fingerprint (``decoder_identity``).

Built in:

- ``pyav``: seeks to the keyframe before each wanted time and decodes forward from there (the default);
- ``pyav-decode-all``: decodes every frame and keeps the wanted ones; the slow reference for tests.

A plugin adds a backend by calling ``register_decoder("name", "package.module:Factory")`` when its module is
imported (the plugin host imports it at start-up). The plugin contract in ``hookspecs.py`` has no hook for
decoders yet, so this module-level registry is the way in; callers name backends only through the config.
A factory is named by a ``"module:callable"`` string, so that worker processes can build it themselves; it is
called with one keyword, ``threads`` (how many threads it may decode with; 0 for its own choice).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol, runtime_checkable

from vfeval.config import SamplingConfig
from vfeval.errors import UsageError, suggest
from vfeval.requests import VideoWindow
from vfeval.video.types import Clip, VideoInfo

DEFAULT = "pyav"


@runtime_checkable
class VideoBackend(Protocol):
    """What the runner asks of a decoder. Errors with one video are ``DataError``s whose message starts with a
    short reason and a colon (``missing:``, ``corrupt:``...), as ``vfeval.video.reader`` raises them."""

    name: str

    def version(self) -> dict[str, str]:
        """Versions of everything that decides the decoded pixels (library, codec library...)."""
        ...

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        """Duration, frame rate, size and codec of a file."""
        ...

    def read_window(self, window: VideoWindow, sampling: SamplingConfig) -> list[Clip]:
        """One clip per segment of ``window``, as ``vfeval.video.read_window`` specifies."""
        ...


class PyAVBackend:
    """FFmpeg through PyAV, seeking over what is not wanted."""

    name = "pyav"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def version(self) -> dict[str, str]:
        import av

        libraries = {lib: ".".join(map(str, v)) for lib, v in sorted(av.library_versions.items())}
        return {"pyav": av.__version__, "ffmpeg": str(getattr(av, "ffmpeg_version_info", "")), **libraries}

    def probe(self, path: str | os.PathLike) -> VideoInfo:
        from vfeval.video.reader import probe

        return probe(path)

    def read_window(self, window: VideoWindow, sampling: SamplingConfig) -> list[Clip]:
        from vfeval.video.reader import read_window

        return read_window(window, sampling, threads=self.threads)


class PyAVDecodeAllBackend(PyAVBackend):
    """FFmpeg through PyAV, decoding every frame from the start: slow, simple, the reference."""

    name = "pyav-decode-all"

    def read_window(self, window: VideoWindow, sampling: SamplingConfig) -> list[Clip]:
        from vfeval.video.reader import read_all_frames_then_pick

        return read_all_frames_then_pick(window, sampling, threads=self.threads)


_FACTORIES: dict[str, str] = {
    "pyav": f"{__name__}:PyAVBackend",
    "pyav-decode-all": f"{__name__}:PyAVDecodeAllBackend",
}


def register_decoder(name: str, factory: str) -> None:
    """Make ``factory`` (``"module:callable"``, returning a ``VideoBackend``) available as ``name``.

    Registering the same factory again is harmless; another factory under a taken name is a ``UsageError``."""
    module, _, attr = factory.partition(":")
    if not module or not attr:
        raise UsageError(f"decoder {name!r}: factory {factory!r} must look like 'package.module:callable'")
    if _FACTORIES.get(name, factory) != factory:
        raise UsageError(f"decoder {name!r} is registered twice: by {_FACTORIES[name]} and by {factory}")
    _FACTORIES[name] = factory


def decoder_names() -> list[str]:
    return sorted(_FACTORIES)


def decoder_factory(name: str) -> str:
    """The ``"module:callable"`` registered as ``name``; a ``UsageError`` naming the config key if none is."""
    if name not in _FACTORIES:
        raise UsageError(
            f"config: bad value for 'pipeline.sampling.decoder': {name!r} is not a registered decoder"
            f"{suggest(name, _FACTORIES)}"
        )
    return _FACTORIES[name]


def build_decoder(factory: str, threads: int = 0) -> VideoBackend:
    """Import and call a ``"module:callable"`` factory."""
    module, _, attr = factory.partition(":")
    backend: Any = getattr(importlib.import_module(module), attr)(threads=threads)
    return backend


def get_decoder(name: str = DEFAULT, threads: int = 0) -> VideoBackend:
    """The backend registered as ``name``."""
    return build_decoder(decoder_factory(name), threads)


def decoder_identity(name: str) -> dict[str, Any]:
    """``{"name": ..., **versions}``: what a result records about the decoder, and what its fingerprint hashes."""
    return {"name": name, **get_decoder(name).version()}
