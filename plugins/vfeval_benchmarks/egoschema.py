"""EgoSchema: five-way multiple-choice questions about three-minute egocentric videos.

Data layout under ``task.root`` (the files of the official repository, egoschema/EgoSchema)::

    questions.json        5031 x {"q_uid", "google_drive_id", "question", "option 0", ..., "option 4"}
    subset_answers.json   {q_uid: answer index 0..4} for 500 questions
    videos/{q_uid}.mp4    180 s of Ego4D each

Splits:

- ``subset``: the 500 questions with public answers, scored offline (accuracy in percent, chance is 20%).
- ``full``: all questions. Their answers are withheld, so this split is never scored here: the task writes
  ``submission.json`` (``{q_uid: int}``, checked by ``check_submission``) for the organisers' grader instead.
  If ``subset_answers.json`` is present too, the full split's predictions on those questions are scored
  offline as the extra metric ``subset_accuracy`` (the full-set score still comes only from the grader).

Both splits write ``submission.json``. Subset and full numbers differ a lot in the literature, so the split is
part of the protocol of every result.

This module is imported when the task is registered: keep it free of heavy imports.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.multiple_choice import MultipleChoiceConfig, MultipleChoiceTask, Prediction, mc_sample
from vfeval.requests import VideoWindow
from vfeval.task import Metric, Sample, SampleResult, Scores
from vfeval_benchmarks._files import read_json

NUM_OPTIONS = 5
OPTION_KEYS = tuple(f"option {i}" for i in range(NUM_OPTIONS))
QUESTION_KEYS = ("q_uid", "google_drive_id", "question", *OPTION_KEYS)
FULL_SET_SIZE = 5031
"""Entries of the official questions.json; the grader expects an answer for each."""
SPLITS = ("subset", "full")
GRADER_NOTE = (
    "EgoSchema full-set accuracy comes only from the organisers' grader: submit submission.json "
    "(Kaggle competition egoschema-public or the repository's validate.py)"
)


@dataclass
class EgoSchemaConfig(MultipleChoiceConfig):
    """Where the EgoSchema files are. Paths are relative to ``root`` unless absolute."""

    name: str = "egoschema"
    root: str = "${oc.env:VFEVAL_DATA,data}/egoschema"
    split: str = "subset"
    answers: str = "subset_answers.json"
    """Public answers of the subset split; read by the full split when present, for ``subset_accuracy``."""
    videos: str = "videos"
    video_ext: str = "mp4"


class EgoSchemaTask(MultipleChoiceTask):
    """EgoSchema long-video multiple-choice QA (5 options, 180 s egocentric clips); subset: 500 public
    answers scored offline; full: writes submission.json for the official grader

    Zero-shot or trained multiple choice: one ``choice_scores`` request per question.
    """

    name = "egoschema"
    version = "1"
    splits = SPLITS
    num_options = NUM_OPTIONS
    unparseable_note = "{n} answers scored no option (e.g. unparseable): counted wrong, left out of submission.json"

    def __init__(self, config: EgoSchemaConfig) -> None:
        super().__init__(config)
        self._num_questions: int | None = None
        """Entries of questions.json, known once ``load()`` has run; a full submission must cover them all."""

    # -- paths ---------------------------------------------------------------------------------------------

    @property
    def answers_path(self) -> Path:
        return self.path(self.config.answers)

    @property
    def videos_dir(self) -> Path:
        return self.path(self.config.videos)

    def video_path(self, q_uid: str) -> Path:
        return self.videos_dir / f"{q_uid}.{self.config.video_ext}"

    def _check_files(self) -> None:
        """One error naming everything that is missing and where to get it, rather than one file at a time."""
        needed = [self.questions_path, self.videos_dir]
        if self.split == "subset":
            needed.insert(1, self.answers_path)
        missing = [str(p) for p in needed if not p.exists()]
        if not missing:
            return
        where = (
            f"root {self.root} does not exist" if not self.root.exists() else f"missing {', '.join(missing)}"
        )
        raise UsageError(
            f"EgoSchema data not found ({where}); expected {self.questions_path}, {self.answers_path} "
            f"(subset split) and {self.videos_dir}/{{q_uid}}.{self.config.video_ext}: the json files come "
            "from the EgoSchema repository (github.com/egoschema/EgoSchema), the videos from its download "
            "instructions; for offline synthetic data run `vfeval data synthetic --out DIR` and set "
            "task.root=DIR/egoschema"
        )

    # -- loading -------------------------------------------------------------------------------------------

    def load(self) -> list[Sample]:
        self._check_files()
        questions = read_questions(self.questions_path)
        self._num_questions = len(questions)
        if self.split == "subset":
            answers = read_answers(self.answers_path)
            present = {q["q_uid"] for q in questions}
            absent = [uid for uid in answers if uid not in present]
            if absent:
                raise UsageError(
                    f"{self.questions_path} lacks {len(absent)} of the {len(answers)} questions answered in "
                    f"{self.answers_path} (first: {absent[0]}); use the full questions.json of the EgoSchema "
                    "repository"
                )
            # Keep the order of questions.json so samples (and their ids in logs) come out the same every run.
            return [self._sample(q, answers[q["q_uid"]]) for q in questions if q["q_uid"] in answers]
        # Full split: the public answers, when present, let the subset's questions be scored offline.
        answers = read_answers(self.answers_path) if self.answers_path.is_file() else {}
        return [self._sample(q, answers.get(q["q_uid"])) for q in questions]

    def _sample(self, entry: dict[str, str], target: int | None) -> Sample:
        q_uid = entry["q_uid"]
        options = [entry[k] for k in OPTION_KEYS]
        return mc_sample(q_uid, VideoWindow(q_uid, str(self.video_path(q_uid))), entry["question"], options,
                         target, q_uid)

    # -- scoring -------------------------------------------------------------------------------------------

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        if self.split == "full":
            scored = self.predictions(results)
            # Answers are withheld here by design: no note counts the questions without one.
            return self._score_full(results, scored, self.notes(results, scored, unanswered=False), seed)
        return super().score(results, seed)

    def question_types(self) -> dict[str, str]:
        """``{q_uid: question type}`` of data written by `vfeval data synthetic` (``absent`` is the control);
        empty for real data."""
        path = self.root / "synthetic_events.json"
        if not path.is_file():
            return {}
        events = json.loads(path.read_text(encoding="utf-8"))
        return {uid: str(item.get("question_type", "unknown")) for uid, item in events.items()}

    def _score_full(self, results: list[SampleResult], scored: list[Prediction],
                    notes: list[str], seed: int) -> Scores:
        """Not scored: the grader's note, the submission's coverage and checks, and ``subset_accuracy`` (the
        predictions on the questions whose answers are public) when the samples carry those answers."""
        submission = {r.sample.id: prediction for r, prediction, _ in scored if prediction is not None}
        problems = check_submission(submission, [r.sample.id for r in results])
        checked = (f"submission.json checked: {len(submission)} answers, each an integer 0..{NUM_OPTIONS - 1} "
                   "for a q_uid of questions.json" if not problems
                   else "the grader would reject submission.json: " + "; ".join(problems))
        metrics = {}
        known = [(r, c) for r, _, c in scored if c is not None]
        if known:
            correct = np.array([100.0 * bool(c) for _, c in known])
            mean, low, high = bootstrap.mean_ci(correct, [r.sample.group or r.sample.id for r, _ in known],
                                                seed=seed)
            metrics["subset_accuracy"] = Metric(mean, low, high, n=len(known))
            notes = [f"subset_accuracy: offline accuracy on the {len(known)} questions with public answers "
                     f"({self.config.answers}), from the full split's predictions; not the full-set score",
                     *notes]
        total = self._num_questions if self._num_questions is not None else len(results)
        return Scores(metrics=metrics, scored=False,
                      notes=[GRADER_NOTE, *self._coverage_notes(len(scored), total), checked, *notes])

    def _coverage_notes(self, n_answered: int, total: int | None = None) -> list[str]:
        total = self._num_questions if total is None else total
        notes = []
        if total is not None and total != FULL_SET_SIZE:
            notes.append(f"questions.json holds {total} questions; the official file has {FULL_SET_SIZE}")
        total = FULL_SET_SIZE if total is None else total
        coverage = f"submission.json covers {n_answered} of {total} questions"
        if n_answered < total:
            coverage += "; the grader needs an answer for every q_uid of questions.json, so it is incomplete"
        notes.append(coverage)
        return notes

    # -- outputs -------------------------------------------------------------------------------------------

    def write_outputs(self, results: list[SampleResult], run_dir: Path) -> dict[str, str]:
        """``submission.json``: ``{q_uid: predicted index}`` of every sample that did not fail."""
        predictions = self.predictions(results)
        submission = {r.sample.id: prediction for r, prediction, _ in predictions if prediction is not None}
        problems = _invalid_answers(submission, [r.sample.id for r in results])
        if problems:  # predictions come from predict(), so this is a bug, never something to send the grader
            raise ValueError(f"egoschema submission is invalid: {'; '.join(problems)}")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "submission.json"
        # Write then rename, so an interrupted run never leaves a half-written file for the grader.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(submission, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return {"submission": str(path)}

    def protocol_options(self) -> dict[str, Any]:
        # Data written by `vfeval data synthetic` is a different protocol: its scores never rank with real ones.
        if (self.root / "synthetic_events.json").exists():
            return {"data": "synthetic"}
        return {}

    def data_files(self) -> dict[str, Path]:
        """questions.json, the public answers (scored by the subset split, and by the full one when present)
        and synthetic data's question types: what samples and scores are made of."""
        files = {"questions": self.questions_path, "answers": self.answers_path,
                 "synthetic_events": self.root / "synthetic_events.json"}
        return {label: path for label, path in files.items() if path.is_file()}


def read_questions(path: Path) -> list[dict[str, str]]:
    """The entries of an EgoSchema ``questions.json``, validated; a bad entry names its index and key."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UsageError(f"{path} must hold a JSON list of questions, not a {type(data).__name__}")
    seen: set[str] = set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: entry {i} must be an object with keys {', '.join(QUESTION_KEYS)}")
        for key in QUESTION_KEYS:
            if key not in entry:
                raise UsageError(f"{path}: entry {i} has no key {key!r}")
            if not isinstance(entry[key], str):
                raise UsageError(
                    f"{path}: entry {i} key {key!r} must be a string, not {type(entry[key]).__name__}"
                )
        q_uid = entry["q_uid"]
        if not q_uid:
            raise UsageError(f"{path}: entry {i} key 'q_uid' is empty")
        if q_uid in seen:
            raise UsageError(f"{path}: entry {i} repeats q_uid {q_uid}")
        seen.add(q_uid)
    return data


def read_answers(path: Path) -> dict[str, int]:
    """An EgoSchema ``subset_answers.json``, ``{q_uid: 0..4}``, validated."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UsageError(
            f"{path} must hold a JSON object {{q_uid: answer index}}, not a {type(data).__name__}"
        )
    for q_uid, answer in data.items():
        # bool is an int in Python; true/false in the file is a mistake, not an answer.
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < NUM_OPTIONS:
            raise UsageError(
                f"{path}: answer of {q_uid!r} must be an integer 0..{NUM_OPTIONS - 1}, not {answer!r}"
            )
    return data


def check_submission(submission: dict[str, Any], q_uids: list[str]) -> list[str]:
    """What the grader would reject in ``submission`` (``{q_uid: answer}``) for the questions ``q_uids``.

    Every answer must be an integer 0..4 (not a bool) for a q_uid of questions.json; when questions.json is
    the official file (5031 questions) every one of them needs an answer. Returns the problems, [] if none.
    """
    problems = _invalid_answers(submission, q_uids)
    if len(set(q_uids)) == FULL_SET_SIZE and len(submission) != FULL_SET_SIZE:
        problems.append(f"it answers {len(submission)} of the official {FULL_SET_SIZE} questions")
    return problems


def _invalid_answers(submission: dict[str, Any], q_uids: list[str]) -> list[str]:
    problems = []
    bad = [(u, a) for u, a in submission.items()
           if isinstance(a, bool) or not isinstance(a, int | np.integer) or not 0 <= a < NUM_OPTIONS]
    if bad:
        problems.append(f"{len(bad)} answers are not integers 0..{NUM_OPTIONS - 1} (first: {bad[0][0]}: "
                        f"{bad[0][1]!r})")
    known = set(q_uids)
    unknown = [u for u in submission if u not in known]
    if unknown:
        problems.append(f"{len(unknown)} q_uids are not in questions.json (first: {unknown[0]})")
    return problems


def make_task(config: EgoSchemaConfig) -> EgoSchemaTask:
    return EgoSchemaTask(config)
