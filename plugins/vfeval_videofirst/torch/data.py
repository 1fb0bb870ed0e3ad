"""Video-caption pairs for contrastive training: the captions file, the dataset, and the order of batches.

The captions file (``vfeval.captions``: JSONL or CSV of video, caption, start, end) lists clips, each with
one caption or several. Frames are decoded with ``vfeval.video.read_window`` in DataLoader workers. An
epoch visits each clip once, so a clip never meets itself as a negative in a batch.

The order of the data is a pure function of (seed, epoch): ``vfeval_videofirst.data.Schedule``, which the
JAX trainer follows too, sharded over the processes, cut into micro-batches. A run resumed at optimizer step ``s``
starts from the micro-batch an uninterrupted run would have reached, without decoding the ones before.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vfeval.captions import CaptionedClip
from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.video import read_window
from vfeval_videofirst.data import Schedule


class CaptionedVideos(Dataset):
    """Item i: ``(uint8 [T, H, W, 3] frames of clip i's window, its captions)``.

    With ``cache`` each process keeps the clips it decoded, so later epochs decode nothing: for data
    small enough to hold in memory (``T x H x W x 3`` bytes per pair, per decoding process).
    """

    def __init__(self, pairs: list[CaptionedClip], sampling: SamplingConfig, cache: bool = False) -> None:
        self.pairs = pairs
        self.sampling = sampling
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, tuple[str, ...], int]:
        pair = self.pairs[i]
        if self.cache is not None and i in self.cache:
            return self.cache[i], pair.captions, i
        try:
            (clip,) = read_window(VideoWindow(str(i), pair.video, pair.start, pair.end), self.sampling)
        except DataError as exc:
            # A training run cannot score around a bad video the way an evaluation does: stop and say which.
            raise UsageError(f"training video {pair.video} cannot be read: {exc}") from exc
        if self.cache is not None:
            self.cache[i] = clip.frames
        return clip.frames, pair.captions, i


Batch = tuple[torch.Tensor, list[tuple[str, ...]], list[int]]


def collate(items: list[tuple[np.ndarray, tuple[str, ...], int]]) -> Batch:
    """Stack clips into ``uint8 [B, T, H, W, 3]``; captions stay strings (the training loop picks the
    texts of the batch and the text tower tokenizes them); the clips' indices come along."""
    shapes = {frames.shape for frames, _, _ in items}
    if len(shapes) > 1:
        raise UsageError(
            f"training clips differ in shape ({', '.join(map(str, sorted(shapes)))}); set data.sampling.crop "
            "so that every clip has the same size"
        )
    frames, captions, index = zip(*items)
    return torch.from_numpy(np.stack(frames)), list(captions), list(index)


def micro_batches(
    dataset: CaptionedVideos, schedule: Schedule, start_step: int, num_workers: int
) -> Iterator[Batch]:
    """Endless micro-batches from optimizer step ``start_step`` on, decoded by ``num_workers`` processes
    (the same ones for the whole run, so a decoded-clip cache lasts)."""

    def order() -> Iterator[list[int]]:
        epoch, skip = divmod(start_step, schedule.steps_per_epoch)
        skip *= schedule.grad_accum
        while True:
            yield from schedule.epoch_batches(epoch)[skip:]
            epoch, skip = epoch + 1, 0

    loader = DataLoader(
        dataset,
        batch_sampler=order(),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader
