"""Captioning metrics: the same numbers as pycocoevalcap's scorers, without writing into its package, on any
locale, and clear refusals. Java starts are few: METEOR loads its paraphrase table (~7 s) each time."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vfeval.errors import UsageError
from vfeval.metrics.captioning import (
    caption_scores,
    caption_scores_detailed,
    caption_scores_with_ci,
    ptb_tokenize,
)

pycocoevalcap = pytest.importorskip("pycocoevalcap")
# Imported before any snapshot of the package directory, so that a first import's .pyc is not a "write".
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.meteor.meteor import Meteor  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: E402

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")
PACKAGE_DIR = Path(list(pycocoevalcap.__path__)[0])
EN_US = "-Duser.language=en -Duser.country=US"
# METEOR 1.5 parses its statistics with java.util.Scanner, which reads "3.0" as a number only where the
# decimal separator is a point: under these options its EVAL dies with InputMismatchException, and
# pycocoevalcap's wrapper then fails on float(''). JAVA_TOOL_OPTIONS sets them on any machine.
GERMAN_JAVA = "-Duser.language=de -Duser.country=DE"

REFERENCES = {
    "video7010": ["A man is cooking pasta in a kitchen.", "Someone cooks noodles (spaghetti) in a pot!"],
    "video7011": ["A dog runs on the beach.", "The dog is running, happily, by the sea."],
    "video7012": ["A woman sings on a stage.", "a girl is singing a song", "Someone performs music."],
    "video7013": ["Two men play tennis.", "People are playing a tennis match."],
}
PREDICTIONS = {
    "video7010": "a man cooks pasta in a pot",
    "video7011": "a dog is running on the beach",
    "video7012": "a woman is singing a song",
    "video7013": "two people are playing football",
}
ALL = ("BLEU", "METEOR", "ROUGE-L", "CIDEr")


def _snapshot(root: Path) -> dict[str, int]:
    """Every path under root with its mtime: creating or deleting a file changes its directory's mtime."""
    return {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")]}


def _comma_locale() -> str | None:
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout.split()
    except OSError:
        return None
    return next((n for n in names if n.split(".")[0] in ("de_DE", "fr_FR", "nl_NL", "it_IT", "es_ES")), None)


@pytest.fixture(scope="module")
def scored_under_comma_locale():
    """One full run (tokenizer + METEOR) with a comma-decimal Java locale (and a comma-decimal LC_ALL too
    where one is installed), every item in one cluster, and the package directory watched around it."""
    locale_name = _comma_locale()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAVA_TOOL_OPTIONS", GERMAN_JAVA)
        if locale_name:
            mp.setenv("LC_ALL", locale_name)
            mp.setenv("LANG", locale_name)
        before = _snapshot(PACKAGE_DIR)
        one_cluster = {i: "all" for i in REFERENCES}
        result = caption_scores_with_ci(REFERENCES, PREDICTIONS, one_cluster, metrics=ALL, resamples=3)
        after = _snapshot(PACKAGE_DIR)
    return result, before, after


def _tokenized() -> tuple[dict, dict]:
    ids = list(REFERENCES)
    flat = ptb_tokenize([c for i in ids for c in REFERENCES[i]] + [PREDICTIONS[i] for i in ids])
    gts, at = {}, 0
    for i in ids:
        gts[i] = flat[at : at + len(REFERENCES[i])]
        at += len(REFERENCES[i])
    return gts, {i: [flat[at + k]] for k, i in enumerate(ids)}


@needs_java
def test_scores_are_pycocoevalcaps_on_a_comma_decimal_locale(scored_under_comma_locale, monkeypatch):
    result, _, _ = scored_under_comma_locale
    gts, res = _tokenized()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", EN_US)  # pycocoevalcap's own METEOR only works on such a locale
    expected = {f"BLEU-{n}": bleu[n - 1] for n in range(1, 5)}
    expected["METEOR"] = Meteor().compute_score(gts, res)[0]
    expected["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert {name: m.value for name, m in result.items()} == {k: 100.0 * v for k, v in expected.items()}
    assert 0.0 < result["METEOR"].value < 100.0


@needs_java
def test_never_writes_into_the_package_directory(scored_under_comma_locale):
    _, before, after = scored_under_comma_locale
    assert after == before


@needs_java
def test_one_cluster_makes_every_resample_the_full_corpus(scored_under_comma_locale):
    # Each resample recomputes the corpus score (BLEU, METEOR) or the mean (ROUGE-L, CIDEr) on the same
    # item set, so the interval collapses onto the value: the recomputation agrees with the scorer.
    result, _, _ = scored_under_comma_locale
    for name, metric in result.items():
        assert metric.ci_low == pytest.approx(metric.value, rel=1e-12, abs=1e-12), name
        assert metric.ci_high == pytest.approx(metric.value, rel=1e-12, abs=1e-12), name
        assert metric.n == 4


@needs_java
def test_tokenization_is_pycocoevalcaps():
    captions = ["A man is cooking, pasta.", 'Someone (x) {y} it\'s "quoted" -- Done!', "", "Café. Naïve?"]
    ours = ptb_tokenize(captions)
    assert ours == [
        "a man is cooking pasta",
        "someone -lrb- x -rrb- -lcb- y -rcb- it 's quoted done",
        "",
        "café naïve",
    ]
    if os.access(PACKAGE_DIR / "tokenizer", os.W_OK):  # their tokenizer writes a temp file next to its jar
        theirs = PTBTokenizer().tokenize({k: [{"caption": c}] for k, c in enumerate(captions)})
        assert ours == [theirs[k][0] for k in range(len(captions))]


@needs_java
def test_line_breaks_inside_a_caption_do_not_shift_the_others():
    assert ptb_tokenize(["a man\ncooks", "a dog\r\nruns\u2028fast", "the end"]) == [
        "a man cooks",
        "a dog runs fast",
        "the end",
    ]


@needs_java
def test_per_sample_scores_and_bleu3_are_pycocoevalcaps():
    d = caption_scores_detailed(REFERENCES, PREDICTIONS, metrics=("BLEU-3", "ROUGE-L", "CIDEr"))
    gts, res = _tokenized()
    assert d.ids == list(REFERENCES) and d.references == list(gts.values())
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    assert d.corpus["BLEU-3"] == 100.0 * bleu[2]
    np.testing.assert_array_equal(d.per_sample["BLEU-3"], 100.0 * np.array(bleu_each[2]))
    np.testing.assert_array_equal(d.per_sample["ROUGE-L"], 100.0 * Rouge().compute_score(gts, res)[1])
    cider, cider_each = Cider().compute_score(gts, res)
    np.testing.assert_array_equal(d.per_sample["CIDEr"], 100.0 * cider_each)
    assert d.per_sample["CIDEr"].mean() == pytest.approx(d.corpus["CIDEr"])  # corpus IDF: the mean is CIDEr


@needs_java
def test_ci_is_reproducible_with_a_seed():
    kwargs = dict(metrics=("BLEU-4", "ROUGE-L", "CIDEr"), seed=3, resamples=40)
    a = caption_scores_with_ci(REFERENCES, PREDICTIONS, **kwargs)
    b = caption_scores_with_ci(REFERENCES, PREDICTIONS, **kwargs)
    assert a == b
    for m in a.values():
        assert m.ci_low <= m.ci_high


@pytest.mark.parametrize(
    ("references", "predictions", "kwargs", "message"),
    [
        ({}, {}, {}, "at least one item"),
        ({"a": ["x"], "b": ["y"]}, {"a": "x", "c": "z"}, {}, r"1 ids have no prediction \('b'\).*'c'"),
        ({"a": [], "b": ["y"]}, {"a": "x", "b": "y"}, {}, r"references\['a'\] is an empty list"),
        ({"a": "x y", "b": ["y"]}, {"a": "x", "b": "y"}, {}, "must be a list of strings"),
        ({"a": ["x"], "b": ["y"]}, {"a": "x", "b": 3}, {}, r"predictions\['b'\] must be a string, got int"),
        ({"a": ["x"]}, {"a": "x"}, {"metrics": ("CIDEr",)}, "at least 2 items"),
        ({"a": ["x"]}, {"a": "x"}, {"metrics": ("Cider",)}, "did you mean: CIDEr"),
        ({"a": ["x"]}, {"a": "x"}, {"metrics": ("SPICE",)}, "SPICE is not supported"),
        ({"a": ["x"]}, {"a": "x"}, {"bleu_n": 5}, "bleu_n"),
    ],
)
def test_refusals(references, predictions, kwargs, message):
    with pytest.raises(UsageError, match=message):
        caption_scores(references, predictions, **kwargs)
