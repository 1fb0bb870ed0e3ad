"""VIMPAC's training data without a framework: two clips of each video, their codes, and the order of batches.

Each window of the captions file (a whole video when it has no start and end) is read as one run of frames,
sampled by ``data.sampling`` (uniform, ``F`` frames), and tokenized once: the reference pre-extracts a
video's tokens the same way (at 2 fps) and cuts its clips from them. A video's two clips, the positive pair
of the contrastive loss, are runs of ``model.num_frames`` (``T``) consecutive frames of it
(``data.clips``):

- ``random`` (the reference's ``temporal_random_sample``, without a relevance range): each clip starts at a
  frame drawn uniformly from ``0 .. F - T``, the two independently, so they may overlap;
- ``halves``: the first ``T`` and the last ``T`` frames (with ``F = 2T``, the two halves of the window).

The draws are functions of the seed, the micro-batch's number in the run and the video's index
(``window_rng``), never of the batch or process a video lands in. The codes of a video stay the same from
epoch to epoch, so they can be kept in memory. The captions themselves are not used.

The order is ``vfeval_videofirst.data.Schedule``'s (a function of seed and epoch, sharded over the
processes), so the VIMPAC trainers resume and split a global batch exactly as the videofirst ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from vfeval_videofirst.data import Schedule, read_clip, stack_clips

from vfeval.captions import CaptionedClip
from vfeval.config import SamplingConfig

_WINDOW_STREAM = 2
"""Which generator of ``window_rng`` a draw uses: the masks use streams 0 and 1 (a video's two clips)."""


def window_rng(seed: int, draw: int, index: int) -> np.random.Generator:
    """The generator of video ``index``'s two clip windows in micro-batch ``draw`` of the run."""
    return np.random.default_rng([seed, draw, index, _WINDOW_STREAM])


def clip_starts(frames: int, clip: int, mode: str, rng: np.random.Generator) -> tuple[int, int]:
    """First frames of a video's two clips of ``clip`` frames among its ``frames`` (see the module docstring);
    ``mode`` is one of ``config.CLIP_MODES``."""
    if mode == "halves":
        return 0, frames - clip
    last = frames - clip
    return int(rng.integers(0, last + 1)), int(rng.integers(0, last + 1))


def clip_pairs(codes: np.ndarray, index: list[int], seed: int, draw: int, clip: int, mode: str) -> np.ndarray:
    """``codes`` ``[B, F, h, w]`` of videos ``index`` → their two clips ``[B, 2, clip, h, w]``."""
    out = np.empty((codes.shape[0], 2, clip, *codes.shape[2:]), dtype=codes.dtype)
    for b, i in enumerate(index):
        for k, start in enumerate(clip_starts(codes.shape[1], clip, mode, window_rng(seed, draw, i))):
            out[b, k] = codes[b, start : start + clip]
    return out


Encode = Callable[[np.ndarray], np.ndarray]
"""``uint8 [n, T, H, W, 3]`` frames → ``int [n, T, h, w]`` codes (a backend's tokenizer)."""


class PairCodes:
    """The codes of each video's frames, decoded by ``workers`` threads and tokenized by ``encode``, with
    ``cache`` kept in memory after their first visit (a few bytes per token); batches of their clip pairs."""

    def __init__(self, pairs: list[CaptionedClip], sampling: SamplingConfig, encode: Encode, cache: bool, workers: int,
                 *, clip: int, mode: str, seed: int):
        self.windows = pairs
        self.sampling = sampling
        self.encode = encode
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.workers = workers
        self.clip, self.mode, self.seed = clip, mode, seed

    def frames(self, i: int) -> np.ndarray:
        """``uint8 [F, H, W, 3]``: video i's frames."""
        return read_clip(self.windows[i], i, self.sampling)

    def batch(self, index: list[int], pool: ThreadPoolExecutor | None) -> np.ndarray:
        """``int32 [B, F, h, w]``: the codes of the videos ``index``."""
        todo = [i for i in index if self.cache is None or i not in self.cache]
        found: dict[int, np.ndarray] = {}
        if todo:
            frames = list(pool.map(self.frames, todo)) if pool else [self.frames(i) for i in todo]
            codes = np.asarray(self.encode(stack_clips(frames))).astype(np.int32)  # [n, F, h, w]
            found = dict(zip(todo, codes))
            if self.cache is not None:
                self.cache.update(found)
        return np.stack([found[i] if i in found else self.cache[i] for i in index])  # type: ignore[index]

    def micro_batches(self, schedule: Schedule, start_step: int) -> Iterator[tuple[np.ndarray, list[int]]]:
        """Endless ``(codes [B, 2, T, h, w], video indices)`` from optimizer step ``start_step`` on."""
        pool = ThreadPoolExecutor(self.workers) if self.workers else None
        draw = start_step * schedule.grad_accum  # the number of the micro-batch in the run
        try:
            for index in schedule.order(start_step):
                yield clip_pairs(self.batch(index, pool), index, self.seed, draw, self.clip, self.mode), list(index)
                draw += 1
        finally:
            if pool:
                pool.shutdown()
