"""Synthetic data in EgoSchema's exact on-disk format.

Written under ``out_dir/egoschema/``:

- ``questions.json``: a JSON list of objects with exactly the keys ``q_uid``, ``google_drive_id``,
  ``question``, ``option 0`` .. ``option 4``, as the real file;
- ``subset_answers.json``: ``{q_uid: answer index}`` for a subset of the questions, as the real public
  answers cover only 500 of 5031;
- ``videos/{q_uid}.mp4``: one video per question;
- ``synthetic_events.json`` and ``synthetic_full_answers.json``: extras the real benchmark does not
  have, the ground truth (scene, question type) and the answers to every question, which stand in for
  the organisers' grader in tests.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from vfeval.errors import UsageError

from .options import SceneOptions, format_folder
from .questions import N_OPTIONS, QUESTION_TYPES, Question, make_question
from .scenes import Scene, make_scene, rng_for

FORMAT = "egoschema"
README = """\
- `egoschema/`: EgoSchema's format. `questions.json` (keys `q_uid`, `google_drive_id`, `question`,
  `option 0`..`option 4`), `subset_answers.json` (`{{q_uid: answer index}}` for {n_subset} of the
  {n} questions), `videos/{{q_uid}}.mp4` ({duration:g} s, {fps} fps, {size}x{size}).
  Extras the real benchmark does not have: `synthetic_events.json` (`{{q_uid: {{scene, question_type,
  question}}}}`, the ground truth) and `synthetic_full_answers.json` (answers to all {n} questions, in
  place of the organisers' grader).
"""


def _q_uid(seed: int, index: int) -> str:
    # uuid4-shaped like the real q_uids, but drawn from the seed so the same seed names the same files.
    return str(uuid.UUID(bytes=rng_for(seed, "egoschema/q_uid", index).bytes(16), version=4))


def _answer_index(seed: int, index: int) -> int:
    # Each block of 5 questions uses each answer position once, so answers are balanced over 0..4
    # (exactly, when the count is a multiple of 5) and a model that always picks one position scores 20%.
    return int(
        rng_for(seed, "egoschema/answers", index // N_OPTIONS).permutation(N_OPTIONS)[index % N_OPTIONS]
    )


def make_items(
    seed: int, n_videos: int, duration: float, n_events: int, types: tuple[str, ...] = QUESTION_TYPES
) -> list[tuple[str, Scene, Question]]:
    """``(q_uid, scene, question)`` for each video, without writing anything."""
    items = []
    for i in range(n_videos):
        rng = rng_for(seed, FORMAT, i)
        scene = make_scene(rng, duration, n_events)
        question = make_question(rng, scene, answer_index=_answer_index(seed, i), types=types)
        items.append((_q_uid(seed, i), scene, question))
    return items


def _n_subset(n_videos: int, subset_fraction: float) -> int:
    return max(1, round(subset_fraction * n_videos))


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data) + "\n", encoding="utf-8")


def write_egoschema(
    out_dir: str | Path,
    seed: int = 0,
    n_videos: int = 100,
    options: SceneOptions = SceneOptions(),
    *,
    subset_fraction: float = 0.8,
    types: tuple[str, ...] = QUESTION_TYPES,
) -> Path:
    """Write ``n_videos`` questions and videos in EgoSchema's format under ``out_dir/egoschema``.

    Returns that folder. ``subset_fraction`` of the questions (chosen from the seed) get public
    answers in ``subset_answers.json``.
    """
    root = format_folder(out_dir, FORMAT, n_videos)
    if not 0 < subset_fraction <= 1:
        raise UsageError(f"subset_fraction must be in (0, 1], got {subset_fraction}")
    (root / "videos").mkdir(parents=True, exist_ok=True)
    items = make_items(seed, n_videos, options.duration, options.n_events, types)

    questions = []
    for q_uid, _, question in items:
        entry = {"q_uid": q_uid, "google_drive_id": f"synthetic-{q_uid[:8]}", "question": question.text}
        entry.update({f"option {k}": option for k, option in enumerate(question.options)})
        questions.append(entry)
    n_subset = _n_subset(n_videos, subset_fraction)
    in_subset = set(rng_for(seed, "egoschema/subset").permutation(n_videos)[:n_subset].tolist())

    _dump(root / "questions.json", questions)
    _dump(root / "subset_answers.json", {u: q.answer for i, (u, _, q) in enumerate(items) if i in in_subset})
    _dump(root / "synthetic_full_answers.json", {u: q.answer for u, _, q in items})
    _dump(
        root / "synthetic_events.json",
        {u: {"scene": s.to_dict(), "question_type": q.qtype, "question": q.to_dict()} for u, s, q in items},
    )
    options.write_videos([(s, root / "videos" / f"{u}.mp4") for u, s, _ in items])
    return root


def readme_section(n_videos: int, options: SceneOptions, subset_fraction: float = 0.8) -> str:
    """The paragraph of the output README that describes what ``write_egoschema`` writes."""
    return README.format(n=n_videos, n_subset=_n_subset(n_videos, subset_fraction), duration=options.duration,
                         fps=options.fps, size=options.size)
