"""The multiple-choice task base: what a QA task written on it gets without writing it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vfeval.errors import UsageError
from vfeval.multiple_choice import MultipleChoiceConfig, MultipleChoiceTask, mc_sample
from vfeval.requests import CHOICE_SCORES, VideoWindow
from vfeval.task import Sample, SampleResult


@dataclass
class JsonQAConfig(MultipleChoiceConfig):
    name: str = "json-qa"
    split: str = "val"


class JsonQATask(MultipleChoiceTask):
    """A third-party QA task as a user writes it: read the file, build samples, nothing else."""

    name = "json-qa"
    splits = ("val",)

    def load(self) -> list[Sample]:
        rows = json.loads(self.questions_path.read_text())
        return [
            mc_sample(r["id"], VideoWindow(r["video"], str(self.path(r["video"]))), r["question"], r["options"],
                      r.get("answer"), r["video"])
            for r in rows
        ]

    def question_types(self) -> dict[str, str]:
        return {"a": "colour", "b": "colour", "c": "count"}


class FixedQATask(JsonQATask):
    num_options = 3
    chance_metric = True


ROWS = [
    {"id": "a", "video": "v1.mp4", "question": "colour?", "options": ["red", "blue", "green"], "answer": 0},
    {"id": "b", "video": "v1.mp4", "question": "colour?", "options": ["red", "blue", "green"], "answer": 2},
    {"id": "c", "video": "v2.mp4", "question": "count?", "options": ["one", "two", "three"], "answer": 1},
    {"id": "d", "video": "v3.mp4", "question": "open?", "options": ["yes", "no", "maybe"]},
]


def make(tmp_path: Path, cls: type = JsonQATask) -> tuple[MultipleChoiceTask, list[Sample]]:
    (tmp_path / "questions.json").write_text(json.dumps(ROWS))
    task = cls(JsonQAConfig(root=str(tmp_path)))
    return task, task.load()


def answer(sample: Sample, scores: list[float]) -> SampleResult:
    return SampleResult(sample, [np.array(scores, dtype=np.float32)])


def test_samples_and_requests(tmp_path):
    task, samples = make(tmp_path)
    assert [s.target for s in samples] == [0, 2, 1, None]
    assert samples[0].data == {"question": "colour?", "options": ["red", "blue", "green"]}
    assert samples[0].video.path == str(tmp_path / "v1.mp4") and samples[0].group == "v1.mp4"
    (request,) = task.requests(samples[0])
    assert request.kind == CHOICE_SCORES and request.options == ("red", "blue", "green")


def test_predict_ties_nan_and_no_finite_score(tmp_path):
    task, samples = make(tmp_path)
    assert task.predict(answer(samples[1], [0.5, 0.9, 0.9])) == (1, False)  # the lowest index on ties
    assert task.predict(answer(samples[1], [np.nan, 0.1, 0.2])) == (2, True)  # a NaN never wins
    assert task.predict(answer(samples[0], [-np.inf, np.nan, -np.inf])) == (None, False)  # wrong, not option 0
    assert task.predict(answer(samples[3], [0.0, 1.0, 0.0])) == (1, None)  # no answer: predicted, not judged
    assert task.predict(SampleResult(samples[0], None, error="gone")) == (None, None)
    with pytest.raises(ValueError, match="json-qa a: expected 3 option scores, got 2"):
        task.predict(answer(samples[0], [1.0, 0.0]))


def test_score_counts_only_answered_samples_and_says_what_it_left_out(tmp_path):
    task, samples = make(tmp_path)
    results = [
        answer(samples[0], [1.0, 0.0, 0.0]),  # right
        answer(samples[1], [np.nan, np.nan, np.nan]),  # unparseable: wrong
        SampleResult(samples[2], None, error="cannot open video"),
        answer(samples[3], [0.0, 0.0, 1.0]),  # no answer in the data
    ]
    scores = task.score(results, seed=0)
    accuracy = scores.metrics["accuracy"]
    assert accuracy.value == pytest.approx(50.0) and accuracy.n == 2
    assert accuracy.ci_low == accuracy.ci_high == pytest.approx(50.0)  # both questions are about one video
    assert set(scores.metrics) == {"accuracy"}
    assert scores.notes == [
        "1 of 4 samples failed and are not scored",
        "1 questions have no answer in the data; predicted and logged, not scored",
        "1 answers scored no option (e.g. unparseable): no prediction, counted wrong",
    ]
    assert set(scores.breakdowns) == {"accuracy_by_type"}  # options vary: no answer-position breakdowns
    assert scores.breakdowns["accuracy_by_type"]["colour"].value == pytest.approx(50.0)

    nothing = task.score([SampleResult(s, None, error="x") for s in samples])
    assert not nothing.scored and not nothing.metrics and nothing.notes[0] == task.empty_note


def test_fixed_options_give_answer_position_breakdowns_and_chance(tmp_path):
    task, samples = make(tmp_path, FixedQATask)
    results = [answer(s, [0.0, 0.0, 1.0]) for s in samples]  # always the last option
    scores = task.score(results, seed=0)
    assert scores.metrics["accuracy"].value == pytest.approx(100.0 / 3)
    assert scores.metrics["chance"].value == pytest.approx(100.0 / 3)
    assert not scores.metrics["chance"].higher_is_better
    share = scores.breakdowns["answer_share"]
    assert [share[k].value for k in ("0", "1", "2")] == pytest.approx([0.0, 0.0, 100.0])
    by_answer = scores.breakdowns["accuracy_by_answer"]
    assert {k: m.value for k, m in by_answer.items()} == pytest.approx({"0": 0.0, "1": 0.0, "2": 100.0})
    by_type = scores.breakdowns["accuracy_by_type"]
    assert {k: (m.value, m.n) for k, m in by_type.items()} == {"colour": (50.0, 2), "count": (0.0, 1)}


def test_split_and_root(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="'task.split': 'test'; json-qa has splits val"):
        JsonQATask(JsonQAConfig(root=str(tmp_path), split="test"))
    monkeypatch.setenv("QA_DATA", str(tmp_path))
    task = JsonQATask(JsonQAConfig(root="${oc.env:QA_DATA}/qa", questions="/abs/q.json"))
    assert task.root == tmp_path / "qa"
    assert task.questions_path == Path("/abs/q.json") and task.path("v.mp4") == tmp_path / "qa" / "v.mp4"
