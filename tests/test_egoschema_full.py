"""EgoSchema's full split with every official q_uid: a checked submission for the grader, and the subset's
answers scored offline from the full split's predictions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from vfeval_benchmarks.egoschema import (
    FULL_SET_SIZE,
    GRADER_NOTE,
    EgoSchemaConfig,
    check_submission,
    make_task,
)

from vfeval.task import SampleResult

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "egoschema"


@pytest.fixture
def full_root(tmp_path) -> Path:
    """questions.json with all 5031 real q_uids (placeholder text) and the real subset answers."""
    uids_file, answers_file = SHARED / "uid_to_ego4d.json", SHARED / "subset_answers.json"
    if not uids_file.is_file() or not answers_file.is_file():
        pytest.skip("real EgoSchema annotation files not available")
    uids = list(json.loads(uids_file.read_text()))
    root = tmp_path / "egoschema"
    (root / "videos").mkdir(parents=True)
    questions = [{"q_uid": u, "google_drive_id": "", "question": f"question {i}",
                  **{f"option {k}": f"option {k} of {i}" for k in range(5)}} for i, u in enumerate(uids)]
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(answers_file.read_text())
    return root


def answer(task, samples, k: int) -> list[SampleResult]:
    scores = np.zeros(5, np.float32)
    scores[k] = 1.0
    results = [SampleResult(s, [scores]) for s in samples]
    for r in results:
        r.prediction, r.correct = task.predict(r)
    return results


def test_full_split_scores_the_subset_offline_and_checks_the_submission(full_root, tmp_path):
    task = make_task(EgoSchemaConfig(root=str(full_root), split="full"))
    samples = task.load()
    assert len(samples) == FULL_SET_SIZE and sum(s.target is not None for s in samples) == 500
    results = answer(task, samples, 0)
    scores = task.score(results, seed=0)
    assert scores.scored is False and scores.headline == ""
    subset = scores.metrics["subset_accuracy"]
    assert subset.n == 500 and subset.value == pytest.approx(20.2)  # 101 of the 500 answers are 0
    assert subset.ci_low < subset.value < subset.ci_high
    assert GRADER_NOTE in scores.notes
    assert any("covers 5031 of 5031 questions" in n for n in scores.notes)
    assert any(n.startswith("submission.json checked: 5031 answers") for n in scores.notes)

    submission = json.loads(Path(task.write_outputs(results, tmp_path / "run")["submission"]).read_text())
    assert len(submission) == FULL_SET_SIZE and Counter(submission.values()) == {0: FULL_SET_SIZE}
    assert check_submission(submission, [s.id for s in samples]) == []

    # A failed video leaves a hole the grader would reject; the run says so and still writes the rest.
    results[7] = SampleResult(samples[7], None, error="video file not found")
    notes = task.score(results, seed=0).notes
    assert any("the grader would reject submission.json: it answers 5030 of the official 5031" in n for n in notes)
    assert len(json.loads(Path(task.write_outputs(results, tmp_path / "r2")["submission"]).read_text())) == 5030


def test_check_submission_names_what_the_grader_rejects():
    uids = [f"q{i}" for i in range(FULL_SET_SIZE)]
    good = {u: i % 5 for i, u in enumerate(uids)}
    assert check_submission(good, uids) == []
    problems = check_submission({**good, "q1": 5, "q2": True, "stranger": 1}, uids)
    assert problems[0].startswith("2 answers are not integers 0..4")
    assert problems[1] == "1 q_uids are not in questions.json (first: stranger)"
    assert problems[2] == "it answers 5032 of the official 5031 questions"
    assert check_submission({"a": 1}, ["a", "b"]) == []  # not the official file: no count to meet
