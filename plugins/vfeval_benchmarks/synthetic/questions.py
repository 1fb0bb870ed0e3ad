"""Five-option multiple-choice questions about a scene, and the solver that answers them from its events.

Question types, and what a pipeline needs to see to answer each:

| type | question | needs |
| --- | --- | --- |
| ``order`` | In what order did the shapes' colours appear? | every event; all options hold the same colours |
| ``after`` | What colour was the shape that appeared right after the red circle? | two neighbouring events, anywhere |
| ``last`` | Which colour was the last shape to appear? | the end, and knowing it is the end |
| ``count`` | How many circles appeared in the video? | every event |
| ``absent`` | Which of these colours never appeared in the video? | the set of colours: colour statistics suffice |

``order``, ``after`` and ``last`` are built so that the colours present in the video do not give the
answer away (their distractors are colours that do appear, or orderings of them), while ``absent`` is
the control a colour-statistics baseline can answer. ``solve`` recomputes every answer from the event
list; ``correct_options`` does the same for any event list, which lets a test ask what a pipeline that
saw only part of the video could know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vfeval.errors import UsageError, suggest

from .scenes import COLOURS, SHAPES, Event, Scene

N_OPTIONS = 5
QUESTION_TYPES: tuple[str, ...] = ("order", "after", "last", "count", "absent")
NUMBER_WORDS: tuple[str, ...] = ("none", "one", "two", "three", "four", "five", "six")

_TEXT = {
    "order": "In what order did the shapes' colours appear?",
    "after": "What colour was the shape that appeared right after the {colour} {shape}?",
    "last": "Which colour was the last shape to appear?",
    "count": "How many {shape}s appeared in the video?",
    "absent": "Which of these colours never appeared in the video?",
}


@dataclass(frozen=True)
class Question:
    """One question: its type, text, the five options, the index of the right one, and the parameters
    the text was filled with (the colour and shape of ``after``, the shape of ``count``)."""

    qtype: str
    text: str
    options: tuple[str, ...]
    answer: int
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "type": self.qtype,
            "text": self.text,
            "options": list(self.options),
            "answer": self.answer,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Question:
        return cls(data["type"], data["text"], tuple(data["options"]), int(data["answer"]), data["params"])


def feasible_types(n_events: int) -> list[str]:
    """The question types that can be asked about a scene of ``n_events`` events with 5 distinct options."""
    types = ["last", "count"]
    if n_events >= 2:
        types.insert(0, "after")
    if n_events >= 3:  # 2 events have only 2 orderings; 3 have 6, enough for 5 distinct options
        types.insert(0, "order")
    if N_OPTIONS - 1 <= n_events < len(COLOURS):  # one colour missing and four present as distractors
        types.append("absent")
    return [t for t in QUESTION_TYPES if t in types]


def _order_phrase(colours: list[str]) -> str:
    return ", then ".join(colours)


def _order_distractors(rng: np.random.Generator, colours: list[str]) -> list[str]:
    # Swapping two neighbours is the hardest kind of wrong order: it differs from the truth in only
    # two events, next to each other in time. Random other orderings fill up when there are too few.
    n = len(colours)
    swaps = []
    for i in rng.permutation(n - 1):
        swapped = list(colours)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        swaps.append(_order_phrase(swapped))
    chosen = swaps[: N_OPTIONS - 1]
    seen = {_order_phrase(colours), *chosen}
    while len(chosen) < N_OPTIONS - 1:
        candidate = _order_phrase([colours[i] for i in rng.permutation(n)])
        if candidate not in seen:
            seen.add(candidate)
            chosen.append(candidate)
    return chosen


def _pick(rng: np.random.Generator, pool: list[str], k: int) -> list[str]:
    return [pool[i] for i in rng.permutation(len(pool))[:k]]


def make_question(
    rng: np.random.Generator,
    scene: Scene,
    qtype: str | None = None,
    answer_index: int | None = None,
    types: tuple[str, ...] | list[str] = QUESTION_TYPES,
) -> Question:
    """Draw a question about ``scene``.

    ``qtype`` fixes the type; otherwise it is drawn uniformly from ``types`` that the scene allows.
    ``answer_index`` places the right option (a writer balances answers over 0..4); otherwise it is
    drawn uniformly.
    """
    events = scene.events
    feasible = feasible_types(len(events))
    if qtype is None:
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if unknown:
            raise UsageError(f"unknown question type {unknown[0]!r}" + suggest(unknown[0], QUESTION_TYPES))
        allowed = [t for t in feasible if t in types]
        if not allowed:
            raise UsageError(f"none of the question types {list(types)} fits scenes of {len(events)} events")
        qtype = str(rng.choice(allowed))
    elif qtype not in feasible:
        raise UsageError(
            f"question type {qtype!r} cannot be asked about {len(events)} events" + suggest(qtype, feasible)
        )
    colours = [e.colour for e in events]
    present = [c for c in COLOURS if c in colours]
    absent = [c for c in COLOURS if c not in colours]
    params: dict = {}
    if qtype == "order":
        right, wrong = _order_phrase(colours), _order_distractors(rng, colours)
    elif qtype == "after":
        i = int(rng.integers(len(events) - 1))
        params = {"colour": events[i].colour, "shape": events[i].shape}
        right = events[i + 1].colour
        # Every palette colour but the named one: the colours that did appear are always among them.
        wrong = _pick(rng, [c for c in COLOURS if c not in (right, events[i].colour)], N_OPTIONS - 1)
    elif qtype == "last":
        right = colours[-1]
        # The other colours that appeared come first, so knowing which colours appeared is not enough.
        others = _pick(rng, [c for c in present if c != right], N_OPTIONS - 1)
        wrong = others + _pick(rng, absent, N_OPTIONS - 1 - len(others))
    elif qtype == "count":
        shape = str(rng.choice(SHAPES))
        params = {"shape": shape}
        count = sum(e.shape == shape for e in events)
        # Five consecutive counts that contain the answer, within 0..max(4, number of events).
        top = max(N_OPTIONS - 1, len(events))
        low = int(rng.integers(max(0, count - N_OPTIONS + 1), min(count, top - N_OPTIONS + 1) + 1))
        right = NUMBER_WORDS[count]
        wrong = [NUMBER_WORDS[k] for k in range(low, low + N_OPTIONS) if k != count]
    else:  # absent
        right = str(rng.choice(absent))
        wrong = _pick(rng, present, N_OPTIONS - 1)
    if answer_index is None:
        answer_index = int(rng.integers(N_OPTIONS))
    if not 0 <= answer_index < N_OPTIONS:
        raise ValueError(f"answer_index must be in 0..{N_OPTIONS - 1}, got {answer_index}")
    options = [wrong[i] for i in rng.permutation(len(wrong))]
    options.insert(answer_index, right)
    return Question(qtype, _TEXT[qtype].format(**params), tuple(options), answer_index, params)


def correct_options(events: list[Event], question: Question) -> list[int]:
    """Indices of the options that are true of ``events`` (taken in order of their start times).

    For the events the question was made from this is exactly ``[question.answer]``. For other event
    lists it may be empty (the question's premise, e.g. "the red circle", does not hold) or hold
    several options.
    """
    events = sorted(events, key=lambda e: e.start)
    colours = [e.colour for e in events]
    q, p = question.qtype, question.params
    if q == "absent":
        return [i for i, option in enumerate(question.options) if option not in colours]
    if q == "order":
        truth = _order_phrase(colours)
    elif q == "last":
        truth = colours[-1] if colours else None
    elif q == "count":
        truth = NUMBER_WORDS[sum(e.shape == p["shape"] for e in events)]
    elif q == "after":
        named = [i for i, e in enumerate(events) if (e.colour, e.shape) == (p["colour"], p["shape"])]
        truth = colours[named[0] + 1] if len(named) == 1 and named[0] + 1 < len(events) else None
    else:
        raise ValueError(f"unknown question type {q!r}")
    return [i for i, option in enumerate(question.options) if option == truth]


def solve(events: list[Event], question: Question) -> int:
    """The index of the right option, computed from the ground-truth ``events`` alone."""
    found = correct_options(events, question)
    if len(found) != 1:
        raise ValueError(f"{question.qtype} question has {len(found)} true options for these events")
    return found[0]
