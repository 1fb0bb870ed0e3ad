"""Scoring shared by the text-video retrieval tasks (MSR-VTT, YouCook2).

A sample is one caption; its two answers are the embedding of its video window (``video_embedding``) and of
its caption (``text_embedding``). The candidates are the distinct windows of the samples that did not fail:
a video that could not be decoded leaves the candidate set along with its captions, and the result says how
many captions and candidates were evaluated.

Ranks follow ``vfeval.metrics.retrieval``: texts as rows, 0-based rank of the correct item, ties counted
against the model (pessimistic), R@K in percent, MdR and MnR 1-based.
"""

from __future__ import annotations

import json

import numpy as np

from vfeval.metrics import retrieval
from vfeval.requests import Request, VideoWindow, text_embedding, video_embedding
from vfeval.task import Metric, Sample, SampleResult, Scores

HEADLINE = "t2v_R@1"
VIDEO_TO_TEXT = ("captions", "videos")
V2T_NOTES = {
    "captions": "video-to-text: each video ranks all captions; its rank is the best rank of any of its own "
    "captions (captions of other videos scoring the same count against it)",
    "videos": "video-to-text: each candidate video scores the max similarity over its captions (CLIP4Clip's "
    "multi-sentence convention) and the video is ranked among the videos",
}


def requests(sample: Sample) -> list[Request]:
    """``[video_embedding(window), text_embedding(caption)]``; the runner's dedupe encodes each window once."""
    assert sample.video is not None
    return [video_embedding(sample.video), text_embedding(sample.data["caption"])]


def _window_key(window: VideoWindow) -> str:
    return json.dumps(window.identity(), sort_keys=True)


def score(results: list[SampleResult], seed: int, unit: str, v2t: str | None = None) -> Scores:
    """Text-to-video (and, if ``v2t`` names a convention, video-to-text) metrics with 95% CIs.

    Text-to-video CIs resample the queries clustered by ``sample.group`` (the source video), video-to-text
    CIs resample the videos. Sets ``prediction`` (the caption's 0-based text-to-video rank) and ``correct``
    (rank 0) of each scored sample, so that samples.jsonl shows them.
    """
    ok = [r for r in results if not r.failed]
    n_failed = len(results) - len(ok)
    failed = [f"{n_failed} of {len(results)} captions failed (their videos could not be read) and are "
              "not scored; their videos are not candidates"] if n_failed else []
    if not ok:
        return Scores(scored=False, headline=HEADLINE, notes=["no sample could be scored", *failed])

    columns: dict[str, int] = {}
    video_rows: list[np.ndarray] = []
    column = np.empty(len(ok), dtype=np.intp)
    for i, r in enumerate(ok):
        assert r.answers is not None and r.sample.video is not None
        key = _window_key(r.sample.video)
        if key not in columns:
            columns[key] = len(video_rows)
            video_rows.append(np.asarray(r.answers[0], dtype=np.float32))
        column[i] = columns[key]
    texts = np.stack([np.asarray(r.answers[1], dtype=np.float32) for r in ok])  # type: ignore[index]
    # The ranks of the exact similarity matrix [captions, candidates], at about a float32 matmul's cost.
    t2v, v2t_ranks = retrieval.ranks_from_embeddings(texts, np.stack(video_rows), column, v2t)
    groups = [r.sample.group or r.sample.id for r in ok]
    metrics: dict[str, Metric] = {
        f"t2v_{name}": m for name, m in retrieval.retrieval_metrics_with_ci(t2v, groups, seed=seed).items()
    }
    n_sources = len(set(groups))
    source = "" if n_sources == len(video_rows) else f" from {n_sources} videos"
    notes = [
        f"{len(ok)} captions scored against {len(video_rows)} candidate {unit}s{source}; 0-based ranks with "
        "ties counted against the model; R@K in percent, MdR and MnR 1-based",
    ]
    if v2t is not None:
        metrics.update(
            {f"v2t_{name}": m for name, m in retrieval.retrieval_metrics_with_ci(v2t_ranks, None, seed=seed).items()}
        )
        notes.append(V2T_NOTES[v2t])
    for r, rank in zip(ok, t2v):
        r.prediction, r.correct = {"t2v_rank": int(rank)}, bool(rank == 0)
    return Scores(metrics=metrics, headline=HEADLINE, notes=[*notes, *failed])
