"""Video-caption pairs for contrastive training: the captions file, the dataset, and the order of batches.

The captions file is JSONL (``{"video", "caption", "start", "end"}`` per line) or CSV (a header naming
``video`` and ``caption``, optionally ``start`` and ``end``). Video paths are relative to the file's folder;
``start``/``end`` (seconds, empty or null for the whole video) choose a window. Frames are decoded with
``vfeval.video.read_window`` in DataLoader workers.

Rows that name the same window are one training clip with several captions (as MSR-VTT gives each
video twenty): an epoch visits each clip once, with one of its captions drawn per visit, so a clip never
meets itself as a negative in a batch.

The order of the data is a pure function of (seed, epoch): each epoch is a ``DistributedSampler``
permutation sharded over the processes, cut into micro-batches. A run resumed at optimizer step ``s``
starts from the micro-batch an uninterrupted run would have reached, without decoding the ones before.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.video import read_window


@dataclass(frozen=True)
class Pair:
    """One training clip: a video window and every caption given to it."""

    video: str
    """Absolute path of the video file."""
    captions: tuple[str, ...]
    start: float | None = None
    end: float | None = None


def _seconds(value: object, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: start/end must be seconds or empty, got {value!r}") from exc


def read_captions(path: str | Path) -> list[Pair]:
    """The pairs listed in a ``.jsonl`` or ``.csv`` captions file; every video must exist."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(
            f"captions file not found: {path} (set data.captions; `vfeval data synthetic --out DIR` writes "
            "DIR/train/captions.jsonl)"
        )
    rows: list[tuple[str, dict]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{n} is not JSON ({exc.msg})") from exc
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"video", "caption"} <= set(reader.fieldnames or ()):
                raise UsageError(f"{path} needs a header with columns video, caption (and optionally start, end)")
            rows = [(f"{path}:{n}", row) for n, row in enumerate(reader, 2)]
    else:
        raise UsageError(f"captions file {path} must end in .jsonl or .csv")
    clips: dict[tuple[str, float | None, float | None], list[str]] = {}
    for where, row in rows:
        if not isinstance(row, dict) or not row.get("video") or not isinstance(row.get("caption"), str):
            raise UsageError(f"{where}: each entry needs a 'video' path and a 'caption' string")
        video = (path.parent / str(row["video"])).resolve()
        key = (str(video), _seconds(row.get("start"), where), _seconds(row.get("end"), where))
        clips.setdefault(key, []).append(row["caption"])
    pairs = [Pair(video, tuple(captions), start, end) for (video, start, end), captions in clips.items()]
    if not pairs:
        raise UsageError(f"captions file {path} lists no pairs")
    missing = [p.video for p in pairs if not Path(p.video).is_file()]
    if missing:
        raise UsageError(f"{len(missing)} of the {len(pairs)} videos in {path} are missing, e.g. {missing[0]}")
    return pairs


class CaptionedVideos(Dataset):
    """Item i: ``(uint8 [T, H, W, 3] frames of clip i's window, its captions)``.

    With ``cache`` each process keeps the clips it decoded, so later epochs decode nothing: for data
    small enough to hold in memory (``T x H x W x 3`` bytes per pair, per decoding process).
    """

    def __init__(self, pairs: list[Pair], sampling: SamplingConfig, cache: bool = False) -> None:
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
        per_process = n // world
        self.steps_per_epoch = per_process // (batch_size * grad_accum)
        if self.steps_per_epoch < 1:
            need = batch_size * grad_accum * world
            raise UsageError(
                f"{n} training clips are fewer than one optimizer step needs ({need} = optim.batch_size x "
                "optim.grad_accum x processes); lower optim.batch_size or add data"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches of dataset indices in ``epoch``."""
        sampler = DistributedSampler(
            range(self.n), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        count = self.steps_per_epoch * self.grad_accum
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]


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
