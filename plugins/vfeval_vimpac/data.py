"""VIMPAC's training data without a framework: two clips of each video, their codes, and the order of batches.

Each window of the captions file (a whole video when it has no start and end) gives two clips, its
first and its second half, each sampled by ``data.sampling``: the positive pair of the contrastive loss
(the reference draws two clips of a video at random times; fixed halves keep a clip's codes the same
from epoch to epoch, so they can be kept in memory). The captions themselves are not used.

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
from vfeval.errors import DataError, UsageError


def halves(pairs: list[CaptionedClip]) -> list[CaptionedClip]:
    """Window i → clips ``2i`` (its first half) and ``2i + 1`` (its second half)."""
    from vfeval.video.reader import probe

    out = []
    for pair in pairs:
        start = pair.start or 0.0
        end = pair.end
        if end is None:
            try:
                end = probe(pair.video).duration
            except (DataError, OSError) as exc:
                raise UsageError(f"training video {pair.video} cannot be read: {exc}") from exc
        middle = (start + end) / 2
        out += [CaptionedClip(pair.video, pair.captions, start, middle), CaptionedClip(pair.video, pair.captions, middle, end)]
    return out


Encode = Callable[[np.ndarray], np.ndarray]
"""``uint8 [n, T, H, W, 3]`` frames → ``int [n, T, h, w]`` codes (a backend's tokenizer)."""


class PairCodes:
    """The codes of each video's two clips, decoded by ``workers`` threads and tokenized by ``encode``;
    with ``cache`` kept in memory after their first visit (a few bytes per token)."""

    def __init__(self, pairs: list[CaptionedClip], sampling: SamplingConfig, encode: Encode, cache: bool, workers: int):
        self.clips = halves(pairs)
        self.n = len(pairs)
        self.sampling = sampling
        self.encode = encode
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.workers = workers

    def frames(self, i: int) -> np.ndarray:
        """``uint8 [2, T, H, W, 3]``: video i's two clips."""
        return stack_clips([read_clip(self.clips[2 * i + k], 2 * i + k, self.sampling) for k in (0, 1)])

    def batch(self, index: list[int], pool: ThreadPoolExecutor | None) -> np.ndarray:
        """``int32 [B, 2, T, h, w]``: the codes of the videos ``index``."""
        todo = [i for i in index if self.cache is None or i not in self.cache]
        found: dict[int, np.ndarray] = {}
        if todo:
            frames = list(pool.map(self.frames, todo)) if pool else [self.frames(i) for i in todo]
            stacked = stack_clips(frames)  # [n, 2, T, H, W, 3]
            codes = np.asarray(self.encode(stacked.reshape(-1, *stacked.shape[2:]))).astype(np.int32)
            codes = codes.reshape(len(todo), 2, *codes.shape[1:])
            found = dict(zip(todo, codes))
            if self.cache is not None:
                self.cache.update(found)
        return np.stack([found[i] if i in found else self.cache[i] for i in index])  # type: ignore[index]

    def micro_batches(self, schedule: Schedule, start_step: int) -> Iterator[tuple[np.ndarray, list[int]]]:
        """Endless ``(codes [B, 2, T, h, w], video indices)`` from optimizer step ``start_step`` on."""
        pool = ThreadPoolExecutor(self.workers) if self.workers else None
        try:
            for index in schedule.order(start_step):
                yield self.batch(index, pool), list(index)
        finally:
            if pool:
                pool.shutdown()
