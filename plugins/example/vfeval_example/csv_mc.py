"""``csv-mc``: multiple-choice video QA from a CSV file, for benchmarks that have no task of their own.

Data layout under ``task.root``::

    questions.csv    video,question,option_0,option_1,...,option_N,answer
    <video paths>    relative to root (or absolute), one row per question

- ``option_0`` .. ``option_N``: at least two option columns, numbered from 0 without gaps. A row may leave
  trailing options empty when it has fewer choices than the file has columns.
- ``answer``: the index of the right option; empty for a question without a public answer (it is answered
  and logged, but not scored).
- ``id`` (optional): a unique id per row; the row number otherwise.

One ``choice_scores`` request per row; accuracy in percent with a 95% bootstrap interval that resamples
videos, so several questions about one video count as one draw. The file's SHA-256 is part of the
protocol: results on different question files are never ranked together.

This module is imported when the task is registered: numpy at most, nothing that decodes video.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.config import TaskConfig
from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.requests import Request, VideoWindow, choice_scores
from vfeval.task import Metric, Sample, SampleResult, Scores, Task

SPLITS = ("test",)
REQUIRED = ("video", "question", "option_0", "option_1", "answer")
EXPECTED_COLUMNS = "video,question,option_0..option_N,answer (optional: id)"
_OPTION = re.compile(r"option_(\d+)$")


@dataclass
class CsvMcConfig(TaskConfig):
    name: str = "csv-mc"
    root: str = "data/csv-mc"
    split: str = "test"
    questions: str = "questions.csv"
    """The question file, relative to ``root`` unless absolute."""


class CsvMcTask(Task):
    name = "csv-mc"
    version = "1"
    metric_versions = {"accuracy": "1", "bootstrap": bootstrap.VERSION}

    def __init__(self, config: CsvMcConfig) -> None:
        super().__init__(config)
        self._sha256: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    @property
    def questions_path(self) -> Path:
        path = Path(self.config.questions).expanduser()
        return path if path.is_absolute() else self.root / path

    def load(self) -> list[Sample]:
        path = self.questions_path
        if not path.is_file():
            raise UsageError(
                f"csv-mc questions file not found: {path}; expected a CSV with columns {EXPECTED_COLUMNS} "
                "(`vfeval csv-mc-template --out FILE` writes an example)"
            )
        data = path.read_bytes()
        self._sha256 = hashlib.sha256(data).hexdigest()
        return read_questions(path, data.decode("utf-8-sig"), self.root)

    def requests(self, sample: Sample) -> list[Request]:
        return [choice_scores(sample.video, sample.data["question"], sample.data["options"])]

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        """The best-scoring option (the lowest index on ties; never a NaN) and whether it is the answer."""
        if result.answers is None:
            return None, None
        scores = np.asarray(result.answers[0], dtype=np.float64).reshape(-1)
        n = len(result.sample.data["options"])
        if scores.size != n:
            raise ValueError(f"csv-mc {result.sample.id}: expected {n} option scores, got {scores.size}")
        prediction = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
        target = result.sample.target
        return prediction, None if target is None else prediction == int(target)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        n_failed = sum(r.failed for r in results)
        answered = [r for r in results if not r.failed and r.sample.target is not None]
        n_open = sum(1 for r in results if not r.failed and r.sample.target is None)
        notes = []
        if n_failed:
            notes.append(f"{n_failed} of {len(results)} samples failed and are not scored")
        if n_open:
            notes.append(f"{n_open} questions have no answer in the CSV; predicted and logged, not scored")
        if not answered:
            return Scores(scored=False, headline="accuracy", notes=["no answered question to score", *notes])
        correct = np.array([100.0 * bool(self.predict(r)[1]) for r in answered])
        groups = [r.sample.group or r.sample.id for r in answered]
        mean, low, high = bootstrap.mean_ci(correct, groups, seed=seed)
        chance = float(np.mean([100.0 / len(r.sample.data["options"]) for r in answered]))
        return Scores(
            metrics={
                "accuracy": Metric(mean, low, high, n=len(answered)),
                "chance": Metric(chance, n=len(answered), higher_is_better=False),
            },
            headline="accuracy",
            notes=notes,
        )

    def protocol_options(self) -> dict[str, Any]:
        return {"questions_sha256": self._sha256}


def _columns(path: Path, header: list[str]) -> list[str]:
    """The option columns in order; a UsageError naming what is missing from the header."""
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UsageError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns {EXPECTED_COLUMNS}"
        )
    numbers = sorted(int(m.group(1)) for c in header if (m := _OPTION.match(c)))
    if numbers != list(range(len(numbers))):
        raise UsageError(f"{path}: option columns must be option_0..option_N without gaps, got {numbers}")
    return [f"option_{i}" for i in numbers]


def read_questions(path: Path, text: str, root: Path) -> list[Sample]:
    """Samples from the CSV text; a bad row is a UsageError naming its line and column."""
    reader = csv.DictReader(text.splitlines())
    option_columns = _columns(path, list(reader.fieldnames or []))
    samples: list[Sample] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        cells = [(row.get(c) or "").strip() for c in option_columns]
        options = cells[: cells.index("")] if "" in cells else cells
        if any(cells[len(options) :]):
            raise UsageError(f"{path} line {line}: an empty option comes before a filled one")
        if len(options) < 2:
            raise UsageError(f"{path} line {line}: a question needs at least option_0 and option_1")
        video = (row.get("video") or "").strip()
        if not video:
            raise UsageError(f"{path} line {line}: column 'video' is empty")
        answer = (row.get("answer") or "").strip()
        target = None
        if answer:
            if not re.fullmatch(r"[0-9]+", answer) or int(answer) >= len(options):
                raise UsageError(
                    f"{path} line {line}: column 'answer' must be an option index 0..{len(options) - 1} "
                    f"or empty, not {answer!r}"
                )
            target = int(answer)
        sample_id = (row.get("id") or "").strip() or f"row{len(samples)}"
        if sample_id in seen:
            raise UsageError(f"{path} line {line}: id {sample_id!r} is used twice")
        seen.add(sample_id)
        video_path = Path(video).expanduser()
        samples.append(
            Sample(
                id=sample_id,
                # The id is the path as written, so a dataset moved to another root keeps its cache entries.
                video=VideoWindow(video, str(video_path if video_path.is_absolute() else root / video_path)),
                target=target,
                data={"question": (row.get("question") or "").strip(), "options": options},
                group=video,
            )
        )
    return samples


def make_task(config: CsvMcConfig) -> CsvMcTask:
    return CsvMcTask(config)
