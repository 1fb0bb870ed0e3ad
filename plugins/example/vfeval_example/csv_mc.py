"""``csv-mc``: multiple-choice video QA from a CSV file, for benchmarks that have no task of their own.

Data layout under ``task.root``::

    questions.csv    video,question,option_0,option_1,...,option_N,answer
    <video paths>    relative to root (or absolute), one row per question

- ``option_0`` .. ``option_N``: at least two option columns, numbered from 0 without gaps. A row may leave
  trailing options empty when it has fewer choices than the file has columns.
- ``answer``: the index of the right option; empty for a question without a public answer (it is answered
  and logged, but not scored).
- ``id`` (optional): a unique id per row; the row number otherwise.

Built on ``vfeval.multiple_choice.MultipleChoiceTask``: one ``choice_scores`` request per row; accuracy in
percent with a 95% bootstrap interval that resamples videos, so several questions about one video count as
one draw, and the accuracy of a uniform guess as ``chance``. The file's SHA-256 is part of the protocol:
results on different question files are never ranked together.

This module is imported when the task is registered: the standard library and vfeval's light modules,
nothing that decodes video.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError
from vfeval.multiple_choice import MultipleChoiceConfig, MultipleChoiceTask, mc_sample
from vfeval.requests import VideoWindow
from vfeval.task import Sample

SPLITS = ("test",)
REQUIRED = ("video", "question", "option_0", "option_1", "answer")
EXPECTED_COLUMNS = "video,question,option_0..option_N,answer (optional: id)"
_OPTION = re.compile(r"option_(\d+)$")


@dataclass
class CsvMcConfig(MultipleChoiceConfig):
    name: str = "csv-mc"
    root: str = "data/csv-mc"
    split: str = SPLITS[0]
    questions: str = "questions.csv"
    """The question file, relative to ``root`` unless absolute."""


class CsvMcTask(MultipleChoiceTask):
    """Requests, predictions, accuracy and its interval come from ``MultipleChoiceTask``; this class reads
    the CSV and puts its hash in the protocol."""

    name = "csv-mc"
    version = "1"
    splits = SPLITS
    chance_metric = True
    empty_note = "no answered question to score"
    _sha256: str | None = None
    """The question file's SHA-256, set by ``load()``."""

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
        # The window's id is the path as written, so a dataset moved to another root keeps its cache entries.
        window = VideoWindow(video, str(video_path if video_path.is_absolute() else root / video_path))
        samples.append(mc_sample(sample_id, window, (row.get("question") or "").strip(), options, target, video))
    return samples


def make_task(config: CsvMcConfig) -> CsvMcTask:
    return CsvMcTask(config)
