"""Retrieval metrics: pessimistic tie-robust ranks, R@K / MdR / MnR, multi-caption video-to-text,
batch-size invariance of the similarity, and seeded bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfeval.errors import UsageError
from vfeval.metrics.retrieval import (
    ranks,
    retrieval_metrics,
    retrieval_metrics_with_ci,
    similarity,
    text_to_video,
    video_to_text,
)

# Texts x videos; text i belongs to video TEXT_VIDEO[i]. Worked by hand in test_video_to_text_*.
MULTI = np.array(
    [
        [0.5, 0.4, 0.2],  # t0, video 0
        [0.6, 0.1, 0.9],  # t1, video 0
        [0.7, 0.4, 0.1],  # t2, video 1
        [0.8, 0.2, 0.3],  # t3, video 2
        [0.9, 0.3, 0.9],  # t4, video 2
        [0.6, 0.1, 0.9],  # t5, video 2
    ]
)
TEXT_VIDEO = np.array([0, 0, 1, 2, 2, 2])


def test_ranks_count_ties_against_the_model():
    sim = np.array(
        [
            [0.9, 0.5, 0.9, 0.1],  # tied with column 2 -> 1
            [0.2, 0.8, 0.3, 0.8],  # tied with column 3 -> 1
            [0.5, 0.5, 0.5, 0.5],  # everything tied -> 3, never 0
            [0.1, 0.2, 0.3, 0.4],  # strictly best -> 0
            [0.3, 0.7, 0.3, 0.2],  # one higher, one tied -> 2
        ]
    )
    assert ranks(sim, np.array([0, 1, 2, 3, 0])).tolist() == [1, 1, 3, 0, 2]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9), elements=st.integers(0, 3))
)
def test_ranks_match_the_definition_on_tie_heavy_matrices(sim):
    gt = np.arange(sim.shape[0]) % sim.shape[1]
    expected = [
        sum(
            sim[q, c] > sim[q, gt[q]] or (sim[q, c] == sim[q, gt[q]] and c != gt[q])
            for c in range(sim.shape[1])
        )
        for q in range(sim.shape[0])
    ]
    assert ranks(sim, gt).tolist() == expected


def test_metrics_on_a_hand_example():
    m = retrieval_metrics(np.array([0, 1, 4, 9, 20]))
    # R@1: {0}; R@5: {0, 1, 4}; R@10: {0, 1, 4, 9}; median 4 -> 5; mean 34/5 = 6.8 -> 7.8.
    assert m == {"R@1": 20.0, "R@5": 60.0, "R@10": 80.0, "MdR": 5.0, "MnR": 7.8}
    assert retrieval_metrics(np.array([0, 3]))["MdR"] == 2.5  # even count: mean of the middle two, + 1


def test_text_to_video_ranks_each_caption_among_all_videos():
    # t0: 0.5 vs 0.4, 0.2 -> 0; t1: 0.6 under 0.9 -> 1; t2: 0.4 under 0.7 -> 1; t3: 0.3 under 0.8 -> 1;
    # t4: 0.9 tied with video 0 -> 1; t5: 0.9 alone on top -> 0.
    assert text_to_video(MULTI, TEXT_VIDEO).tolist() == [0, 1, 1, 1, 1, 0]


def test_video_to_text_best_caption_among_all_captions():
    # Video 0: best own 0.6 (t1); other captions >= 0.6: t2, t3, t4, t5 (tie) -> 4.
    # Video 1: own 0.4 (t2); t0 ties -> 1. Video 2: best own 0.9 (t4, t5 tie among themselves: not counted);
    # t1 from video 0 ties -> 1.
    assert video_to_text(MULTI, TEXT_VIDEO).tolist() == [4, 1, 1]


def test_video_to_text_clip4clip_max_over_each_videos_captions():
    # Video 0 sees video 1 at 0.7 and video 2 at max(0.8, 0.9, 0.6) = 0.9, both above 0.6 -> 2.
    # Video 1: video 0 at max(0.4, 0.1) = 0.4 ties -> 1. Video 2: video 0 at 0.9 ties -> 1.
    assert video_to_text(MULTI, TEXT_VIDEO, among="videos").tolist() == [2, 1, 1]


def test_video_to_text_conventions_agree_with_one_caption_per_video():
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 4, size=(12, 12)).astype(np.float32)
    diag = np.arange(12)
    expected = ranks(sim.T, diag)
    assert video_to_text(sim, diag).tolist() == expected.tolist()
    assert video_to_text(sim, diag, among="videos").tolist() == expected.tolist()


def test_similarity_is_the_exactly_summed_cosine():
    rng = np.random.default_rng(0)
    text, video = rng.standard_normal((9, 33)), rng.standard_normal((7, 33))
    sim = similarity(text, video)
    t = text.astype(np.float32).astype(np.float64)
    v = video.astype(np.float32).astype(np.float64)
    t = (t / np.sqrt(np.sum(t * t, axis=1))[:, None]).astype(np.float32).astype(np.float64)
    v = (v / np.sqrt(np.sum(v * v, axis=1))[:, None]).astype(np.float32).astype(np.float64)
    exact = [[np.float32(math.fsum((t[i] * v[j]).tolist())) for j in range(7)] for i in range(9)]
    assert sim.dtype == np.float32
    np.testing.assert_array_equal(sim, np.array(exact, dtype=np.float32))


def test_batch_size_does_not_change_similarity_or_metrics():
    rng = np.random.default_rng(1)
    text = rng.standard_normal((600, 64)).astype(np.float32)
    video = rng.standard_normal((300, 64)).astype(np.float32)
    text_video = np.arange(600) % 300
    whole = similarity(text, video)
    for batch in (1, 7, 256, 599):
        pieces = [similarity(text[i : i + batch], video) for i in range(0, 600, batch)]
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
    columns = np.concatenate([similarity(text, video[i : i + 37]) for i in range(0, 300, 37)], axis=1)
    np.testing.assert_array_equal(columns, whole)
    assert retrieval_metrics(text_to_video(columns, text_video)) == retrieval_metrics(
        text_to_video(whole, text_video)
    )


def test_identical_embeddings_give_identical_tied_scores():
    emb = np.tile(np.array([[1.0, 2.0, 3.0]]), (4, 1))
    sim = similarity(emb, emb)
    assert np.unique(sim).size == 1
    assert text_to_video(sim, np.arange(4)).tolist() == [3, 3, 3, 3]  # a constant encoder ranks last


def test_ci_is_reproducible_with_a_seed_and_brackets_the_value():
    rng = np.random.default_rng(2)
    r = rng.integers(0, 30, size=200)
    groups = [f"video{i // 4}" for i in range(200)]
    a = retrieval_metrics_with_ci(r, groups, seed=7, resamples=300)
    b = retrieval_metrics_with_ci(r, groups, seed=7, resamples=300)
    assert a == b
    plain = retrieval_metrics(r)
    for name, metric in a.items():
        assert metric.value == pytest.approx(plain[name])
        assert metric.ci_low <= metric.value <= metric.ci_high
        assert metric.n == 200
    assert a["MdR"].higher_is_better is False and a["R@1"].higher_is_better is True
    assert retrieval_metrics_with_ci(r, groups, seed=8, resamples=300) != a


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ranks(np.array([[0.1, np.nan], [0.2, 0.3]]), np.array([0, 1])), "NaN"),
        (lambda: ranks(np.zeros((2, 3)), np.array([0, 3])), "outside"),
        (lambda: ranks(np.zeros((2, 3)), np.array([0])), "shape"),
        (lambda: video_to_text(np.zeros((2, 3)), np.array([0, 1])), "no"),
        (lambda: video_to_text(MULTI, TEXT_VIDEO, among="texts"), "among"),
        (lambda: similarity(np.array([[np.nan, 1.0]]), np.ones((2, 2))), "NaN"),
        (lambda: similarity(np.ones((2, 3)), np.ones((2, 4))), "width"),
        (lambda: retrieval_metrics(np.array([], dtype=int)), "non-empty"),
    ],
)
def test_refusals(call, message):
    with pytest.raises(UsageError, match=message):
        call()


def _exact_ranks(t, v, tv, among):
    sim = similarity(t, v)
    return text_to_video(sim, tv), video_to_text(sim, tv, among=among)


@pytest.mark.parametrize("case", ["random", "duplicates", "near-ties", "integers", "wide", "all-above"])
def test_ranks_from_embeddings_are_the_ranks_of_the_exact_matrix(case):
    from vfeval.metrics.retrieval import ranks_from_embeddings

    rng = np.random.default_rng(7)
    if case == "random":
        v = rng.standard_normal((300, 64)).astype(np.float32)
        t = rng.standard_normal((700, 64)).astype(np.float32)
        tv = np.r_[np.arange(300), rng.integers(0, 300, 400)]
    elif case == "duplicates":  # exact ties everywhere: identical videos, captions equal to videos
        v = np.repeat(rng.standard_normal((50, 16)).astype(np.float32), 4, axis=0)
        t = v[rng.integers(0, 200, 600)]
        tv = np.r_[np.arange(200), rng.integers(0, 200, 400)]
    elif case == "near-ties":  # every score within a few float32 ulps of every other: all inside the band
        base = rng.standard_normal((1, 128)).astype(np.float32)
        v = (base + 1e-6 * rng.standard_normal((400, 128))).astype(np.float32)
        t = (base + 1e-6 * rng.standard_normal((400, 128))).astype(np.float32)
        tv = np.arange(400)
    elif case == "integers":
        v = rng.integers(-2, 3, (300, 32)).astype(np.float32)
        t = rng.integers(-2, 3, (300, 32)).astype(np.float32)
        tv = np.arange(300)
    elif case == "all-above":  # each caption opposite its video: every count at its largest, in whole tiles
        v = rng.standard_normal((2560, 16)).astype(np.float32)
        tv = np.r_[np.arange(2560), rng.integers(0, 2560, 300)]
        t = -v[tv]
    else:
        v = rng.standard_normal((200, 1024)).astype(np.float32)
        t = (v[np.arange(200)] + 0.5 * rng.standard_normal((200, 1024))).astype(np.float32)
        tv = np.arange(200)
    for among in ("captions", "videos"):
        t2v, v2t = ranks_from_embeddings(t, v, tv, among)
        want_t2v, want_v2t = _exact_ranks(t, v, tv, among)
        np.testing.assert_array_equal(t2v, want_t2v)
        np.testing.assert_array_equal(v2t, want_v2t)
    t2v, none = ranks_from_embeddings(t, v, tv)
    np.testing.assert_array_equal(t2v, _exact_ranks(t, v, tv, "captions")[0])
    assert none is None


def test_the_float32_band_is_rounded_outwards():
    """An entry compared in float32 against the band's edges is classified as exact arithmetic would."""
    from fractions import Fraction

    from vfeval.metrics.retrieval import _band, _float32_bound

    rng = np.random.default_rng(3)
    thresholds = np.r_[rng.uniform(-1, 1, 2000), 0.0, 1.0, -1.0, 1e-30].astype(np.float32)
    delta = _float32_bound(256)
    lo, hi = _band(thresholds, delta)
    assert lo.dtype == hi.dtype == np.float32
    for t, a, b in zip(thresholds.tolist(), lo.tolist(), hi.tolist()):
        assert Fraction(a) <= Fraction(t) - Fraction(delta) and Fraction(b) >= Fraction(t) + Fraction(delta)
        # ... and by no more than one float32 step: the band is as narrow as float32 allows.
        assert np.nextafter(np.float32(a), np.float32(np.inf)) > np.float64(t) - delta
        assert np.nextafter(np.float32(b), np.float32(-np.inf)) < np.float64(t) + delta
