"""``precomputed``: segment captions read from a file instead of computed from the video.

Caption files written by other pipelines (LLoVi's captioners, a captioning model run elsewhere) are looked
up by video id and time, so the video is never decoded. ``Encoder.describe`` sees only frames, not which
video or when they come from, so this encoder is a *caption source*: an aggregator that reads captions
(``llm``) asks it for the captions of a request's video window (``captions_for``) and then needs no
decoding at all. Its ``describe`` refuses.

Formats (``pipeline.encoder.captions``):

- ``.json``: LLoVi's ``{video_id: [caption, ...]}``; caption ``i`` covers
  ``[i * seconds_per_caption, (i + 1) * seconds_per_caption)`` seconds from the start of the video
  (LLoVi's EgoSchema files: one per second, 180 per clip, keyed by ``q_uid``);
- ``.jsonl``: one object per line with a video id (``video_id``, ``q_uid`` or ``video``), ``start`` and
  ``end`` in seconds, and a ``caption`` (or ``text``).

A window ``[a, b)`` gets the captions that overlap it, in order of start time, with times relative to ``a``.
The sha256 of the file is the encoder's fingerprint, so a changed file never reuses cached answers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.config import EncoderConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Encoder
from vfeval.requests import VideoWindow
from vfeval_baselines.prompts import Timed

ID_KEYS = ("video_id", "q_uid", "video")
TEXT_KEYS = ("caption", "text")


@dataclass
class PrecomputedConfig(EncoderConfig):
    name: str = "precomputed"
    captions: str = ""
    """The caption file (see the module docstring)."""
    seconds_per_caption: float = 1.0
    """Seconds each caption of a ``.json`` list covers (LLoVi: 1)."""


class CaptionSource:
    """What an aggregator may ask of an encoder that holds captions for whole videos."""

    def captions_for(self, window: VideoWindow) -> list[Timed]:
        raise NotImplementedError


class PrecomputedCaptions(Encoder, CaptionSource):
    def __init__(self, table: dict[str, list[Timed]], digest: str, path: str) -> None:
        self.table = table
        self.digest = digest
        self.path = path

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": f"captions-sha256:{self.digest}", "videos": len(self.table)}

    def describe(self, clips: list[np.ndarray]) -> list[str]:
        raise UsageError("encoder 'precomputed' looks captions up by video id and time, not from frames; use it "
                         "with pipeline.aggregator.name=llm")

    def captions_for(self, window: VideoWindow) -> list[Timed]:
        if window.video_id not in self.table:
            raise UsageError(f"caption file {self.path} has no captions for video {window.video_id!r} "
                             f"({len(self.table)} videos in it); captions must be keyed by the task's video id")
        start = window.start or 0.0
        end = math.inf if window.end is None else window.end
        picked = [c for c in self.table[window.video_id] if c.end > start and c.start < end]
        if not picked:
            raise UsageError(f"caption file {self.path} has no caption of video {window.video_id!r} within "
                             f"[{start:g}, {end:g}) s")
        return [Timed(c.start - start, c.end - start, c.text) for c in picked]


def read_captions(path: Path, seconds_per_caption: float) -> dict[str, list[Timed]]:
    """``{video_id: [Timed, ...]}`` sorted by start time, from a ``.json`` or ``.jsonl`` caption file."""
    if not seconds_per_caption > 0:
        raise UsageError(f"config: 'pipeline.encoder.seconds_per_caption': {seconds_per_caption}; it must be > 0")
    text = path.read_text(encoding="utf-8")
    table: dict[str, list[Timed]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"caption file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"caption file {path} must hold {{video_id: [caption, ...]}}")
        for vid, captions in data.items():
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise UsageError(f"caption file {path}: the value of {vid!r} must be a list of strings")
            table[str(vid)] = [Timed(i * seconds_per_caption, (i + 1) * seconds_per_caption, c.strip())
                               for i, c in enumerate(captions)]
    elif path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"caption file {path}: line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where} is not JSON: {exc.msg}") from exc
            vid = next((row[k] for k in ID_KEYS if isinstance(row, dict) and row.get(k) is not None), None)
            caption = next((row[k] for k in TEXT_KEYS if isinstance(row, dict) and isinstance(row.get(k), str)),
                           None)
            if vid is None or caption is None:
                raise UsageError(f"{where} needs a video id ({', '.join(ID_KEYS)}) and a caption "
                                 f"({', '.join(TEXT_KEYS)})")
            try:
                start, end = float(row["start"]), float(row["end"])
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageError(f"{where} needs numeric 'start' and 'end' seconds") from exc
            if not end > start:
                raise UsageError(f"{where}: end {end} is not after start {start}")
            table.setdefault(str(vid), []).append(Timed(start, end, caption.strip()))
        for captions in table.values():
            captions.sort(key=lambda c: (c.start, c.end))
    else:
        raise UsageError(f"caption file {path} must be .json ({{video_id: [caption, ...]}}) or .jsonl")
    if not table:
        raise UsageError(f"caption file {path} holds no captions")
    return table


def make_precomputed(config: PrecomputedConfig) -> PrecomputedCaptions:
    if not config.captions:
        raise UsageError("config: missing value for 'pipeline.encoder.captions'; give a .json file "
                         "{video_id: [caption, ...]} (LLoVi's format) or a .jsonl of {video_id, start, end, caption}")
    path = Path(config.captions).expanduser()
    if not path.is_file():
        raise UsageError(f"config: 'pipeline.encoder.captions': caption file {path} not found")
    table = read_captions(path, config.seconds_per_caption)
    return PrecomputedCaptions(table, hashlib.sha256(path.read_bytes()).hexdigest(), str(path))
