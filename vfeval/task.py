"""What a task is: it loads samples, emits requests for each, and scores the answers.

Tasks know nothing about encoders. A sample and its answers are plain JSON-able data, so a run's
``samples.jsonl`` holds everything ``vfeval rescore`` needs to score again without the model or the videos.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval.requests import Request, VideoWindow, decode_answer, encode_answer


@dataclass
class Sample:
    id: str
    video: VideoWindow | None
    target: Any
    """The ground truth, JSON-able (None where the split has no public answers)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Task data the requests are built from (question, options, captions...), JSON-able."""
    group: str = ""
    """Samples of one group (usually one video) are resampled together by the bootstrap."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "video": None if self.video is None else self.video.to_dict(),
            "target": self.target,
            "data": self.data,
            "group": self.group or self.id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(d["id"], VideoWindow.from_dict(d.get("video")), d.get("target"), d.get("data", {}), d.get("group", ""))


@dataclass
class SampleResult:
    """A sample with the answers to its requests (in the order ``Task.requests`` gave them)."""

    sample: Sample
    answers: list[Any] | None
    """None when the sample failed."""
    error: str | None = None
    prediction: Any = None
    correct: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Provenance written into the sample's line, JSON-able (e.g. ``frame_times``: the presentation times of
    the frames used, per segment); keys of the line itself are never overwritten."""

    _LINE_KEYS = ("id", "video", "target", "data", "group", "answers", "prediction", "correct", "error")

    @property
    def failed(self) -> bool:
        return self.answers is None

    def to_dict(self) -> dict[str, Any]:
        d = self.sample.to_dict()
        d["answers"] = None if self.answers is None else [encode_answer(a) for a in self.answers]
        d["prediction"] = self.prediction
        d["correct"] = self.correct
        d["error"] = self.error
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleResult:
        answers = d.get("answers")
        return cls(
            Sample.from_dict(d),
            None if answers is None else [decode_answer(a) for a in answers],
            d.get("error"),
            d.get("prediction"),
            d.get("correct"),
            {k: v for k, v in d.items() if k not in cls._LINE_KEYS},
        )


@dataclass
class Metric:
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    higher_is_better: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci95": None if self.ci_low is None else [self.ci_low, self.ci_high],
            "n": self.n,
            "higher_is_better": self.higher_is_better,
        }


@dataclass
class Scores:
    metrics: dict[str, Metric] = field(default_factory=dict)
    headline: str = ""
    """The metric a leaderboard ranks by."""
    breakdowns: dict[str, dict[str, Metric]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scored: bool = True
    """False where the split cannot be scored offline (e.g. EgoSchema's full set)."""


class Task(ABC):
    """Base class of tasks. Subclasses set ``name``, ``version`` and ``metric_versions``."""

    name: str = ""
    version: str = "1"
    metric_versions: dict[str, str] = {}

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    def split(self) -> str:
        return self.config.split

    @abstractmethod
    def load(self) -> list[Sample]:
        """Read the benchmark's files under ``config.root``; raise UsageError listing what is missing."""

    @abstractmethod
    def requests(self, sample: Sample) -> list[Request]:
        """The requests whose answers score this sample."""

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        """(prediction, correct) of one answered sample, JSON-able, for samples.jsonl. Defaults to neither."""
        return None, None

    @abstractmethod
    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        """Metrics over the samples that did not fail, with 95% confidence intervals."""

    def protocol_options(self) -> dict[str, Any]:
        """Options of this task that change what a score means (beyond name, version and split)."""
        return {}

    def write_outputs(self, results: list[SampleResult], run_dir: Path) -> dict[str, str]:
        """Extra files a task writes next to results.json (e.g. a submission file): ``{label: path}``."""
        return {}

    def data_files(self) -> dict[str, Path]:
        """The files this task reads to build its samples and score them (questions, answers, annotations,
        event lists), by a label (the config key naming the file, say); only those that exist. Their SHA-256 is part
        of the protocol (``files``), so scores against other annotations never rank together, and ``rescore``
        refuses to go on when one is gone. Videos are not listed: the runner identifies their content."""
        return {}

    def protocol(self) -> dict[str, Any]:
        protocol = {
            "task": self.name,
            "version": self.version,
            "split": self.split,
            "metric_versions": dict(self.metric_versions),
            "options": self.protocol_options(),
        }
        files = self.data_files()
        if files:
            from vfeval.content import file_hashes

            protocol["files"] = file_hashes(files)
        return protocol

