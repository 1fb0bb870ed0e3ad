"""Video-caption pairs for contrastive training, without a framework: the order of batches and the reader.

The captions file (``vfeval.captions``: JSONL or CSV of video, caption, start, end) lists clips, each with
one caption or several. An epoch visits each clip once, so a clip never meets itself as a negative in a
batch.

The order of the data is a pure function of (seed, epoch): each epoch is a permutation drawn by numpy's
PCG64 from ``(seed, epoch)``, cut to a multiple of the process count and dealt out to the processes in
turn (process r takes positions r, r + world, ...), then cut into micro-batches. The micro-batches of all
processes at one position together are the first clips of the permutation's window there, whatever the
process count, so a global batch does not depend on how it is split. A run resumed at optimizer step
``s`` starts from the micro-batch an uninterrupted run would have reached, without decoding the ones
before.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vfeval.captions import CaptionedClip
from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.video import read_window


class Schedule:
    """Which micro-batches each process sees, epoch after epoch, from any optimizer step on.

    An epoch has ``steps_per_epoch`` optimizer steps of ``grad_accum`` micro-batches of ``batch_size``
    clips per process; the few clips left over by the cut are skipped in that epoch (another permutation
    places them elsewhere in the next).
    """

    def __init__(
        self, n: int, batch_size: int, grad_accum: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self.seed, self.rank, self.world = seed, rank, world
        self.steps_per_epoch = (n // world) // (batch_size * grad_accum)
        if self.steps_per_epoch < 1:
            need = batch_size * grad_accum * world
            raise UsageError(
                f"{n} training clips are fewer than one optimizer step needs ({need} = optim.batch_size x "
                "optim.grad_accum x processes); lower optim.batch_size or add data"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches of dataset indices in ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        mine = order[: (self.n // self.world) * self.world][self.rank :: self.world].tolist()
        count = self.steps_per_epoch * self.grad_accum
        return [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]

    def order(self, start_step: int) -> Iterator[list[int]]:
        """Endless micro-batches from optimizer step ``start_step`` on."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        skip *= self.grad_accum
        while True:
            yield from self.epoch_batches(epoch)[skip:]
            epoch, skip = epoch + 1, 0


Batch = tuple[np.ndarray, list[tuple[str, ...]], list[int]]


def stack_clips(frames: list[np.ndarray]) -> np.ndarray:
    """``uint8 [B, T, H, W, 3]`` from clips that must share one shape."""
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise UsageError(
            f"training clips differ in shape ({', '.join(map(str, sorted(shapes)))}); set data.sampling.crop "
            "so that every clip has the same size"
        )
    return np.stack(frames)


def read_clip(pair: CaptionedClip, i: int, sampling: SamplingConfig) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` frames of clip ``i``'s window (``pair``), decoded with ``vfeval.video.read_window``."""
    try:
        (clip,) = read_window(VideoWindow(str(i), pair.video, pair.start, pair.end), sampling)
    except DataError as exc:
        # A training run cannot score around a bad video the way an evaluation does: stop and say which.
        raise UsageError(f"training video {pair.video} cannot be read: {exc}") from exc
    return clip.frames


class ClipReader:
    """Clip i: ``uint8 [T, H, W, 3]`` frames of its window, decoded with ``vfeval.video.read_window``.

    ``workers`` threads decode the clips of a micro-batch and the next one while the current one trains
    (FFmpeg releases the GIL while it decodes). With ``cache`` decoded clips stay in memory, so later
    epochs decode nothing: for data small enough (``T x H x W x 3`` bytes per pair).
    """

    def __init__(self, pairs: list[CaptionedClip], sampling: SamplingConfig, cache: bool = False, workers: int = 0):
        self.pairs = pairs
        self.sampling = sampling
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.workers = workers

    def clip(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        frames = read_clip(self.pairs[i], i, self.sampling)
        if self.cache is not None:
            self.cache[i] = frames
        return frames

    def _batch(self, index: list[int], pool: ThreadPoolExecutor | None) -> Batch:
        frames = list(pool.map(self.clip, index)) if pool else [self.clip(i) for i in index]
        return stack_clips(frames), [self.pairs[i].captions for i in index], list(index)

    def micro_batches(self, schedule: Schedule, start_step: int) -> Iterator[Batch]:
        """Endless micro-batches ``(frames [B, T, H, W, 3], captions of each clip, clip indices)`` from
        optimizer step ``start_step`` on."""
        order = schedule.order(start_step)
        if not self.workers:
            for index in order:
                yield self._batch(index, None)
            return
        with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(self._batch, next(order), pool)
            for index in order:
                batch = pending.result()
                pending = ahead.submit(self._batch, index, pool)
                yield batch
