"""Which moments of a video window the encoder sees: pure functions of times, no I/O.

Times are seconds from the start of the video stream (its first presentation timestamp is 0).

*The frame at time t* is the frame being shown at ``t``: the last frame whose presentation timestamp is
``<= t``. If ``t`` precedes the first frame, it is the first frame; if ``t`` is past the last frame, it is
the last frame (the end-of-stream rule: the last frame stays on screen until the video ends). The reader
allows a microsecond of slack in ``<=`` so that float rounding of ``t`` never picks the previous frame.

The sampling config and its validation live together in ``vfeval.config`` (``SamplingConfig``,
``validate_sampling``); this module only computes times from a config it is given.
"""

from __future__ import annotations

import math

import numpy as np

from vfeval.config import SamplingConfig
from vfeval.config import validate_sampling as validate  # noqa: F401  (the reader's entry point)
from vfeval.errors import UsageError

SLIVER = 0.25
"""A final segment shorter than this fraction of the segment length is dropped (when there are others)."""
_EPS = 1e-9  # absorbs float error in divisions such as 0.3 * 10 = 3.0000000000000004


def segment_bounds(start: float, end: float, segments: float | None) -> list[tuple[float, float]]:
    """Cut ``[start, end)`` into consecutive segments of ``segments`` seconds; None keeps it whole.

    The last segment may be shorter. When there is more than one segment, a final sliver shorter than
    ``SLIVER × segments`` is dropped: it holds too little to describe on its own and would otherwise weigh
    as much as a full segment when segment outputs are pooled.
    """
    if segments is None:
        return [(start, end)]
    if not segments > 0:
        raise UsageError(f"segment length must be positive, got {segments}")
    count = max(1, math.ceil((end - start) / segments - _EPS))
    # Bounds by multiplication, not repeated addition, so rounding does not accumulate.
    bounds = [(start + i * segments, min(start + (i + 1) * segments, end)) for i in range(count)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < SLIVER * segments:
        bounds.pop()
    return bounds


def frame_times(start: float, end: float, sampling: SamplingConfig) -> np.ndarray:
    """``float64 [T]`` increasing target times in ``[start, end)`` (see the module docstring for the frame
    each time selects).

    - ``uniform``: the centres of ``num_frames`` equal spans, ``start + (i + 0.5) * (end - start) / N``.
    - ``fps``: ``start + i / fps`` for every ``i`` with a time before ``end``, the first ``max_frames``.
    """
    if sampling.mode == "uniform":
        if sampling.num_frames < 1:
            raise UsageError(f"num_frames must be at least 1, got {sampling.num_frames}")
        n = sampling.num_frames
        return start + (np.arange(n, dtype=np.float64) + 0.5) * ((end - start) / n)
    if sampling.mode == "fps":
        if not sampling.fps > 0 or sampling.max_frames < 1:
            raise UsageError(
                f"fps sampling needs fps > 0 and max_frames >= 1, got {sampling.fps} and {sampling.max_frames}"
            )
        n = min(max(1, math.ceil((end - start) * sampling.fps - _EPS)), sampling.max_frames)
        return start + np.arange(n, dtype=np.float64) / sampling.fps
    raise UsageError(f"unknown sampling mode {sampling.mode!r}; use uniform or fps")
