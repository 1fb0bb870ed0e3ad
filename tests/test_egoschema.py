"""The EgoSchema task against the real annotation files: loading, scoring, errors, grader submission."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from vfeval_benchmarks.egoschema import GRADER_NOTE, EgoSchemaConfig, EgoSchemaTask, make_task
from vfeval_benchmarks.tasks import register

from vfeval.errors import UsageError
from vfeval.requests import CHOICE_SCORES
from vfeval.task import SampleResult

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "egoschema"
ANSWERS = SHARED / "subset_answers.json"
QUESTIONS_SAMPLE = SHARED / "questions_sample.json"


def needs(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real annotation file not available: {path}")
    return path


def placeholder_questions(q_uids: list[str]) -> list[dict[str, str]]:
    """questions.json entries in the official schema for ids whose real text is not available here."""
    return [
        {
            "q_uid": uid,
            "google_drive_id": f"drive-{i}",
            "question": f"What does c do in video {i}?",
            **{f"option {k}": f"answer {k} of question {i}" for k in range(5)},
        }
        for i, uid in enumerate(q_uids)
    ]


def make_root(tmp_path: Path, questions: list[dict], answers: dict | None = None) -> Path:
    root = tmp_path / "egoschema"
    (root / "videos").mkdir(parents=True)
    (root / "questions.json").write_text(json.dumps(questions))
    if answers is not None:
        (root / "subset_answers.json").write_text(json.dumps(answers))
    return root


def task_at(root: Path, split: str = "subset") -> EgoSchemaTask:
    return make_task(EgoSchemaConfig(root=str(root), split=split))


def one_hot(k: int) -> np.ndarray:
    scores = np.zeros(5, dtype=np.float32)
    scores[k] = 1.0
    return scores


def answer_always(task: EgoSchemaTask, samples, k: int) -> list[SampleResult]:
    results = [SampleResult(s, [one_hot(k)]) for s in samples]
    for r in results:
        r.prediction, r.correct = task.predict(r)
    return results


@pytest.fixture
def real_subset(tmp_path):
    """A data root with the real 500 subset answers and a questions.json holding their ids plus extras."""
    answers = json.loads(needs(ANSWERS).read_text())
    # Extra questions without public answers, as in the real questions.json, must not enter the subset.
    extra = [f"not-in-subset-{i}" for i in range(7)]
    root = make_root(tmp_path, placeholder_questions(extra[:3] + list(answers) + extra[3:]), answers)
    return task_at(root), answers


def test_subset_loads_the_500_answered_questions(real_subset):
    task, answers = real_subset
    samples = task.load()
    assert len(samples) == len(answers) == 500
    assert {s.id: s.target for s in samples} == answers
    s = samples[0]
    assert s.group == s.id
    assert s.video.video_id == s.id
    assert s.video.path == str(task.root / "videos" / f"{s.id}.mp4")
    assert len(s.data["options"]) == 5 and s.data["question"]
    # Videos are not checked at load: a missing one becomes a failed sample in the runner.
    assert not Path(s.video.path).exists()

    (request,) = task.requests(s)
    assert request.kind == CHOICE_SCORES
    assert request.video == s.video
    assert request.question == s.data["question"]
    assert request.options == tuple(s.data["options"])


def test_always_answering_k_scores_the_share_of_k(real_subset):
    task, answers = real_subset
    samples = task.load()
    counts = Counter(answers.values())
    assert counts == {0: 101, 1: 108, 2: 91, 3: 83, 4: 117}  # the published counts of the subset
    for k in range(5):
        scores = task.score(answer_always(task, samples, k), seed=0)
        acc = scores.metrics["accuracy"]
        assert scores.scored and scores.headline == "accuracy"
        assert acc.value == pytest.approx(100.0 * counts[k] / len(answers))
        assert acc.n == 500
        assert acc.ci_low < acc.value < acc.ci_high
        assert scores.breakdowns["answer_share"][str(k)].value == pytest.approx(100.0)
        assert scores.breakdowns["accuracy_by_answer"][str(k)].value == pytest.approx(100.0)
        assert scores.notes == []
    assert task.score(answer_always(task, samples, 0), seed=0).metrics["accuracy"].value == pytest.approx(
        20.2
    )


def test_same_seed_same_interval(real_subset):
    task, _ = real_subset
    results = answer_always(task, task.load(), 1)
    first, second = task.score(results, seed=3), task.score(results, seed=3)
    assert first.metrics["accuracy"] == second.metrics["accuracy"]


def test_ties_go_to_the_lowest_index_and_nan_never_wins(real_subset):
    task, _ = real_subset
    sample = task.load()[0]
    tie = np.array([0.1, 0.7, 0.2, 0.7, 0.7], dtype=np.float32)
    assert task.predict(SampleResult(sample, [tie]))[0] == 1
    with_nan = np.array([np.nan, 0.0, 0.3, np.nan, 0.1], dtype=np.float32)
    assert task.predict(SampleResult(sample, [with_nan]))[0] == 2
    prediction, correct = task.predict(SampleResult(sample, [one_hot(sample.target)]))
    assert (prediction, correct) == (sample.target, True)
    assert isinstance(prediction, int)


def test_failed_samples_are_excluded_and_counted(real_subset):
    task, _ = real_subset
    samples = task.load()[:10]
    results = [SampleResult(s, [one_hot(s.target)]) for s in samples[:6]]
    results += [SampleResult(s, None, error="cannot open video") for s in samples[6:]]
    scores = task.score(results)
    assert scores.metrics["accuracy"].value == pytest.approx(100.0)
    assert scores.metrics["accuracy"].n == 6
    assert any("4 of 10 samples failed" in note for note in scores.notes)

    all_failed = task.score([SampleResult(s, None, error="missing") for s in samples])
    assert not all_failed.scored and not all_failed.metrics


def test_subset_missing_from_questions_is_an_error(tmp_path):
    answers = json.loads(needs(ANSWERS).read_text())
    root = make_root(tmp_path, placeholder_questions(list(answers)[:-3]), answers)
    with pytest.raises(UsageError, match="lacks 3 of the 500 questions"):
        task_at(root).load()


def test_real_question_entries_parse_in_the_full_split(tmp_path):
    real = json.loads(needs(QUESTIONS_SAMPLE).read_text())
    root = make_root(tmp_path, real)  # no answers file: the full split does not need one
    task = task_at(root, "full")
    samples = task.load()
    assert [s.id for s in samples] == [e["q_uid"] for e in real]
    assert all(s.target is None for s in samples)
    assert samples[0].data == {
        "question": real[0]["question"],
        "options": [real[0][f"option {k}"] for k in range(5)],
    }


def test_full_split_is_not_scored_and_writes_a_submission(tmp_path):
    real = json.loads(needs(QUESTIONS_SAMPLE).read_text())
    task = task_at(make_root(tmp_path, real), "full")
    samples = task.load()
    results = [SampleResult(s, [one_hot(i % 5)]) for i, s in enumerate(samples[:-2])]
    results += [SampleResult(s, None, error="corrupt") for s in samples[-2:]]
    for r in results:
        r.prediction, r.correct = task.predict(r)
    assert results[0].correct is None

    scores = task.score(results)
    assert scores.scored is False and scores.metrics == {}
    assert GRADER_NOTE in scores.notes
    assert any("covers 18 of 20 questions" in n and "incomplete" in n for n in scores.notes)

    outputs = task.write_outputs(results, tmp_path / "run")
    submission = json.loads(Path(outputs["submission"]).read_text())
    assert submission == {s.id: i % 5 for i, s in enumerate(samples[:-2])}
    assert all(type(v) is int for v in submission.values())


def test_subset_also_writes_a_submission(real_subset, tmp_path):
    task, answers = real_subset
    results = [SampleResult(s, [one_hot(s.target)]) for s in task.load()]
    path = task.write_outputs(results, tmp_path / "run")["submission"]
    assert json.loads(Path(path).read_text()) == answers


def test_missing_data_lists_the_expected_files(tmp_path):
    with pytest.raises(UsageError) as info:
        task_at(tmp_path / "nowhere").load()
    message = str(info.value)
    assert "\n" not in message
    for expected in ("questions.json", "subset_answers.json", "videos/{q_uid}.mp4", "egoschema/EgoSchema"):
        assert expected in message
    assert "vfeval data synthetic --out DIR" in message and "task.root=DIR/egoschema" in message

    root = tmp_path / "egoschema"
    (root / "videos").mkdir(parents=True)
    (root / "subset_answers.json").write_text("{}")
    with pytest.raises(UsageError, match=r"missing [^;]*questions\.json\); expected"):
        task_at(root).load()


def test_malformed_entries_name_the_key(tmp_path):
    entries = placeholder_questions(["a", "b"])
    del entries[1]["option 3"]
    with pytest.raises(UsageError, match=r"entry 1 has no key 'option 3'"):
        task_at(make_root(tmp_path, entries), "full").load()

    entries = placeholder_questions(["a"])
    entries[0]["question"] = 7
    with pytest.raises(UsageError, match=r"entry 0 key 'question' must be a string"):
        task_at(make_root(tmp_path / "2", entries), "full").load()

    with pytest.raises(UsageError, match=r"answer of 'a' must be an integer 0..4"):
        task_at(make_root(tmp_path / "3", placeholder_questions(["a"]), {"a": 5})).load()


def test_unknown_split_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="task.split"):
        task_at(tmp_path, "test")


def test_spec_registration_and_protocol():
    specs = []
    register(specs.append)
    spec = next(s for s in specs if s.name == "egoschema")
    assert spec.name == "egoschema" and spec.splits == ("subset", "full")
    assert spec.config is EgoSchemaConfig
    task = spec.load()(EgoSchemaConfig(root="/data/egoschema", split="full"))
    protocol = task.protocol()
    assert protocol["task"] == "egoschema" and protocol["split"] == "full"
    assert set(protocol["metric_versions"]) == {"accuracy", "bootstrap"}
    assert protocol["options"] == {}


def test_an_answer_with_no_finite_score_is_wrong_not_option_zero(tmp_path):
    """An LLM answer with no parseable letter scores -inf everywhere: it must count as wrong."""
    import numpy as np
    from vfeval_benchmarks.egoschema import EgoSchemaConfig, EgoSchemaTask

    from vfeval.requests import VideoWindow
    from vfeval.task import Sample, SampleResult

    task = EgoSchemaTask(EgoSchemaConfig(root=str(tmp_path), split="subset"))
    sample = Sample("q1", VideoWindow("q1", "x.mp4"), 0, {"question": "?", "options": list("abcde")}, "q1")
    res = SampleResult(sample, [np.full(5, -np.inf, dtype=np.float32)])
    assert task.predict(res) == (None, False)
    scores = task.score([res])
    assert scores.metrics["accuracy"].value == 0.0
    assert any("scored no option" in n for n in scores.notes)


def test_synthetic_data_is_broken_down_by_question_type(tmp_path):
    from vfeval_benchmarks.synthetic import write_synthetic

    write_synthetic(tmp_path, n_videos=20, n_train_videos=0, size=32, duration=8.0, workers=1)
    root = tmp_path / "egoschema"
    task = task_at(root)
    types = {u: e["question_type"] for u, e in json.loads((root / "synthetic_events.json").read_text()).items()}
    # Right on every 'absent' question, wrong on every other.
    results = [SampleResult(s, [one_hot(s.target if types[s.id] == "absent" else (s.target + 1) % 5)])
               for s in task.load()]
    by_type = task.score(results, seed=0).breakdowns["accuracy_by_type"]
    counts = Counter(types[s.id] for s in task.load())
    assert {t: m.n for t, m in by_type.items()} == dict(counts)
    assert {t: m.value for t, m in by_type.items()} == {t: 100.0 if t == "absent" else 0.0 for t in counts}
    real = task_at(make_root(tmp_path / "real", placeholder_questions(["a"]), {"a": 0}))
    assert "accuracy_by_type" not in real.score([SampleResult(s, [one_hot(0)]) for s in real.load()]).breakdowns
