"""Reading sampled frames from video files: ``read_window(window, sampling) -> list[Clip]``.

``sampling`` chooses the times (pure functions, no I/O); ``reader`` decodes the frames shown at them with
PyAV, seeking over what is not wanted; ``backends`` puts decoders behind one interface and names them;
``pool`` decodes ahead of the encoder in worker processes or threads. Nothing here imports torch.
"""

from vfeval.video.backends import VideoBackend, decoder_names, get_decoder, register_decoder
from vfeval.video.reader import probe, read_window
from vfeval.video.sampling import frame_times, segment_bounds
from vfeval.video.types import Clip, VideoInfo

__all__ = [
    "Clip",
    "VideoBackend",
    "VideoInfo",
    "decoder_names",
    "frame_times",
    "get_decoder",
    "probe",
    "read_window",
    "register_decoder",
    "segment_bounds",
]
