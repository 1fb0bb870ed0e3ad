"""The four request kinds through which a task talks to a pipeline, and the video window they refer to.

| kind              | input                              | answer          |
| ----------------- | ---------------------------------- | --------------- |
| ``video_embedding`` | a video window                   | ``float32[D]``  |
| ``text_embedding``  | a string                         | ``float32[D]``  |
| ``choice_scores``   | video window, question, options  | ``float32[K]``  |
| ``generate``        | video window, prompt             | ``str``         |

Requests are frozen, hashable and serialisable: ``key()`` is a stable hash used to dedupe requests and to
look answers up in the durable cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

VIDEO_EMBEDDING = "video_embedding"
TEXT_EMBEDDING = "text_embedding"
CHOICE_SCORES = "choice_scores"
GENERATE = "generate"
KINDS = (VIDEO_EMBEDDING, TEXT_EMBEDDING, CHOICE_SCORES, GENERATE)


@dataclass(frozen=True)
class VideoWindow:
    """A span of a video file: ``[start, end)`` seconds, None meaning the start / the end of the stream."""

    video_id: str
    path: str
    start: float | None = None
    end: float | None = None

    def identity(self) -> dict[str, Any]:
        """What identifies the content: the id and span, not where the dataset happens to be mounted."""
        return {"video_id": self.video_id, "start": self.start, "end": self.end}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VideoWindow | None:
        return None if d is None else cls(**d)


@dataclass(frozen=True)
class Request:
    kind: str
    video: VideoWindow | None = None
    text: str | None = None
    question: str | None = None
    options: tuple[str, ...] = ()
    prompt: str | None = None
    meta: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    """Free task data carried along (not part of the key)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown request kind {self.kind!r}; expected one of {KINDS}")

    def payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.video is not None:
            d["video"] = self.video.identity()
        for name in ("text", "question", "prompt"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.options:
            d["options"] = list(self.options)
        return d

    def key(self) -> str:
        blob = json.dumps(self.payload(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def video_embedding(video: VideoWindow) -> Request:
    return Request(VIDEO_EMBEDDING, video=video)


def text_embedding(text: str) -> Request:
    return Request(TEXT_EMBEDDING, text=text)


def choice_scores(video: VideoWindow | None, question: str, options: list[str] | tuple[str, ...]) -> Request:
    return Request(CHOICE_SCORES, video=video, question=question, options=tuple(options))


def generate(video: VideoWindow | None, prompt: str) -> Request:
    return Request(GENERATE, video=video, prompt=prompt)


def encode_answer(answer: Any) -> Any:
    """An answer as JSON: arrays become lists of floats (float32 round-trips exactly through repr)."""
    if isinstance(answer, np.ndarray):
        return {"array": answer.astype(np.float32).tolist()}
    return answer


def decode_answer(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=np.float32)
    return value
