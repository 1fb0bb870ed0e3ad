"""The texts of a training batch, the same for the torch and the JAX trainer (no framework imported).

- ``batch_texts``: which captions a micro-batch embeds (one per clip, or all of them);
- ``caption_ids``: ids equal exactly where two captions are the same text, the same in every process;
- order negatives (``reorder``): a caption that lists events with temporal connectives ("..., then ...")
  rewritten with its events in another order: the same words, so only the order tells it from the true
  caption. Videos must prefer their caption over such rewrites (of theirs and of every other caption in
  the batch). Without them nothing in a batch asks for order: captions that list the same events in
  another order almost never meet, and a bag of events tells every pair apart. Hard negative captions
  made by rearranging a caption are NegCLIP's (Yuksekgonul et al. 2023, "When and why vision-language
  models behave like bags-of-words"); here only whole clauses move, between the connectives, so a
  rewrite reads like any other caption and grammar gives it away to no one;
- ``drop_words``: word dropout that keeps the connectives.
"""

from __future__ import annotations

import hashlib
import random
import re

CONNECTIVES = re.compile(
    r"(,\s+(?:and\s+)?then\s+|,\s+after that,?\s+|,\s+followed by\s+|\.\s+then,?\s+|;\s+(?:and\s+)?then\s+)",
    re.IGNORECASE,
)
"""Where a caption is cut into events: ", then", ", and then", ", after that", ", followed by", ". Then", "; then"."""


def reorder(caption: str, rng: random.Random) -> str | None:
    """``caption`` with its clauses (the text between temporal connectives) in another order, connectives
    kept in place; None when it lists fewer than two different events."""
    body = caption.rstrip(".!? ")
    end = caption[len(body) :]  # the final stop stays at the end
    head, colon, body = body.rpartition(": ") if ": " in CONNECTIVES.split(body)[0] else ("", "", body)
    head += colon  # "the colours appeared in this order: " introduces the list and stays in front
    parts = CONNECTIVES.split(body)
    clauses, joints = parts[0::2], parts[1::2]
    if len(set(clauses)) < 2:
        return None
    capital = body[:1].isupper()
    if capital:
        clauses = [c[:1].lower() + c[1:] for c in clauses]
    order = list(range(len(clauses)))
    while [clauses[i] for i in order] == clauses:
        rng.shuffle(order)
    out = clauses[order[0]] + "".join(j + clauses[i] for j, i in zip(joints, order[1:]))
    return head + (out[:1].upper() + out[1:] if capital else out) + end


def drop_words(caption: str, ratio: float, rng: random.Random) -> str:
    """``caption`` with each word of each clause dropped with probability ``ratio`` (one word per clause
    always stays); the temporal connectives stay, so the events keep their order and their count.

    Random deletion (Wei and Zou 2019, "EDA") of the caption's words: texts of many lengths, so that
    where a word sits in bytes stops telling which event it belongs to, and the text tower learns order
    from the connectives, which is what carries over to texts written otherwise (a question's options).
    """
    if ratio <= 0:
        return caption
    parts = CONNECTIVES.split(caption)
    for k in range(0, len(parts), 2):
        words = parts[k].split()
        if len(words) > 1:
            kept = [w for w in words if rng.random() >= ratio]
            parts[k] = " ".join(kept) if kept else rng.choice(words)
    return "".join(parts)


def caption_ids(captions: list[str]) -> list[int]:
    """56-bit ids, equal exactly where two captions are the same text (a stable hash, the same in every
    process, so that ids gathered across processes compare; never negative)."""
    return [int.from_bytes(hashlib.blake2b(c.encode("utf-8"), digest_size=7).digest(), "little") for c in captions]


def batch_texts(choices: list[tuple[str, ...]], index: list[int], mode: str, key: str) -> list[str]:
    """The texts of a micro-batch: one caption per clip (``one``), drawn from (``key``, clip index) alone,
    so that however the global batch is split over processes each clip gets the same one; or every
    caption of every clip, each text once, in a fixed order (``all``)."""
    if mode == "all":
        return sorted({c for captions in choices for c in captions})
    return [captions[random.Random(f"{key}:{i}").randrange(len(captions))] for captions, i in zip(choices, index)]
