"""Video-caption pairs for contrastive training: the captions file, the dataset, and the order of batches.

The captions file (``vfeval.captions``: JSONL or CSV of video, caption, start, end) lists clips, each with
one caption or several. Frames are decoded (``vfeval_videofirst.data.read_clip``) in DataLoader workers. An
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
from vfeval_videofirst.data import Schedule, read_clip, stack_clips


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
        frames = read_clip(pair, i, self.sampling)
        if self.cache is not None:
            self.cache[i] = frames
        return frames, pair.captions, i


Batch = tuple[torch.Tensor, list[tuple[str, ...]], list[int]]


def collate(items: list[tuple[np.ndarray, tuple[str, ...], int]]) -> Batch:
    """Stack clips into ``uint8 [B, T, H, W, 3]``; captions stay strings (the training loop picks the
    texts of the batch and the text tower tokenizes them); the clips' indices come along."""
    frames, captions, index = zip(*items)
    return torch.from_numpy(stack_clips(list(frames))), list(captions), list(index)


def micro_batches(
    dataset: CaptionedVideos, schedule: Schedule, start_step: int, num_workers: int
) -> Iterator[Batch]:
    """Endless micro-batches from optimizer step ``start_step`` on, decoded by ``num_workers`` processes
    (the same ones for the whole run, so a decoded-clip cache lasts)."""
    loader = DataLoader(
        dataset,
        batch_sampler=schedule.order(start_step),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader
