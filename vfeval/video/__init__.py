"""Reading sampled frames from video files: ``read_window(window, sampling) -> list[Clip]``.

``sampling`` chooses the times (pure functions, no I/O); ``reader`` decodes the frames shown at them with
PyAV, seeking over what is not wanted; ``backends`` puts decoders (plugins, through the ``register_decoders``
hook) behind one interface; ``pool`` decodes ahead of the encoder in worker processes or threads. Nothing here
imports torch (``torchcodec``, a decoder used only where TorchCodec is installed, imports it when built).
"""

from vfeval.video.backends import VideoBackend, decoder_spec, get_decoder
from vfeval.video.reader import probe, read_window
from vfeval.video.sampling import frame_times, segment_bounds
from vfeval.video.types import Clip, VideoInfo

__all__ = [
    "Clip",
    "VideoBackend",
    "VideoInfo",
    "decoder_spec",
    "frame_times",
    "get_decoder",
    "probe",
    "read_window",
    "segment_bounds",
]
