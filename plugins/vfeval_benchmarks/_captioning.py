"""Scoring shared by the captioning tasks (MSR-VTT captioning, YouCook2 clip captioning and summaries).

A sample's target is its list of reference captions and its one answer is the generated text. Scores are
pycocoevalcap's (through ``vfeval.metrics.captioning``), x100, with 95% bootstrap intervals clustered by
``sample.group``.

- micro (the metric names as they are): corpus scores over every scored item, all references used;
- macro (``macro_`` + name), when asked for: the mean over groups (videos) of each group's own corpus score,
  as YouCook2's dense-captioning evaluation averages per video. BLEU-n and CIDEr are recomputed on each
  video's items with pycocoevalcap's scorers on the tokens the micro scores used (CIDEr's IDF then comes
  from that video's references, so a video with one scored clip gets 0, as there); ROUGE-L's corpus score is
  the mean of its items, so a video's is the mean of its clips. METEOR has no macro score: its corpus score
  of a video needs a METEOR run of its own (several seconds of Java per video, about an hour for YouCook2's
  457 validation videos), and the mean of per-clip METEOR would be a different number under the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vfeval.metrics import bootstrap
from vfeval.metrics import captioning as capmetrics
from vfeval.task import Metric, SampleResult, Scores

HEADLINE = "CIDEr"
MACRO_NOTE = (
    "macro_*: mean over videos of each video's own corpus score (BLEU-n and CIDEr recomputed on the video's "
    "clips, ROUGE-L the mean of its clips); METEOR is reported micro only"
)


def predict(result: SampleResult) -> tuple[Any, Any]:
    """The generated text is the prediction; there is no single right answer to mark it against."""
    if result.answers is None:
        return None, None
    return str(result.answers[0]), None


def score(
    results: list[SampleResult], seed: int, metrics: Sequence[str], unit: str, macro: bool = False
) -> Scores:
    ok = [r for r in results if not r.failed]
    n_failed = len(results) - len(ok)
    failed = [f"{n_failed} of {len(results)} {unit}s failed and are not scored"] if n_failed else []
    if len(ok) < 2:
        return Scores(scored=False, headline=HEADLINE,
                      notes=[f"{len(ok)} {unit}s could be scored; CIDEr needs at least 2", *failed])
    references = {r.sample.id: list(r.sample.target) for r in ok}
    predictions = {r.sample.id: str(r.answers[0]) for r in ok}  # type: ignore[index]
    groups = {r.sample.id: r.sample.group or r.sample.id for r in ok}
    out = dict(capmetrics.caption_scores_with_ci(references, predictions, groups, metrics=metrics, seed=seed))
    n_groups = len(set(groups.values()))
    source = "" if n_groups == len(ok) else f" from {n_groups} videos"
    notes = [f"{len(ok)} {unit}s{source} scored against all their references (pycocoevalcap scorers, x100; "
             "95% CIs resample videos)"]
    if macro:
        out.update(_macro(references, predictions, groups, metrics, seed))
        notes.append(MACRO_NOTE)
    return Scores(metrics=out, headline=HEADLINE, notes=[*notes, *failed])


def _macro(references: dict[str, list[str]], predictions: dict[str, str], groups: dict[str, str],
           metrics: Sequence[str], seed: int) -> dict[str, Metric]:
    """``macro_<metric>``: the mean over groups of each group's corpus score, with a CI over groups."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider

    metrics = [name for name in metrics if name != "METEOR"]
    detailed = capmetrics.caption_scores_detailed(references, predictions, metrics=metrics)
    rows_of: dict[str, list[int]] = {}
    for i, item in enumerate(detailed.ids):
        rows_of.setdefault(groups[item], []).append(i)
    per_group: dict[str, list[float]] = {name: [] for name in metrics}
    for rows in rows_of.values():
        gts = {k: detailed.references[i] for k, i in enumerate(rows)}
        res = {k: [detailed.predictions[i]] for k, i in enumerate(rows)}
        bleu: list[float] = []
        if any(name.startswith("BLEU-") for name in metrics):
            scorer = BleuScorer(n=4)
            for k in gts:
                scorer += (res[k][0], gts[k])
            bleu, _ = scorer.compute_score(option="closest", verbose=0)
        for name in metrics:
            if name.startswith("BLEU-"):
                value = 100.0 * float(bleu[int(name[-1]) - 1])
            elif name == "CIDEr":
                value = 100.0 * float(Cider().compute_score(gts, res)[0])
            else:  # ROUGE-L: the corpus score is the mean of the items'
                value = float(np.mean(detailed.per_sample[name][rows]))
            per_group[name].append(value)
    out = {}
    for name, values in per_group.items():
        mean, low, high = bootstrap.mean_ci(values, seed=seed)
        out[f"macro_{name}"] = Metric(mean, low, high, n=len(values))
    return out
