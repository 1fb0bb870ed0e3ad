"""A linear probe on frozen embeddings: standardised features, multinomial logistic regression.

Deterministic: scikit-learn's lbfgs solver (no randomness), features standardised with the training set's
mean and standard deviation, and, when C is chosen by cross-validation, stratified folds shuffled with a
fixed seed. Only the training embeddings are ever seen while fitting or choosing C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vfeval.errors import UsageError

MAX_ITER = 5000
CV_SEED = 0


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
