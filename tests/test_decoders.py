"""Decoders are plugins: the ``register_decoders`` hook, PyAV registered by the core's own plugin, a third-party
decoder in every decoding mode, and TorchCodec (where it is installed and loads) against PyAV on real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vfeval import hookimpl
from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.plugins import get_plugin_manager
from vfeval.requests import VideoWindow
from vfeval.specs import DecoderSpec
from vfeval.testing import index_frames, read_index, registered_plugin, write_vfr_video, write_video
from vfeval.video.backends import PyAVBackend, build_decoder, decoder_identity, decoder_spec, get_decoder
from vfeval.video.pool import open_pool

HERE = __name__  # workers import this module by name, as they would a plugin's


class CountingBackend(PyAVBackend):
    """PyAV under another name and version: what a third-party decoder looks like to vfeval."""

    name = "counting"

    def version(self) -> dict[str, str]:
        return {"counting": "2", **super().version()}


class CountingPlugin:
    @hookimpl
    def register_decoders(self, register):
        register(DecoderSpec(name="counting", factory=f"{HERE}:CountingBackend", description="PyAV, renamed"))


def test_the_core_registers_pyav_through_the_hook_like_any_plugin():
    core = get_plugin_manager().registry.decoders
    assert {"pyav", "pyav-decode-all"} <= set(core) and core["pyav"].plugin == "core"
    assert isinstance(build_decoder(str(core["pyav"].factory)), PyAVBackend)
    bare = get_plugin_manager(load_entrypoints=False).registry  # no plugin, not even the core's: no decoder
    with pytest.raises(UsageError, match=r"pipeline\.sampling\.decoder': unknown decoder 'pyav'"):
        decoder_spec("pyav", bare)
    with pytest.raises(UsageError, match=r"did you mean: pyav"):
        get_decoder("pyavv")


def test_a_plugin_decoder_is_used_by_name_in_every_decoding_mode(tmp_path, host):
    path = write_video(tmp_path / "v.mp4", index_frames(24), fps=8)
    sampling = SamplingConfig(num_frames=4, size=0, crop=0)
    with registered_plugin(host, CountingPlugin()):
        spec = decoder_spec("counting", host.registry)
        assert spec.plugin == "test-plugin" and decoder_identity(spec)["counting"] == "2"
        for mode in ("inline", "thread", "process"):  # a process builds it from the factory string alone
            with open_pool(mode, workers=1, timeout=60.0, decoder=spec, windows=2) as pool:
                (clip,) = pool.submit(VideoWindow("v", str(path)), sampling).result()
            assert [read_index(f) for f in clip.frames] == [3, 9, 15, 21], mode
    with pytest.raises(UsageError, match="unknown decoder 'counting'"):  # gone with its plugin
        decoder_spec("counting", host.registry)


def test_a_decoder_name_taken_twice_or_a_factory_workers_cannot_import_is_refused(host):
    class Twin:
        @hookimpl
        def register_decoders(self, register):
            register(DecoderSpec(name="pyav", factory=f"{HERE}:CountingBackend"))

    with registered_plugin(host, Twin(), "twin"):
        with pytest.raises(UsageError, match=r"decoder 'pyav' is registered by both plugin 'core' and plugin 'twin'"):
            decoder_spec("pyav", host.registry)
        assert decoder_spec("pyav-decode-all", host.registry).plugin == "core"  # only the contested name
    with pytest.raises(UsageError, match=r"must be a 'package.module:callable' string"):
        DecoderSpec(name="inline", factory=CountingBackend)
    missing = DecoderSpec(name="missing", factory="no_such_decoder_lib:Decoder", plugin="third")
    with pytest.raises(UsageError, match=r"decoder': 'missing' \(plugin 'third'\) cannot be built from "
                                         r"no_such_decoder_lib:Decoder: ModuleNotFoundError"):
        decoder_identity(missing)  # what a run asks first, before it decodes anything


def test_vfeval_ls_lists_the_decoders():
    res = subprocess.run([sys.executable, "-m", "vfeval", "ls", "decoders"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "pyav-decode-all" in res.stdout and "core" in res.stdout


# ---------------------------------------------------------------------------------------------------
# TorchCodec against PyAV: the same frames at the same timestamps


def _torchcodec():
    from vfeval.video.backends import VideoBackend

    spec = get_plugin_manager().registry.decoders.get("torchcodec")
    if spec is None:
        pytest.skip("TorchCodec is not installed (pip install 'vfeval[torchcodec]')")
    try:
        backend: VideoBackend = build_decoder(str(spec.factory))
    except UsageError as exc:
        pytest.skip(f"TorchCodec is installed but does not load here: {exc}")
    return backend


def compare(reference, other, window: VideoWindow, sampling: SamplingConfig) -> tuple[int, float]:
    """Assert both decoders give the same timestamps and the same frames (by the index drawn in each);
    returns (frames compared, mean absolute pixel difference)."""
    a, b = reference.read_window(window, sampling), other.read_window(window, sampling)
    assert len(a) == len(b)
    n, diff = 0, 0.0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(y.times, x.times, atol=1e-6)
        assert x.frames.shape == y.frames.shape and y.frames.dtype == np.uint8
        assert [read_index(f) for f in y.frames] == [read_index(f) for f in x.frames]
        n += len(x.frames)
        diff += float(np.abs(x.frames.astype(int) - y.frames.astype(int)).mean()) * len(x.frames)
    return n, diff / max(n, 1)


def test_torchcodec_and_pyav_return_the_same_frames_at_the_same_times(tmp_path: Path):
    torchcodec, pyav = _torchcodec(), get_decoder("pyav")
    files = [
        write_video(tmp_path / "cfr.mp4", index_frames(120, 48, 64), fps=12, gop=40),
        write_video(tmp_path / "late.ts", index_frames(60, 32, 32), fps=10, gop=15),
        write_vfr_video(tmp_path / "vfr.mkv", index_frames(40), np.cumsum(np.r_[0, np.tile([0.05, 0.3], 20)[:39]])),
    ]
    samplings = [SamplingConfig(num_frames=7, size=0, crop=0), SamplingConfig(mode="fps", fps=2.5, size=0, crop=0),
                 SamplingConfig(num_frames=3, size=32, crop=32, segments=2.0)]
    for path in files:
        for window in (VideoWindow("v", str(path)), VideoWindow("v", str(path), 0.7, 3.1)):
            for sampling in samplings:
                n, diff = compare(pyav, torchcodec, window, sampling)
                assert n > 0 and diff < 3.0, (path.name, sampling, diff)
    assert torchcodec.version()["torchcodec"]
    with pytest.raises(DataError, match="^missing:"):
        torchcodec.read_window(VideoWindow("v", str(tmp_path / "nope.mp4")), samplings[0])
