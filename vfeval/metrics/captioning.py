"""Captioning metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, computed by pycocoevalcap's own scorers.

Papers report these through pycocoevalcap, so vfeval uses its scorers and its Java jars, only run safely:
- the PTB tokenizer jar is run with its temporary file and working directory in a fresh temp directory
  (pycocoevalcap writes it into its package directory, which may be read-only);
- both jars get ``-Duser.language=en -Duser.country=US`` so that numbers are printed and parsed with a
  decimal point whatever the machine's locale (METEOR otherwise dies on comma-decimal locales), and
  ``-Dfile.encoding=UTF-8``;
- SPICE is never built (it downloads Stanford CoreNLP on first use).

All scores are pycocoevalcap's values in [0, 1] multiplied by 100, as papers print them (CIDEr 0.501 -> 50.1).
CIDEr-D takes its IDF from the references of the evaluated set, so it is only meaningful for a whole
corpus: never average CIDEr computed item by item, and a one-item corpus always scores 0 (refused here).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError, suggest
from vfeval.metrics.bootstrap import cluster_bootstrap, mean_ci
from vfeval.task import Metric

VERSION = "1"
BLEU_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
METRIC_NAMES = (*BLEU_NAMES, "METEOR", "ROUGE-L", "CIDEr")
DEFAULT_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
DEFAULT_RESAMPLES = 200
JAVA_FLAGS = ("-Duser.language=en", "-Duser.country=US", "-Dfile.encoding=UTF-8")
_INSTALL_HINT = "captioning metrics need pycocoevalcap: pip install 'vfeval[captioning]'"


@dataclass
class CaptionScores:
    """Scores of one corpus. All values x100; per-sample rows follow ``ids``."""

    ids: list[Hashable]
    corpus: dict[str, float]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    """[N] per item, for every metric (CIDEr's use the corpus IDF, so their mean is the corpus CIDEr;
    METEOR's and BLEU's means are not their corpus scores, which pool statistics over the corpus)."""
    references: list[list[str]] = field(default_factory=list)
    """Tokenized references, as the scorers saw them."""
    predictions: list[str] = field(default_factory=list)
    """Tokenized predictions, as the scorers saw them."""


# ---------------------------------------------------------------- inputs


def _resolve_metrics(metrics: Sequence[str], bleu_n: int) -> list[str]:
    """Validated metric names in canonical order; "BLEU" stands for BLEU-1..BLEU-{bleu_n}."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if not 1 <= bleu_n <= 4:
        raise UsageError(f"bleu_n must be between 1 and 4, got {bleu_n}")
    wanted: set[str] = set()
    for name in metrics:
        if name == "BLEU":
            wanted.update(BLEU_NAMES[:bleu_n])
        elif name == "SPICE":
            raise UsageError("SPICE is not supported: it downloads Stanford CoreNLP on first use")
        elif name in METRIC_NAMES:
            wanted.add(name)
        else:
            same_letters = [m for m in (*METRIC_NAMES, "BLEU") if m.upper() == str(name).upper()]
            hint = (
                f" (did you mean: {same_letters[0]}?)"
                if same_letters
                else suggest(name, [*METRIC_NAMES, "BLEU"])
            )
            raise UsageError(f"unknown captioning metric {name!r}{hint}")
    if not wanted:
        raise UsageError("no captioning metric asked for")
    return [m for m in METRIC_NAMES if m in wanted]


def _few(ids: Sequence[Hashable]) -> str:
    return ", ".join(repr(i) for i in list(ids)[:3]) + (", ..." if len(ids) > 3 else "")


def _validate(
    references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str]
) -> tuple[list[Hashable], list[list[str]], list[str]]:
    """(ids in the references' order, references per id, prediction per id), or a UsageError."""
    if not references:
        raise UsageError("captioning metrics need at least one item; the references are empty")
    ids = list(references)
    missing = [i for i in ids if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ids have no prediction ({_few(missing)})")
        if extra:
            parts.append(f"{len(extra)} predictions have no reference ({_few(extra)})")
        raise UsageError("predictions and references differ: " + "; ".join(parts))
    refs: list[list[str]] = []
    for i in ids:
        r = references[i]
        if isinstance(r, str) or not isinstance(r, Sequence):
            raise UsageError(f"references[{i!r}] must be a list of strings, got {type(r).__name__}")
        if len(r) == 0:
            raise UsageError(f"references[{i!r}] is an empty list; every item needs a reference")
        if not all(isinstance(s, str) for s in r):
            raise UsageError(f"references[{i!r}] holds a non-string caption")
        refs.append(list(r))
    preds = []
    for i in ids:
        p = predictions[i]
        if not isinstance(p, str):
            raise UsageError(f"predictions[{i!r}] must be a string, got {type(p).__name__}")
        preds.append(p)
    return ids, refs, preds


# ---------------------------------------------------------------- Java


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise UsageError("METEOR and the PTB tokenizer need Java on PATH (java was not found)")
    return java


def _java_error(stderr: str) -> str:
    """The line of a Java stderr that says what went wrong (not the JVM's notices, not stack frames)."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith(("at ", "Picked up ", "..."))]
    return useful[-1] if useful else "no message on stderr"


def _java_env() -> dict[str, str]:
    env = dict(os.environ)
    # _JAVA_OPTIONS beats the command line; our flags go last in it so that they win inside it too.
    if env.get("_JAVA_OPTIONS"):
        env["_JAVA_OPTIONS"] = env["_JAVA_OPTIONS"] + " " + " ".join(JAVA_FLAGS)
    return env


def _package_file(module: str, constant: str) -> tuple[Path, Any]:
    """(absolute path of the jar named by module.constant, the module), from the installed pycocoevalcap."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UsageError(_INSTALL_HINT) from e
    return Path(mod.__file__).resolve().parent / getattr(mod, constant), mod


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's tokenization of each caption: PTB tokens, lower case, punctuation tokens dropped.

    captions: [N] strings -> [N] strings of space-separated tokens. One Java run for all captions. Any
    whitespace run (newlines included, which would split a caption in two) becomes one space first.
    """
    jar, ptb = _package_file("pycocoevalcap.tokenizer.ptbtokenizer", "STANFORD_CORENLP_3_4_1_JAR")
    if not captions:
        return []
    lines = [" ".join(c.split()) for c in captions]
    with tempfile.TemporaryDirectory(prefix="vfeval-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = [_java(), *JAVA_FLAGS, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        done = subprocess.run(
            [*cmd, "-preserveLines", "-lowerCase", str(src)],
            cwd=tmp,
            env=_java_env(),
            capture_output=True,
            check=False,
        )
    out = done.stdout.decode("utf-8").split("\n")
    if done.returncode != 0 or len(out) != len(lines) + 1 or out[-1] != "":
        raise RuntimeError(
            f"the PTB tokenizer gave {len(out) - 1} lines for {len(lines)} captions: "
            + _java_error(done.stderr.decode("utf-8", "replace"))
        )
    # The same punctuation list as pycocoevalcap (it lists "-LRB-" etc. in upper case, so the lower-cased
    # "-lrb-" tokens stay, exactly as in every published score).
    punctuation = set(ptb.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in out[:-1]]


class _Meteor:
    """A METEOR 1.5 process (the jar pycocoevalcap ships, its flags), spoken to over its stdio protocol:
    ``SCORE ||| ref1 ||| ... ||| hyp`` answers one line of statistics; ``EVAL ||| stats ||| stats ...``
    answers one score per statistics line, then the corpus score."""

    def __init__(self, workdir: str) -> None:
        jar, _ = _package_file("pycocoevalcap.meteor.meteor", "METEOR_JAR")
        self._stderr = open(Path(workdir) / "meteor.stderr", "wb")  # a file: a full stderr pipe would hang it
        cmd = [_java(), *JAVA_FLAGS, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=_java_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._stderr_path = Path(workdir) / "meteor.stderr"

    def _ask(self, line: str, n_answers: int) -> list[str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
            answers = [self._proc.stdout.readline().decode("utf-8").strip() for _ in range(n_answers)]
        except BrokenPipeError:  # the JVM is gone (could not start, or died)
            answers = [""]
        if "" in answers:
            self._stderr.flush()
            raise RuntimeError(
                "METEOR stopped answering: " + _java_error(self._stderr_path.read_text("utf-8", "replace"))
            )
        return answers

    def stats(self, prediction: str, references: list[str]) -> str:
        """The statistics line of one item (tokenized strings; '|||' is the field separator, so dropped)."""
        hypothesis = prediction.replace("|||", "").replace("  ", " ")  # as pycocoevalcap cleans it
        fields = ["SCORE", *(r.replace("|||", "") for r in references), hypothesis]
        return self._ask(" ||| ".join(fields), 1)[0]

    def evaluate(self, stats: list[str]) -> tuple[float, list[float]]:
        """(corpus score, per-item scores) of statistics lines, in [0, 1]."""
        answers = self._ask(" ||| ".join(["EVAL", *stats]), len(stats) + 1)
        return float(answers[-1]), [float(a) for a in answers[:-1]]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()


@contextmanager
def _meteor_session(needed: bool) -> Iterator[_Meteor | None]:
    if not needed:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vfeval-meteor-") as tmp:
        meteor = _Meteor(tmp)
        try:
            yield meteor
        finally:
            meteor.close()


# ---------------------------------------------------------------- scoring


@dataclass
class _Scored:
    scores: CaptionScores
    bleu_cooked: tuple[list[Any], list[Any]] | None = None
    meteor_stats: list[str] = field(default_factory=list)


def _keyed(refs: list[list[str]], preds: list[str], rows: Sequence[int]) -> tuple[dict, dict]:
    """pycocoevalcap's inputs for the given rows, keyed by position (rows may repeat in a resample)."""
    return {k: refs[r] for k, r in enumerate(rows)}, {k: [preds[r]] for k, r in enumerate(rows)}


def _score(
    ids: list[Hashable], refs: list[list[str]], preds: list[str], names: list[str], meteor: _Meteor | None
) -> _Scored:
    """Scores of tokenized references [N][*] and predictions [N], in the order of ids."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _keyed(refs, preds, range(len(preds)))
    corpus: dict[str, float] = {}
    per_sample: dict[str, np.ndarray] = {}
    out = _Scored(CaptionScores(ids, corpus, per_sample, refs, preds))
    bleu_orders = [int(m[-1]) for m in names if m.startswith("BLEU-")]
    if bleu_orders:
        # BleuScorer is what Bleu.compute_score runs (option "closest"); kept cooked for the bootstrap.
        scorer = BleuScorer(n=max(bleu_orders))
        for k in gts:
            scorer += (res[k][0], gts[k])
        out.bleu_cooked = (list(scorer.crefs), list(scorer.ctest))
        score, scores = scorer.compute_score(option="closest", verbose=0)
        for n in bleu_orders:
            corpus[f"BLEU-{n}"] = 100.0 * score[n - 1]
            per_sample[f"BLEU-{n}"] = 100.0 * np.asarray(scores[n - 1], dtype=np.float64)
    if "METEOR" in names:
        assert meteor is not None
        out.meteor_stats = [meteor.stats(preds[i], refs[i]) for i in range(len(preds))]
        score, scores = meteor.evaluate(out.meteor_stats)
        corpus["METEOR"], per_sample["METEOR"] = 100.0 * score, 100.0 * np.asarray(scores)
    if "ROUGE-L" in names:
        score, scores = Rouge().compute_score(gts, res)
        corpus["ROUGE-L"], per_sample["ROUGE-L"] = 100.0 * float(score), 100.0 * np.asarray(scores, float)
    if "CIDEr" in names:
        score, scores = Cider().compute_score(gts, res)
        corpus["CIDEr"], per_sample["CIDEr"] = 100.0 * float(score), 100.0 * np.asarray(scores, float)
    return out


def _prepare(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str],
    bleu_n: int,
) -> tuple[list[Hashable], list[str], list[list[str]], list[str]]:
    """(ids, metric names, tokenized references, tokenized predictions) of validated inputs."""
    names = _resolve_metrics(metrics, bleu_n)
    ids, refs, preds = _validate(references, predictions)
    if "CIDEr" in names and len(ids) < 2:
        raise UsageError(
            "CIDEr needs at least 2 items: its IDF comes from the evaluated set, so one item always scores 0"
        )
    tokens = ptb_tokenize([c for r in refs for c in r] + preds)
    tok_refs, at = [], 0
    for r in refs:
        tok_refs.append(tokens[at : at + len(r)])
        at += len(r)
    return ids, names, tok_refs, tokens[at:]


def caption_scores_detailed(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    bleu_n: int = 4,
) -> CaptionScores:
    """Corpus and per-sample scores (x100) of predictions against references; see ``caption_scores``."""
    ids, names, refs, preds = _prepare(references, predictions, metrics, bleu_n)
    with _meteor_session("METEOR" in names) as meteor:
        return _score(ids, refs, preds, names, meteor).scores


def caption_scores(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    bleu_n: int = 4,
) -> dict[str, float]:
    """Corpus scores, x100, of ``{id: prediction}`` against ``{id: [reference, ...]}``.

    metrics: names from METRIC_NAMES; "BLEU" stands for BLEU-1..BLEU-{bleu_n}. Both inputs must have the
    same ids; all references are used (never truncated). Tokenized once with the PTB tokenizer (Java);
    METEOR starts one Java process (a few seconds: it loads its paraphrase table).
    """
    return caption_scores_detailed(references, predictions, metrics, bleu_n).corpus


def caption_scores_with_ci(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    groups: Mapping[Hashable, str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    bleu_n: int = 4,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Metric]:
    """Corpus scores (x100) with 95% bootstrap intervals, resampling items clustered by ``groups[id]``.

    How each interval is drawn, on the same resampled item sets (one seed):
    - BLEU-n and METEOR: the corpus score recomputed on each resample from per-item statistics counted
      once: by pycocoevalcap's BleuScorer, and by METEOR's own EVAL of the summed statistics (METEOR's
      corpus score is defined on their sum), in the same Java process.
    - ROUGE-L: the corpus score is the mean of per-item scores, so their clustered mean is resampled.
    - CIDEr: the mean of per-item CIDEr with the IDF held at the full set's. Recomputing the IDF on each
      resample costs a full CIDEr run (about 8 s for MSR-VTT's 2990 x 20 references) per resample; the
      IDF of thousands of items barely moves under resampling, so this interval is a little narrow only
      for small corpora.
    """
    ids, names, refs, preds = _prepare(references, predictions, metrics, bleu_n)
    cluster = None
    if groups is not None:
        lacking = [i for i in ids if i not in groups]
        if lacking:
            raise UsageError(f"groups has no entry for {len(lacking)} ids ({_few(lacking)})")
        cluster = [str(groups[i]) for i in ids]
    n = len(ids)
    out: dict[str, Metric] = {}
    with _meteor_session("METEOR" in names) as meteor:
        scored = _score(ids, refs, preds, names, meteor)
        corpus, per_sample = scored.scores.corpus, scored.scores.per_sample
        bleu = _bleu_resampler(scored.bleu_cooked) if scored.bleu_cooked else None
        for name in names:
            if name.startswith("BLEU-"):
                order = int(name[-1])
                low, high = cluster_bootstrap(
                    lambda rows, k=order: bleu(rows)[k - 1], n, cluster, resamples, seed
                )
            elif name == "METEOR":
                low, high = cluster_bootstrap(
                    _meteor_resampler(meteor, scored.meteor_stats), n, cluster, resamples, seed
                )
            else:
                _, low, high = mean_ci(per_sample[name], cluster, resamples=resamples, seed=seed)
            out[name] = Metric(corpus[name], low, high, n=n)
    return out


def _bleu_resampler(cooked: tuple[list[Any], list[Any]]) -> Callable[[np.ndarray], tuple[float, ...]]:
    """rows -> [BLEU-1..n] x100 of those rows, from statistics counted once, memoised so that the BLEU
    orders (which share their resamples through the seed) cost one computation per resample."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    crefs, ctest = cooked
    order = len(ctest[0]["guess"])

    @functools.cache
    def by_bytes(key: bytes) -> tuple[float, ...]:
        rows = np.frombuffer(key, dtype=np.intp)
        scorer = BleuScorer(n=order)
        scorer.crefs = [crefs[r] for r in rows]
        scorer.ctest = [ctest[r] for r in rows]
        score, _ = scorer.compute_score(option="closest", verbose=0)
        return tuple(100.0 * s for s in score)

    return lambda rows: by_bytes(np.asarray(rows, dtype=np.intp).tobytes())


def _meteor_resampler(meteor: _Meteor | None, stats: list[str]) -> Callable[[np.ndarray], float]:
    """rows -> corpus METEOR x100 of those rows. METEOR's corpus score is its formula applied to the sum
    of the per-item statistics, so one EVAL of the summed line gives it (equal to EVAL of all the lines)."""
    assert meteor is not None
    table = np.array([line.split() for line in stats], dtype=np.float64)  # [N, fields]

    def corpus(rows: np.ndarray) -> float:
        summed = table[rows].sum(axis=0)
        return 100.0 * meteor.evaluate([" ".join(np.format_float_positional(x) for x in summed)])[0]

    return corpus
