"""A linear probe on frozen embeddings: standardised features, multinomial logistic regression.

One protocol for every probe task (``msrvtt_category``, ``synthetic_order``) and every encoder: ``score``
fits and scores it from a run's stored embeddings, ``protocol_options`` records its settings.

Deterministic: scikit-learn's lbfgs solver (no randomness), features standardised with the training set's
mean and standard deviation, and, when C is chosen by cross-validation, stratified folds shuffled with a
fixed seed. Only the training embeddings are ever seen while fitting or choosing C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.task import Metric, SampleResult, Scores

MAX_ITER = 5000
CV_SEED = 0


def check_options(cfg: Any) -> None:
    """Refuse bad probe settings of a task config (``max_train_videos``, ``probe_cv_folds``), naming the key."""
    if cfg.max_train_videos is not None and cfg.max_train_videos < 2:
        raise UsageError(f"config: bad value for 'task.max_train_videos': {cfg.max_train_videos}; "
                         "use at least 2 or null for all")
    if cfg.probe_cv_folds < 2:
        raise UsageError(f"config: bad value for 'task.probe_cv_folds': {cfg.probe_cv_folds}; use 2 or more")


def subset(train: list[Any], cap: int | None) -> list[Any]:
    """At most ``cap`` of the training items (None: all): a fixed random subset, in their order, the same
    every run."""
    if cap is None or cap >= len(train):
        return train
    keep = np.sort(np.random.default_rng(0).permutation(len(train))[:cap])
    return [train[i] for i in keep]


@dataclass
class ProbeFit:
    predictions: np.ndarray
    """int [N_test] predicted labels."""
    c: float
    """The C used: the fixed one, or the one cross-validation chose."""
    cv_accuracy: dict[float, float] | None = None
    """Mean cross-validated accuracy (percent) of each C tried, when C was chosen by cross-validation."""


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float = 1.0,
                c_grid: Sequence[float] = (), folds: int = 5) -> ProbeFit:
    """Fit on (train_x: float [N, D], train_y: int [N]) and predict test_x: float [M, D].

    c: inverse regularisation strength when ``c_grid`` is empty; otherwise the C of ``c_grid`` with the best
    mean accuracy over ``folds`` stratified folds of the training set (ties go to the smaller C).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(train_y)
    if classes.size < 2:
        raise UsageError(
            f"the linear probe needs training videos of at least 2 categories, got {classes.size}; "
            "raise task.max_train_videos or check the training split"
        )

    def model(value: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=value, solver="lbfgs", max_iter=MAX_ITER))

    chosen, table = float(c), None
    if c_grid:
        smallest = int(np.bincount(np.searchsorted(classes, train_y)).min())
        if smallest < folds:
            raise UsageError(
                f"config: task.probe_cv_folds={folds} needs at least {folds} training videos per category, "
                f"but one category has {smallest}; lower probe_cv_folds or set probe_c_grid=[] for a fixed C"
            )
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=CV_SEED)
        table = {float(v): 100.0 * float(np.mean(cross_val_score(model(float(v)), train_x, train_y, cv=split)))
                 for v in sorted(c_grid)}
        best = max(table.values())
        chosen = min(v for v, acc in table.items() if acc == best)
    fitted = model(chosen).fit(train_x, train_y)
    return ProbeFit(np.asarray(fitted.predict(test_x)), chosen, table)


def score(results: list[SampleResult], seed: int, cfg: Any, label: str = "category") -> Scores:
    """Fit the probe on the results whose ``sample.data["role"]`` is ``train`` and score those that are
    ``test`` (targets: ``sample.target``, ints; answers: one video embedding each): accuracy with a 95%
    bootstrap CI over videos, a breakdown by class (``accuracy_by_<label>``), and notes saying how the probe
    was fitted and what always answering the commonest training class would score. ``cfg`` holds
    ``probe_c``, ``probe_c_grid`` and ``probe_cv_folds``."""
    train = [r for r in results if r.sample.data.get("role") == "train" and not r.failed]
    test = [r for r in results if r.sample.data.get("role") == "test"]
    scored = [r for r in test if not r.failed]
    notes = []
    n_failed = len(results) - len(train) - len(scored)
    if n_failed:
        notes.append(f"{n_failed} of {len(results)} videos failed and are left out of training or scoring")
    if not scored or not train:
        missing = "test" if not scored else "training"
        return Scores(scored=False, headline="accuracy", notes=[f"no {missing} video could be used", *notes])

    fit = fit_predict(
        np.stack([np.asarray(r.answers[0], np.float32) for r in train]),  # type: ignore[index]
        np.array([int(r.sample.target) for r in train]),
        np.stack([np.asarray(r.answers[0], np.float32) for r in scored]),  # type: ignore[index]
        c=cfg.probe_c, c_grid=list(cfg.probe_c_grid), folds=cfg.probe_cv_folds,
    )
    targets = np.array([int(r.sample.target) for r in scored])
    correct = 100.0 * (fit.predictions == targets)
    groups = [r.sample.group or r.sample.id for r in scored]
    mean, low, high = bootstrap.mean_ci(correct, groups, seed=seed)
    for r, p, c in zip(scored, fit.predictions, correct):
        r.prediction, r.correct = int(p), bool(c)
    by_class = {}
    for k in np.unique(targets):
        rows = np.flatnonzero(targets == k)
        acc, a_low, a_high = bootstrap.mean_ci(correct[rows], [groups[i] for i in rows], seed=seed)
        by_class[str(int(k))] = Metric(acc, a_low, a_high, n=int(rows.size))
    train_y = np.array([int(r.sample.target) for r in train])
    majority = int(np.bincount(train_y).argmax())
    how = (f"C={fit.c:g} chosen by {cfg.probe_cv_folds}-fold stratified CV on the training videos from "
           f"{sorted(fit.cv_accuracy)}" if fit.cv_accuracy else f"C={fit.c:g} fixed")
    notes.insert(0, (
        f"linear probe (standardised features, lbfgs logistic regression, {how}) fitted on {len(train)} "
        f"training videos, scored on {len(scored)} test videos; always answering the commonest training "
        f"{label} ({majority}) would score {100.0 * float(np.mean(targets == majority)):.1f}%"
    ))
    return Scores(metrics={"accuracy": Metric(mean, low, high, n=len(scored))}, headline="accuracy",
                  breakdowns={f"accuracy_by_{label}": by_class}, notes=notes)


def protocol_options(cfg: Any) -> dict[str, Any]:
    """The probe's settings as a task's protocol records them (``cfg`` as for ``score``)."""
    probe: dict[str, Any] = {"features": "standardised", "solver": "lbfgs", "max_iter": MAX_ITER}
    probe.update({"c_grid": sorted(cfg.probe_c_grid), "cv_folds": cfg.probe_cv_folds, "cv_seed": CV_SEED}
                 if cfg.probe_c_grid else {"c": cfg.probe_c})
    return probe
