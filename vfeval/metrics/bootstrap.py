"""Seeded, reproducible bootstrap confidence intervals, resampling clusters (videos) rather than rows.

When a video has several samples (several captions, several questions), its samples are not independent:
resampling them one by one would give intervals that are too narrow. ``cluster_bootstrap`` draws whole
groups with replacement, then recomputes the statistic on the rows of the drawn groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

VERSION = "1"
DEFAULT_RESAMPLES = 1000


def _group_index(groups: Sequence[str] | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(str(g), []).append(i)
    return [np.asarray(rows) for rows in order.values()]


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    groups: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(row_indices)`` over group-resampled row sets.

    statistic: takes an int array of row indices (rows may repeat) and returns a float.
    Returns (low, high); (nan, nan) when n == 0.
    """
    if n == 0:
        return float("nan"), float("nan")
    clusters = _group_index(groups, n)
    singletons = all(len(c) == 1 for c in clusters)
    order = np.concatenate(clusters) if singletons else None
    rng = np.random.default_rng(seed)
    values = np.empty(resamples, dtype=np.float64)
    for b in range(resamples):
        picks = rng.integers(0, len(clusters), size=len(clusters))
        # One row per cluster (e.g. one caption per video): index directly instead of joining arrays.
        rows = order[picks] if order is not None else np.concatenate([clusters[i] for i in picks])
        values[b] = statistic(rows)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def mean_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, low, high) of per-row values, e.g. 0/1 correctness times 100, with a clustered bootstrap CI.

    Fast path: per-cluster sums and counts, so each resample costs O(clusters).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    clusters = _group_index(groups, x.size)
    sums = np.array([x[c].sum() for c in clusters])
    counts = np.array([len(c) for c in clusters], dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clusters), size=(resamples, len(clusters)))
    boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(x.mean()), float(low), float(high)
