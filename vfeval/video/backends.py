"""Decoder backends behind one small interface.

A backend reads the frames that a ``SamplingConfig`` chooses from a ``VideoWindow``; the pipeline's
``sampling.decoder`` names the one to use. Decoders are plugins: each is a ``DecoderSpec`` registered
through the ``register_decoders`` hook, and the core registers its own (``vfeval/builtin.py``) exactly as a
third-party plugin does. Because the decoder decides the pixels the encoder sees, its name and version are
part of the pipeline fingerprint (``decoder_identity``).

Registered by the core:

- ``pyav``: seeks to the keyframe before each wanted time and decodes forward from there (the default);
- ``pyav-decode-all``: decodes every frame and keeps the wanted ones; the slow reference for tests;
- ``torchcodec`` (where TorchCodec is installed): ``vfeval.video.torchcodec``.

A spec's factory is a ``"module:callable"`` string, so that worker processes can build the decoder
themselves without the plugin host; it is called with one keyword, ``threads`` (how many threads it may
decode with; 0 for its own choice).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vfeval.errors import UsageError
from vfeval.requests import VideoWindow
from vfeval.specs import DecoderSpec, Registry, resolve
from vfeval.video.types import Clip, VideoInfo

if TYPE_CHECKING:
    from vfeval.video.sampling import SamplingConfig

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


def decoder_spec(name: str, registry: Registry) -> DecoderSpec:
    """The decoder registered as ``name``; a ``UsageError`` naming the config key if none is (or several
    plugins registered it)."""
    try:
        spec: DecoderSpec = registry.get("decoders", name)
    except UsageError as exc:
        raise UsageError(f"config: bad value for 'pipeline.sampling.decoder': {exc}") from None
    return spec


def build_decoder(factory: str, threads: int = 0) -> VideoBackend:
    """Import and call a ``"module:callable"`` factory (what crosses to a worker process)."""
    backend: Any = resolve(factory)(threads=threads)
    return backend


def get_decoder(name: str = DEFAULT, threads: int = 0, registry: Registry | None = None) -> VideoBackend:
    """The backend registered as ``name`` in ``registry`` (by default, that of the installed plugins)."""
    if registry is None:
        from vfeval.plugins import get_plugin_manager

        registry = get_plugin_manager().registry
    return build_decoder(decoder_spec(name, registry).factory, threads)  # type: ignore[arg-type]


def decoder_identity(spec: DecoderSpec) -> dict[str, Any]:
    """``{"name": ..., **versions}``: what a result records about the decoder, and what its fingerprint hashes.

    Builds the decoder, so a decoder that cannot work here (its library does not load) is refused before a
    run starts, with a ``UsageError`` naming the config key."""
    try:
        backend = build_decoder(spec.factory)  # type: ignore[arg-type]
    except UsageError as exc:
        raise UsageError(f"config: bad value for 'pipeline.sampling.decoder': {spec.name!r}: {exc}") from None
    except Exception as exc:  # the plugin's library is missing or broken
        raise UsageError(
            f"config: bad value for 'pipeline.sampling.decoder': {spec.name!r} (plugin {spec.plugin!r}) cannot be "
            f"built from {spec.factory}: {type(exc).__name__}: {exc}"
        ) from None
    return {"name": spec.name, **backend.version()}
