"""Multiple-choice video QA: the base of every task that asks one question with K options per sample.

A subclass reads its benchmark's files into samples built with ``mc_sample`` (``data`` holds ``question``
and ``options``, ``target`` the index of the right option or None where the answer is not public) and
inherits the rest:

- one ``choice_scores`` request per sample;
- ``predict``: the best-scoring option, the lowest index on ties; a NaN never wins, and an answer with no
  finite score (an LLM reply with no parseable letter) predicts nothing and counts as wrong, never as the
  credit that picking option 0 would give;
- ``score``: accuracy in percent with a 95% bootstrap interval that resamples ``Sample.group`` (a video
  asked several questions is one draw), over the samples that did not fail and have an answer; notes that
  count failed, unanswered and unparseable samples;
- breakdowns: the share of each predicted position and the accuracy per right position when every
  question has ``num_options`` options (a model that always answers one letter shows at a glance), and the
  accuracy per question type where ``question_types`` knows them.

Hooks a subclass may override: ``question_types``, ``extra_metrics``; ``chance_metric = True`` adds the
accuracy of guessing. This module imports numpy at most, so task modules built on it stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.config import TaskConfig
from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.requests import Request, VideoWindow, choice_scores
from vfeval.task import Metric, Sample, SampleResult, Scores, Task

Prediction = tuple[SampleResult, "int | None", "bool | None"]
"""``(result, predicted index or None, correct or None)`` of one sample that did not fail."""


@dataclass
class MultipleChoiceConfig(TaskConfig):
    """Where a multiple-choice benchmark's files are. Paths are relative to ``root`` unless absolute."""

    questions: str = "questions.json"
    """The question file."""


def mc_sample(
    sample_id: str, video: VideoWindow, question: str, options: list[str], target: int | None, group: str
) -> Sample:
    """A multiple-choice sample: ``target`` is the index of the right option, None where it is not public;
    samples of one ``group`` (usually one video) are resampled together by the bootstrap."""
    return Sample(
        id=sample_id, video=video, target=target, data={"question": question, "options": options}, group=group
    )


class MultipleChoiceTask(Task):
    """Subclasses set ``name``, ``version``, ``splits`` and implement ``load``."""

    metric_versions = {"accuracy": "1", "bootstrap": bootstrap.VERSION}
    splits: tuple[str, ...] = ()
    """The values ``task.split`` may take (empty: any)."""
    num_options: int | None = None
    """Options of every question where the benchmark fixes it (EgoSchema: 5); None where it varies."""
    chance_metric: bool = False
    """Report ``chance``, the mean accuracy of a uniform guess over the scored questions."""
    empty_note = "no sample could be scored"
    """The note of a score with nothing to score (every sample failed or none has an answer)."""
    unparseable_note = "{n} answers scored no option (e.g. unparseable): no prediction, counted wrong"
    """The note counting answers with no finite score (``{n}``: how many)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if self.splits and config.split not in self.splits:
            raise UsageError(
                f"config: bad value for 'task.split': {config.split!r}; {self.name} has splits "
                f"{', '.join(self.splits)}"
            )

    # -- paths ---------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        root = str(self.config.root)
        if "${" in root:
            # A config built in code rather than through OmegaConf still holds the interpolation string.
            from omegaconf import OmegaConf

            root = str(OmegaConf.create({"root": root}).root)
        return Path(root).expanduser()

    def path(self, name: str) -> Path:
        """``name`` relative to ``root`` unless absolute."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def questions_path(self) -> Path:
        return self.path(self.config.questions)

    # -- requests and predictions --------------------------------------------------------------------------

    def requests(self, sample: Sample) -> list[Request]:
        return [choice_scores(sample.video, sample.data["question"], sample.data["options"])]

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        """The option with the highest score (the lowest index on ties) and whether it is the answer."""
        if result.answers is None:
            return None, None
        scores = np.asarray(result.answers[0], dtype=np.float64).reshape(-1)
        n = self.num_options or len(result.sample.data["options"])
        if scores.size != n:
            raise ValueError(f"{self.name} {result.sample.id}: expected {n} option scores, got {scores.size}")
        target = result.sample.target
        if not np.isfinite(scores).any():
            return None, None if target is None else False
        # np.argmax would pick a NaN over any number; a NaN score must never be the prediction.
        prediction = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
        return prediction, None if target is None else prediction == int(target)

    def predictions(self, results: list[SampleResult]) -> list[Prediction]:
        """(result, prediction, correct) of every sample that did not fail, recomputed from its answers."""
        return [(r, *self.predict(r)) for r in results if not r.failed]

    def notes(self, results: list[SampleResult], scored: list[Prediction], unanswered: bool = True) -> list[str]:
        """What a reader of the score must know: failed, unanswered (unless ``unanswered`` is False: a split
        whose answers are withheld) and unparseable samples."""
        n_failed = len(results) - len(scored)
        notes = [f"{n_failed} of {len(results)} samples failed and are not scored"] if n_failed else []
        n_open = sum(r.sample.target is None for r, _, _ in scored)
        if n_open and unanswered:
            notes.append(f"{n_open} questions have no answer in the data; predicted and logged, not scored")
        n_none = sum(p is None for _, p, _ in scored)
        if n_none:
            notes.append(self.unparseable_note.format(n=n_none))
        return notes

    # -- scoring -------------------------------------------------------------------------------------------

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        scored = self.predictions(results)
        notes = self.notes(results, scored)
        answered = [s for s in scored if s[2] is not None]
        if not answered:
            return Scores(scored=False, headline="accuracy", notes=[self.empty_note, *notes])
        groups = [r.sample.group or r.sample.id for r, _, _ in answered]
        correct = np.array([100.0 * bool(c) for _, _, c in answered])
        mean, low, high = bootstrap.mean_ci(correct, groups, seed=seed)
        metrics = {"accuracy": Metric(mean, low, high, n=len(answered))}
        if self.chance_metric:
            chance = float(np.mean([100.0 / len(r.sample.data["options"]) for r, _, _ in answered]))
            metrics["chance"] = Metric(chance, n=len(answered), higher_is_better=False)
        metrics.update(self.extra_metrics(answered, seed))
        breakdowns = self._position_breakdowns(answered, correct, groups, seed)
        types = self.question_types()
        if types:
            breakdowns["accuracy_by_type"] = _accuracy_by(
                [types.get(r.sample.id, "unknown") for r, _, _ in answered], correct, groups, seed
            )
        return Scores(metrics=metrics, headline="accuracy", breakdowns=breakdowns, notes=notes)

    def _position_breakdowns(
        self, answered: list[Prediction], correct: np.ndarray, groups: list[str], seed: int
    ) -> dict[str, dict[str, Metric]]:
        """``answer_share`` (of each predicted index) and ``accuracy_by_answer`` (per right index), where every
        question has ``num_options`` options; none otherwise."""
        if not self.num_options:
            return {}
        predictions = np.array([p for _, p, _ in answered])
        targets = np.array([int(r.sample.target) for r, _, _ in answered])
        answer_share = {}
        for k in range(self.num_options):
            share, low, high = bootstrap.mean_ci(100.0 * (predictions == k), groups, seed=seed)
            answer_share[str(k)] = Metric(share, low, high, n=len(answered), higher_is_better=False)
        by_answer = _accuracy_by([str(t) for t in targets], correct, groups, seed)
        by_answer = {str(k): by_answer[str(k)] for k in range(self.num_options) if str(k) in by_answer}
        return {"answer_share": answer_share, "accuracy_by_answer": by_answer}

    def question_types(self) -> dict[str, str]:
        """``{sample id: question type}`` where the data says it; each type gets its accuracy in the
        ``accuracy_by_type`` breakdown (samples it does not name count as ``unknown``). Empty: no breakdown."""
        return {}

    def extra_metrics(self, answered: list[Prediction], seed: int) -> dict[str, Metric]:
        """Metrics beyond ``accuracy`` (and ``chance``) over the scored samples; none by default."""
        return {}


def _accuracy_by(
    keys: list[str], correct: np.ndarray, groups: list[str], seed: int
) -> dict[str, Metric]:
    """Accuracy with its interval per value of ``keys`` (one key per scored sample), in sorted order."""
    out = {}
    for key in sorted(set(keys)):
        rows = [i for i, k in enumerate(keys) if k == key]
        acc, low, high = bootstrap.mean_ci(correct[rows], [groups[i] for i in rows], seed=seed)
        out[key] = Metric(acc, low, high, n=len(rows))
    return out
