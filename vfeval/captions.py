"""Captions files: video-caption pairs for training, as JSONL or CSV.

JSONL: one ``{"video", "caption", "start", "end"}`` object per line. CSV: a header naming ``video`` and
``caption``, optionally ``start`` and ``end``. Video paths are relative to the file's folder;
``start``/``end`` (seconds, empty or null for the whole video) choose a window. Rows that name the
same window are one clip with several captions (as MSR-VTT gives each video twenty).

Read by the ``videofirst-contrastive`` trainer and by aggregators that learn from a train split.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from vfeval.errors import UsageError


@dataclass(frozen=True)
class CaptionedClip:
    """One clip: a video window and every caption given to it."""

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


def read_captions(path: str | Path, key: str = "data.captions") -> list[CaptionedClip]:
    """The clips listed in a ``.jsonl`` or ``.csv`` captions file, in order of first mention; every video
    must exist. ``key`` is the config key that named the file (for the error messages)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(
            f"captions file not found: {path} (set {key}; `vfeval data synthetic --out DIR` writes "
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
        window = (str(video), _seconds(row.get("start"), where), _seconds(row.get("end"), where))
        clips.setdefault(window, []).append(row["caption"])
    pairs = [CaptionedClip(video, tuple(captions), start, end) for (video, start, end), captions in clips.items()]
    if not pairs:
        raise UsageError(f"captions file {path} lists no pairs")
    missing = [p.video for p in pairs if not Path(p.video).is_file()]
    if missing:
        raise UsageError(f"{len(missing)} of the {len(pairs)} videos in {path} are missing, e.g. {missing[0]}")
    return pairs
