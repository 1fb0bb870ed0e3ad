"""Prompts for a language model that reads a video's segment captions, and what it answers back.

The multiple-choice prompt has LLoVi's structure for EgoSchema: the captions in temporal order, each with
its time span in seconds from the start of the window, then the question, then the five options labelled
A-E (or 0-4), then an instruction to answer with the label. Every piece is a template in the config, so a
different wording is a recorded option of the pipeline, never an edit of the code.

Fitting a long video into the model's context (``fit_captions``): when the caption lines do not fit in the
token budget, a uniform subsample of them is kept, in temporal order: ``n`` captions at indices
``floor(i * N / n)`` for ``i < n``, with ``n`` the largest count that fits. The first caption is always
kept; a video of 180 one-second captions read by a model with room for 60 keeps every third. Nothing
else (question, options, instruction) is ever cut: if even one caption does not fit, that is an error.

Parsing a generated answer (``parse_choice``): the first label that stands alone (``B``, ``(B)``, ``B.``,
``B)``, ``Option B``, ``Answer: B``), case-sensitive for letters; text with no such label is unparseable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vfeval.errors import UsageError

LABEL_SETS = {"letters": "ABCDE", "digits": "01234"}

CHOICE_TEMPLATE = (
    "Below are descriptions of consecutive parts of a video, each with its time span in seconds.\n"
    "{captions}\n"
    "Using these descriptions, answer the question about the video.\n"
    "Question: {question}\n"
    "Options:\n"
    "{options}\n"
    "Reply with the letter of the correct option only.\n"
    "Answer:"
)
"""The default multiple-choice prompt (placeholders ``{captions}``, ``{question}``, ``{options}``)."""

GENERATE_TEMPLATE = (
    "Below are descriptions of consecutive parts of a video, each with its time span in seconds.\n"
    "{captions}\n"
    "{prompt}\n"
)
"""The default prompt of ``generate`` requests (placeholders ``{captions}`` and the task's ``{prompt}``)."""

CAPTION_LINE = "[{start:.0f}s-{end:.0f}s] {caption}"
OPTION_LINE = "{label}. {option}"
CONTINUATION = " {label}. {option}"
"""What is scored after the prompt in ``loglikelihood`` mode (placeholders ``{label}``, ``{option}``)."""


@dataclass(frozen=True)
class Timed:
    """A caption and its span in seconds from the start of the window."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Templates:
    choice: str = CHOICE_TEMPLATE
    generate: str = GENERATE_TEMPLATE
    caption_line: str = CAPTION_LINE
    option_line: str = OPTION_LINE
    continuation: str = CONTINUATION
    labels: str = "letters"

    def label_chars(self, k: int) -> str:
        chars = LABEL_SETS.get(self.labels, self.labels)
        if len(chars) < k:
            raise UsageError(f"llm: labels {self.labels!r} name {len(chars)} options but a question has {k}")
        return chars[:k]

    def check(self) -> None:
        """Refuse templates that miss a placeholder (a typo would silently drop the question or captions)."""
        if self.labels not in LABEL_SETS and len(set(self.labels)) != len(self.labels):
            raise UsageError(f"config: 'pipeline.aggregator.labels': {self.labels!r}; use letters, digits or "
                             "distinct characters")
        needs = {"choice": ("{captions}", "{question}", "{options}"), "generate": ("{captions}", "{prompt}"),
                 "caption_line": ("{caption}",), "option_line": ("{label}", "{option}"),
                 "continuation": ("{label}",)}
        for key, fields in needs.items():
            value = getattr(self, key)
            missing = [f for f in fields if f not in value]
            if key == "continuation" and "{option}" in value:
                missing = []
            if missing:
                name = {"choice": "template", "generate": "generate_template"}.get(key, key)
                raise UsageError(f"config: 'pipeline.aggregator.{name}' lacks {', '.join(missing)}")

    def caption_lines(self, captions: Sequence[Timed]) -> list[str]:
        return [self.caption_line.format(start=c.start, end=c.end, caption=c.text) for c in captions]

    def options_block(self, options: Sequence[str]) -> str:
        labels = self.label_chars(len(options))
        return "\n".join(self.option_line.format(label=label, option=o) for label, o in zip(labels, options))

    def continuations(self, options: Sequence[str]) -> list[str]:
        labels = self.label_chars(len(options))
        return [self.continuation.format(label=label, option=o) for label, o in zip(labels, options)]

    def choice_prompt(self, lines: Sequence[str], question: str, options: Sequence[str]) -> str:
        return self.choice.format(captions="\n".join(lines), question=question, options=self.options_block(options))

    def generate_prompt(self, lines: Sequence[str], prompt: str) -> str:
        return self.generate.format(captions="\n".join(lines), prompt=prompt)


def subsample(n_total: int, n: int) -> list[int]:
    """``n`` of ``range(n_total)`` spread uniformly, in order, starting with 0: ``floor(i * n_total / n)``."""
    if n >= n_total:
        return list(range(n_total))
    return [i * n_total // n for i in range(n)]


def fit_captions(lines: list[str], build: Callable[[list[str]], str], count: Callable[[str], int],
                 budget: int) -> list[str]:
    """The largest uniform subsample of ``lines`` (in order) whose prompt ``build(kept)`` has at most
    ``budget`` tokens by ``count``. Raises a UsageError if not even one line fits."""
    if count(build(lines)) <= budget:
        return lines
    low, high = 0, len(lines)  # fits with `low` lines (or low == 0), not with `high`
    while high - low > 1:
        mid = (low + high) // 2
        if count(build([lines[i] for i in subsample(len(lines), mid)])) <= budget:
            low = mid
        else:
            high = mid
    # A subsample that fits can be followed by a larger one that does not: step down until it fits.
    while low > 0 and count(build([lines[i] for i in subsample(len(lines), low)])) > budget:
        low -= 1
    if low == 0:
        raise UsageError(
            f"llm: the prompt does not fit the model's context of {budget} tokens (after room for the answer) "
            "even with a single caption; use a model with a longer context, shorter captions or templates"
        )
    return [lines[i] for i in subsample(len(lines), low)]


def parse_choice(text: str, labels: str) -> int | None:
    """The index of the first label that stands alone in ``text``, or None if there is none."""
    pattern = r"(?<![A-Za-z0-9])([" + re.escape(labels) + r"])(?![A-Za-z0-9])"
    for match in re.finditer(pattern, text):
        # "A" as an article ("A red circle") is not an answer: a label followed by a word is skipped.
        rest = text[match.end():]
        if labels.isalpha() and re.match(r" [a-z]", rest):
            continue
        return labels.index(match.group(1))
    return None
