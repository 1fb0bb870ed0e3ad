"""The synthetic long-video generator: deterministic, in EgoSchema's exact format, and long-video by design.

The last tests check the claim the data exists for: a pipeline that sees one segment of a video is
near chance on the temporal question types, while the whole event list answers every question.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner
from vfeval_benchmarks.commands import add_data_commands
from vfeval_benchmarks.synthetic import COLOURS, SHAPES, Scene, make_scene, solve, write_synthetic
from vfeval_benchmarks.synthetic.egoschema import make_items
from vfeval_benchmarks.synthetic.questions import QUESTION_TYPES, Question, correct_options
from vfeval_benchmarks.synthetic.render import render
from vfeval_benchmarks.synthetic.scenes import rng_for

from vfeval.errors import UsageError

REAL = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "egoschema"
EGOSCHEMA_KEYS = ["q_uid", "google_drive_id", "question"] + [f"option {k}" for k in range(5)]
SMALL = {"n_videos": 10, "n_train_videos": 4, "size": 32, "duration": 12.0, "fps": 4}


def _write(root: Path, seed: int, workers: int = 1) -> Path:
    write_synthetic(root, seed=seed, workers=workers, **SMALL)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Seed 0 written twice (in this process, then by a pool of two) and seed 1 once."""
    base = tmp_path_factory.mktemp("synthetic")
    return {
        "a": _write(base / "a", seed=0),
        "b": _write(base / "b", seed=0, workers=2),
        "other": _write(base / "other", seed=1),
    }


def _decoded(path: Path) -> tuple[str, int, float, tuple[int, int]]:
    """(checksum of the decoded RGB frames, frame count, duration in s, (width, height))."""
    digest, n = hashlib.sha256(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        for frame in container.decode(stream):
            digest.update(frame.to_ndarray(format="rgb24").tobytes())
            n += 1
        return digest.hexdigest(), n, duration, (stream.width, stream.height)


def _load(root: Path, name: str):
    return json.loads((root / "egoschema" / name).read_text(encoding="utf-8"))


def test_same_seed_gives_the_same_data(runs):
    a, b = runs["a"], runs["b"]
    for name in (
        "questions.json",
        "subset_answers.json",
        "synthetic_events.json",
        "synthetic_full_answers.json",
    ):
        assert (a / "egoschema" / name).read_bytes() == (b / "egoschema" / name).read_bytes(), name
    assert (a / "train" / "captions.jsonl").read_bytes() == (b / "train" / "captions.jsonl").read_bytes()
    videos = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert len(videos) == SMALL["n_videos"] + SMALL["n_train_videos"]
    for video in videos:  # written by another process, yet the same pixels
        assert _decoded(a / video)[0] == _decoded(b / video)[0], video


def test_a_different_seed_gives_different_data(runs):
    a, other = runs["a"], runs["other"]
    assert (a / "egoschema/questions.json").read_bytes() != (other / "egoschema/questions.json").read_bytes()
    assert not set(_load(a, "synthetic_full_answers.json")) & set(_load(other, "synthetic_full_answers.json"))
    first = lambda root: _decoded(sorted((root / "egoschema/videos").glob("*.mp4"))[0])[0]  # noqa: E731
    assert first(a) != first(other)


def test_questions_json_has_egoschemas_exact_format(runs):
    questions = _load(runs["a"], "questions.json")
    assert isinstance(questions, list) and len(questions) == SMALL["n_videos"]
    if (REAL / "questions_sample.json").exists():  # the real file's keys, in the real file's order
        assert list(json.loads((REAL / "questions_sample.json").read_text())[0]) == EGOSCHEMA_KEYS
    for entry in questions:
        assert list(entry) == EGOSCHEMA_KEYS
        assert all(isinstance(v, str) and v for v in entry.values())
        assert str(uuid.UUID(entry["q_uid"])) == entry["q_uid"]
        assert len({entry[f"option {k}"] for k in range(5)}) == 5
    assert len({e["q_uid"] for e in questions}) == len(questions)


def test_public_answers_cover_a_subset_and_videos_match_questions(runs):
    root = runs["a"] / "egoschema"
    uids = [e["q_uid"] for e in _load(runs["a"], "questions.json")]
    subset, full = _load(runs["a"], "subset_answers.json"), _load(runs["a"], "synthetic_full_answers.json")
    assert set(full) == set(uids) and len(subset) == 8 and set(subset) < set(uids)
    assert all(type(v) is int and 0 <= v <= 4 for v in subset.values())
    assert all(subset[u] == full[u] for u in subset)
    assert sorted(full.values()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # balanced answer positions
    assert sorted(p.stem for p in (root / "videos").glob("*.mp4")) == sorted(uids)
    for u in uids:
        _, n, duration, size = _decoded(root / "videos" / f"{u}.mp4")
        assert (n, size) == (SMALL["duration"] * SMALL["fps"], (SMALL["size"], SMALL["size"]))
        assert duration == pytest.approx(SMALL["duration"], abs=0.5 / SMALL["fps"])


def test_videos_show_the_events(runs):
    root = runs["a"] / "egoschema"
    u, record = next(iter(_load(runs["a"], "synthetic_events.json").items()))
    scene = Scene.from_dict(record["scene"])
    with av.open(str(root / "videos" / f"{u}.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    fps, size = SMALL["fps"], SMALL["size"]
    for event in scene.events:
        t = np.ceil(event.start * fps) / fps  # the first frame showing the event
        x, y = (c[0] for c in event.centre(np.array([t])))
        pixel = frames[int(round(t * fps)), int(y * size), int(x * size)].astype(int)
        assert np.abs(pixel - COLOURS[event.colour]).max() < 40, (event.colour, pixel)
    assert np.abs(frames[0].astype(int) - 48).max() < 10  # before the first event: background only


def test_train_split_captions_the_sequence_and_states_only_true_facts(runs):
    root = runs["a"] / "train"
    lines = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    eval_captions = {
        Scene.from_dict(r["scene"]).caption() for r in _load(runs["a"], "synthetic_events.json").values()
    }
    by_video: dict[str, list[str]] = {}
    for line in lines:
        assert list(line) == ["video", "caption", "start", "end"] and line["start"] is line["end"] is None
        by_video.setdefault(line["video"], []).append(line["caption"])
    assert len(by_video) == SMALL["n_train_videos"]
    for i, (video, captions) in enumerate(sorted(by_video.items())):
        assert (root / video).is_file()
        scene = make_scene(rng_for(0, "train", i), SMALL["duration"], 4)
        assert captions[0] == scene.caption() and scene.caption() not in eval_captions
        # Every fact, read back as the answer to the question it states, is what the solver says.
        for fact in captions[1:]:
            q = _question_stated_by(fact)
            assert correct_options(scene.events, q) == [0], fact
        kinds = [_question_stated_by(f).qtype for f in captions[1:]]
        assert kinds.count("order") == kinds.count("last") == 1 and kinds.count("after") == 3
        assert kinds.count("count") == len(SHAPES) and kinds.count("absent") == len(COLOURS) - 4


def _question_stated_by(fact: str) -> Question:
    """The one-option question whose right answer ``fact`` states."""
    if fact.startswith("the colours appeared in this order: "):
        return Question("order", "", (fact.split(": ", 1)[1],), 0)
    if fact.startswith("the shape that appeared right after the "):
        colour, shape, _, answer = fact.removeprefix("the shape that appeared right after the ").split()
        return Question("after", "", (answer,), 0, {"colour": colour, "shape": shape})
    if fact.startswith("the last shape to appear was "):
        return Question("last", "", (fact.rsplit(" ", 1)[1],), 0)
    if fact.endswith(" never appeared in the video"):
        return Question("absent", "", (fact.split()[0],), 0)
    shapes, number = fact.split("s that appeared in the video: ")
    return Question("count", "", (number,), 0, {"shape": shapes})


def test_readme_and_refusing_foreign_folders(runs, tmp_path):
    readme = (runs["a"] / "README.md").read_text()
    assert "seed 0" in readme and "not comparable" in readme and "synthetic_events.json" in readme
    (tmp_path / "mine.txt").write_text("not vfeval's")
    with pytest.raises(UsageError, match="not empty"):
        write_synthetic(tmp_path, n_videos=5, n_train_videos=0, size=32, duration=4.0, workers=1)
    with pytest.raises(UsageError, match="did you mean"):
        write_synthetic(tmp_path / "new", formats=("egoshema",), workers=1)
    # A folder it wrote itself is replaced whole: no stale videos from the bigger earlier run.
    out = tmp_path / "again"
    write_synthetic(out, n_videos=5, n_train_videos=2, size=32, duration=4.0, workers=1)
    write_synthetic(out, n_videos=3, n_train_videos=0, size=32, duration=4.0, workers=1)
    assert len(list((out / "egoschema/videos").glob("*.mp4"))) == 3 and not (out / "train").exists()
    with pytest.raises(UsageError, match="even"):  # checked before the earlier output is removed
        write_synthetic(out, n_videos=3, n_train_videos=0, size=33, duration=4.0, workers=1)
    assert len(list((out / "egoschema/videos").glob("*.mp4"))) == 3


def test_data_synthetic_command(tmp_path):
    app = typer.Typer()
    add_data_commands(app)
    app.command("other")(lambda: None)  # with one command typer would fold the sub-app away
    args = "data synthetic --videos 5 --train-videos 2 --size 32 --duration 4 --workers 1 --formats egoschema"
    result = CliRunner().invoke(app, [*args.split(), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "egoschema" in result.output and "not comparable" in result.output
    assert len(json.loads((tmp_path / "d/egoschema/questions.json").read_text())) == 5
    # Importing the command module stays light: the generator and PyAV load only when it runs.
    code = "import sys, vfeval_benchmarks.commands; assert not {'av', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rendering_matches_the_scene_layout():
    scene = make_scene(rng_for(0, "test"), duration=8.0, n_events=4)
    frames = render(scene, fps=4, width=32, height=32)
    assert frames.shape == (32, 32, 32, 3) and frames.dtype == np.uint8
    for k, event in enumerate(scene.events):  # each event inside its own slot, in order
        assert k * scene.slot_length <= event.start < event.end <= (k + 1) * scene.slot_length
    colours = {tuple(c) for c in frames.reshape(-1, 3)}
    assert colours == {(48, 48, 48)} | {COLOURS[e.colour] for e in scene.events}


# ---- the question layer: pure, no video writing ----

ITEMS = make_items(seed=0, n_videos=300, duration=24.0, n_events=4)
TEMPORAL = make_items(seed=1, n_videos=200, duration=24.0, n_events=4, types=("order", "after", "last"))


def test_the_ground_truth_solver_answers_every_question():
    assert {q.qtype for _, _, q in ITEMS} == set(QUESTION_TYPES)
    for _, scene, question in ITEMS + TEMPORAL:
        assert solve(scene.events, question) == question.answer
        assert Question.from_dict(json.loads(json.dumps(question.to_dict()))) == question
        assert len(set(question.options)) == 5


def _consistent(question: Question, seen: dict[int, object], n_slots: int) -> set[int]:
    """Options that are right for at least one video agreeing with the events ``seen`` (slot -> event).

    The unseen slots may hold any shape of any colour not already seen (colours are distinct within a
    video). To ``after`` a shape matters only as "the named one or another", and to ``order`` and
    ``last`` not at all, so fewer shapes are enumerated for them.
    """
    template = next(iter(seen.values()))
    unseen = [k for k in range(n_slots) if k not in seen]
    free = [c for c in COLOURS if c not in {e.colour for e in seen.values()}]
    named = question.params.get("shape")
    shapes = {"count": SHAPES, "after": (named, next(s for s in SHAPES if s != named))}.get(
        question.qtype, SHAPES[:1]
    )
    found: set[int] = set()
    for colours in itertools.permutations(free, len(unseen)):
        for shape_row in itertools.product(shapes, repeat=len(unseen)):
            events = dict(seen)
            events.update(
                {
                    k: replace(template, colour=c, shape=s)
                    for k, c, s in zip(unseen, colours, shape_row, strict=True)
                }
            )
            # Only the order of the events matters to the questions: give each its slot number as start.
            found.update(
                correct_options([replace(events[k], start=float(k)) for k in sorted(events)], question)
            )
    return found


def _segment_score(segments: tuple[int, ...]) -> float:
    """Accuracy of a pipeline that sees one quarter of a video and picks at random among the options
    consistent with what it saw, over every question of ``TEMPORAL`` and each quarter in ``segments``."""
    rng = np.random.default_rng(0)
    correct = []
    for (_, scene, question), segment in itertools.product(TEMPORAL, segments):
        a, b = segment * scene.duration / 4, (segment + 1) * scene.duration / 4
        seen = {k: e for k, e in enumerate(scene.events) if e.start < b and e.end > a}
        options = sorted(_consistent(question, seen, len(scene.events)))
        assert question.answer in options  # what it saw never rules out the truth
        correct.append(int(rng.choice(options)) == question.answer)
    return float(np.mean(correct))


def test_one_segment_is_near_chance_on_temporal_questions():
    assert all(solve(s.events, q) == q.answer for _, s, q in TEMPORAL)  # the whole video: 100%
    # Expected: 0.27 for the first quarter and 0.35 for any one quarter (chance is 0.2); seeing
    # the last quarter answers "last", and seeing one slot rules out some wrong orders.
    assert _segment_score((0,)) < 0.35
    assert _segment_score((0, 1, 2, 3)) < 0.45


def test_colour_statistics_answer_absent_but_not_order():
    """Knowing which colours appeared (not when) answers ``absent`` and leaves ``order`` at chance."""
    for _, scene, question in ITEMS:
        colours = [e.colour for e in scene.events]
        if question.qtype not in ("order", "absent", "last"):
            continue
        options: set[int] = set()
        for perm in itertools.permutations(scene.events):
            options.update(
                correct_options([replace(e, start=float(k)) for k, e in enumerate(perm)], question)
            )
        expected = {"absent": 1, "order": 5, "last": len(colours)}[question.qtype]
        assert len(options) == expected, (question.qtype, question.options, colours)
