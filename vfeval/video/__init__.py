"""Reading sampled frames from video files: ``read_window(window, sampling) -> list[Clip]``.

``sampling`` chooses the times (pure functions, no I/O); ``reader`` decodes the frames shown at them with
PyAV, seeking over what is not wanted. Nothing here imports torch.
"""

from vfeval.video.reader import probe, read_window
from vfeval.video.sampling import frame_times, segment_bounds
from vfeval.video.types import Clip, VideoInfo

__all__ = ["Clip", "VideoInfo", "frame_times", "probe", "read_window", "segment_bounds"]
