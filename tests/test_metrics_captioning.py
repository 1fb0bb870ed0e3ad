"""Captioning metrics: the same numbers as pycocoevalcap's scorers, without writing into its package, on any
locale, and clear refusals. Java starts are few: METEOR loads its paraphrase table (~7 s) each time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
from vfeval.task import Metric

pycocoevalcap = pytest.importorskip("pycocoevalcap")
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
    return {str(p): p.lstat().st_mtime_ns for p in [root, *root.rglob("*")]}


def _comma_locale() -> str | None:
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout.split()
    except OSError:
        return None
    return next((n for n in names if n.split(".")[0] in ("de_DE", "fr_FR", "nl_NL", "it_IT", "es_ES")), None)


def _private_read_only_copy(site: Path) -> Path:
    """site/pycocoevalcap: the package's Python files copied, its jars and data linked, all made read-only.

    A private copy, so that no other process touching the installed package can disturb the check. Root
    ignores permission bits, which is why the check compares snapshots rather than expecting an error.
    """
    big = 1 << 20

    def copy(src: str, dst: str) -> None:
        if os.path.getsize(src) > big:
            os.symlink(src, dst)
        else:
            shutil.copy2(src, dst)

    copy_dir = site / "pycocoevalcap"
    shutil.copytree(PACKAGE_DIR, copy_dir, copy_function=copy)
    for p in [*copy_dir.rglob("*"), copy_dir]:
        if not p.is_symlink():  # chmod would follow a link to the installed file
            p.chmod(p.stat().st_mode & ~0o222)
    return copy_dir


_RUN_IN_COPY = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pycocoevalcap.meteor.meteor, pycocoevalcap.tokenizer.ptbtokenizer as ptb
assert ptb.__file__.startswith(sys.argv[1]), ptb.__file__
from vfeval.metrics.captioning import caption_scores_with_ci
refs, preds, metrics = json.load(sys.stdin)
one_cluster = {i: "all" for i in refs}
result = caption_scores_with_ci(refs, preds, one_cluster, metrics=metrics, resamples=3)
print(json.dumps({k: [m.value, m.ci_low, m.ci_high, m.n] for k, m in result.items()}))
"""


@pytest.fixture(scope="module")
def scored_in_a_read_only_copy(tmp_path_factory):
    """One full run (tokenizer + METEOR, every item in one cluster) in a subprocess that imports a private
    read-only copy of pycocoevalcap, with a comma-decimal Java locale (and a comma-decimal LC_ALL too where
    one is installed). Returns ({name: Metric}, snapshot of the copy before, after)."""
    site = tmp_path_factory.mktemp("site")
    copy_dir = _private_read_only_copy(site)
    env = dict(os.environ, JAVA_TOOL_OPTIONS=GERMAN_JAVA, PYTHONDONTWRITEBYTECODE="1")
    if locale_name := _comma_locale():
        env.update(LC_ALL=locale_name, LANG=locale_name)
    before = _snapshot(copy_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUN_IN_COPY, str(site)],
            input=json.dumps([REFERENCES, PREDICTIONS, ALL]),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        after = _snapshot(copy_dir)
    finally:
        for p in [copy_dir, *copy_dir.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)  # let tmp_path clean up
    assert done.returncode == 0, done.stderr[-2000:]
    result = {k: Metric(v, lo, hi, n) for k, (v, lo, hi, n) in json.loads(done.stdout).items()}
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
def test_scores_are_pycocoevalcaps_on_a_comma_decimal_locale(scored_in_a_read_only_copy, monkeypatch):
    result, _, _ = scored_in_a_read_only_copy
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
def test_never_writes_into_the_package_directory(scored_in_a_read_only_copy):
    _, before, after = scored_in_a_read_only_copy
    assert len(before) > 20 and after == before


@needs_java
def test_one_cluster_makes_every_resample_the_full_corpus(scored_in_a_read_only_copy):
    # Each resample recomputes the corpus score (BLEU, METEOR) or the mean (ROUGE-L, CIDEr) on the same
    # item set, so the interval collapses onto the value: the recomputation agrees with the scorer.
    result, _, _ = scored_in_a_read_only_copy
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
