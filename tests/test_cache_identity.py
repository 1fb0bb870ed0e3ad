"""A cached answer names the content of its video: replaced videos are computed again, unchanged ones never;
task files are hashed into the protocol; rescoring never drops a metric silently; results say what made them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vfeval.cache import Cache
from vfeval.config import load_run_config
from vfeval.content import MISSING, NOT_A_FILE, ContentIndex, file_digest
from vfeval.errors import UsageError
from vfeval.hashing import fingerprint
from vfeval.pipeline import Pipeline
from vfeval.requests import VideoWindow
from vfeval.results import git_dirty
from vfeval.runner import Runner, rescore, run, stored_features
from vfeval.testing import write_video

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30),
           "magenta": (220, 40, 200)}
NAMES = list(COLOURS)


def square_video(path: Path, colour: str, size: int = 32) -> None:
    frames = np.full((8, size, size, 3), 40, np.uint8)
    frames[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = COLOURS[colour]
    write_video(path, frames, fps=4)


def colour_egoschema(root: Path, n: int) -> dict[str, str]:
    """EgoSchema-format data: video i shows a square of one colour; the question asks which. Returns
    ``{q_uid: colour}``."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    truth, questions, answers = {}, [], {}
    for i in range(n):
        uid, colour = f"q{i:04d}", NAMES[i % len(NAMES)]
        square_video(root / "videos" / f"{uid}.mp4", colour)
        options = NAMES[i % 3 :] + NAMES[: i % 3]
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour is the square?",
                          **{f"option {k}": f"the {o} one" for k, o in enumerate(options)}})
        answers[uid] = options.index(colour)
        truth[uid] = colour
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))
    settle(root)
    return truth


def settle(root: Path) -> None:
    """Date every file a minute back, as files that were not just written are: their digests are remembered
    (a file modified in the last ``RACY_SECONDS`` is hashed again each time, see vfeval.content)."""
    past = time.time() - 60
    for p in root.rglob("*"):
        os.utime(p, (past, past))


def overrides(tmp_path: Path, root: Path, cache: str = "cache", *extra: str) -> list[str]:
    return [
        "task.name=egoschema", f"task.root={root}", "task.split=subset", "pipeline.encoder.name=pixel",
        "pipeline.aggregator.name=identity", "pipeline.sampling.mode=uniform", "pipeline.sampling.num_frames=4",
        "pipeline.sampling.size=32", "pipeline.sampling.crop=32", "run.batch_size=3", "run.workers=1",
        f"output.dir={tmp_path / 'runs'}", f"output.cache_dir={tmp_path / cache}", *extra,
    ]


def run_ego(host, tmp_path: Path, root: Path, *extra: str, cache: str = "cache", log: io.StringIO | None = None):
    cfg = load_run_config(None, overrides(tmp_path, root, cache, *extra), host.registry)
    console = Console(file=log or io.StringIO(), width=200)
    return Runner(cfg, host, console, progress=False).execute()


def answers(outcome) -> list:
    return [np.asarray(r.answers[0]).tolist() if r.answers else None for r in outcome.results]


def test_replaced_videos_are_recomputed_and_score_as_a_fresh_cache(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 10)
    first = run_ego(host, tmp_path, root)
    assert first.stats.computed == 10 and first.stats.files_hashed == 10
    assert first.result["metrics"]["accuracy"]["value"] == 100.0

    # An unchanged tree: nothing recomputed, nothing decoded, no file read again.
    again = run_ego(host, tmp_path, root)
    assert (again.stats.cached, again.stats.computed, again.stats.windows_decoded) == (10, 0, 0)
    assert again.stats.files_hashed == 0 and again.stats.windows_invalidated == 0

    # Replace four videos under the same ids: two with another colour, two at another resolution.
    for uid, colour, size in (("q0001", "red", 32), ("q0002", "yellow", 32), ("q0003", "yellow", 48),
                              ("q0004", "magenta", 64)):
        square_video(root / "videos" / f"{uid}.mp4", colour, size)
    log = io.StringIO()
    replaced = run_ego(host, tmp_path, root, log=log)
    assert replaced.stats.computed == 4 and replaced.stats.cached == 6
    assert replaced.stats.windows_decoded == 4 and replaced.stats.windows_invalidated == 4
    assert replaced.stats.files_hashed == 4
    assert "4 windows invalidated" in log.getvalue()
    assert replaced.result["cost"]["requests"]["windows_invalidated"] == 4

    fresh = run_ego(host, tmp_path, root, cache="fresh-cache")
    assert fresh.stats.cached == 0
    assert replaced.result["metrics"] == fresh.result["metrics"]
    assert answers(replaced) == answers(fresh)
    assert replaced.result["metrics"]["accuracy"]["value"] == 80.0  # q0001, q0002 now show other colours

    # The new answers are cached in turn, and the run after says nothing is invalidated.
    settle(root)
    last = run_ego(host, tmp_path, root)
    assert (last.stats.computed, last.stats.windows_invalidated) == (0, 0)


def test_the_feature_store_is_keyed_by_content(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 6)
    run_ego(host, tmp_path, root)
    square_video(root / "videos" / "q0000.mp4", "yellow", 40)
    # A new pipeline (mean pooling) over the same encoder and sampling: only the replaced window is decoded.
    pooled = run_ego(host, tmp_path, root, "pipeline.aggregator.name=mean")
    assert pooled.stats.windows_decoded == 1 and pooled.stats.windows_from_store == 5
    fresh = run_ego(host, tmp_path, root, "pipeline.aggregator.name=mean", cache="fresh-cache")
    assert answers(pooled) == answers(fresh)

    cfg = load_run_config(None, overrides(tmp_path, root), host.registry)
    cache = Cache(tmp_path / "cache" / "vfeval.sqlite")
    try:
        window = VideoWindow("q0000", str(root / "videos" / "q0000.mp4"))
        stored = stored_features(cache, Pipeline.from_config(cfg.pipeline, host.registry), window, 3)
        assert stored is not None and stored["embeddings"].shape[0] == 1
    finally:
        cache.close()


def test_a_missing_video_fails_and_is_computed_once_it_appears(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 4)
    video = root / "videos" / "q0002.mp4"
    kept = video.read_bytes()
    video.unlink()
    first = run_ego(host, tmp_path, root)
    assert first.result["task"]["n_failed"] == 1
    assert run_ego(host, tmp_path, root).stats.computed == 0  # a failure is not retried unless asked
    video.write_bytes(kept)
    back = run_ego(host, tmp_path, root)
    assert back.stats.computed == 1 and back.result["task"]["n_failed"] == 0


def test_content_index_hashes_each_file_once_per_size_and_mtime(tmp_path):
    import sqlite3

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 5000)
    b.write_bytes(b"y" * 10)
    settle(tmp_path)
    index = ContentIndex(sqlite3.connect(tmp_path / "memo.sqlite", isolation_level=None), workers=2)
    ids = index.identify([str(a), str(b), str(tmp_path / "none.bin"), str(a)])
    assert ids == {str(a): file_digest(a), str(b): file_digest(b), str(tmp_path / "none.bin"): MISSING}
    assert index.stats.hashed == 2 and index.stats.bytes_hashed == 5010

    index.identify([str(a), str(b)])
    assert index.stats.hashed == 2  # remembered

    # A FIFO is never opened (reading it would block until a writer comes).
    os.mkfifo(tmp_path / "fifo")
    assert index.identify([str(tmp_path / "fifo")]) == {str(tmp_path / "fifo"): NOT_A_FILE}

    # A symlink has the identity of the file it points to (remembered under its own name).
    link = tmp_path / "link.bin"
    link.symlink_to(b)
    assert index.identify([str(link)])[str(link)] == ids[str(b)] and index.stats.hashed == 3
    index.identify([str(link)])
    assert index.stats.hashed == 3

    # Same size, new content and mtime: hashed again. A file modified just now is not remembered yet.
    a.write_bytes(b"z" * 5000)
    assert index.identify([str(a)])[str(a)] == file_digest(a) != ids[str(a)]
    index.identify([str(a)])
    assert index.stats.hashed == 5
    settle(tmp_path)
    index.identify([str(a)])
    index.identify([str(a)])
    assert index.stats.hashed == 6


def test_answers_are_never_mixed_across_batch_sizes(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 6)
    three = run_ego(host, tmp_path, root)
    two = run_ego(host, tmp_path, root, "run.batch_size=2")
    assert two.stats.cached == 0 and two.stats.computed == 6 and two.stats.windows_from_store == 0
    assert three.result["pipeline"]["batch_size"] == 3 and two.result["pipeline"]["batch_size"] == 2
    assert three.result["pipeline"]["fingerprint"] != two.result["pipeline"]["fingerprint"]
    assert run_ego(host, tmp_path, root).stats.computed == 0


def test_task_files_are_hashed_into_the_protocol(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 5)
    res = run_ego(host, tmp_path, root).result
    files = res["protocol"]["files"]
    assert files == {"questions": file_digest(root / "questions.json"),
                     "answers": file_digest(root / "subset_answers.json")}
    answers_file = json.loads((root / "subset_answers.json").read_text())
    answers_file["q0000"] = (answers_file["q0000"] + 1) % 5
    (root / "subset_answers.json").write_text(json.dumps(answers_file))
    changed = run_ego(host, tmp_path, root).result
    assert changed["protocol"]["fingerprint"] != res["protocol"]["fingerprint"]
    assert changed["metrics"]["accuracy"]["value"] == 80.0


def _synthetic_types(root: Path) -> None:
    """The question-type list `vfeval data synthetic` writes next to its EgoSchema files."""
    questions = json.loads((root / "questions.json").read_text())
    events = {q["q_uid"]: {"question_type": "colour" if i % 2 else "shape"} for i, q in enumerate(questions)}
    (root / "synthetic_events.json").write_text(json.dumps(events))


def test_rescore_refuses_when_a_hashed_task_file_is_gone(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 6)
    _synthetic_types(root)
    outcome = run_ego(host, tmp_path, root)
    assert set(outcome.result["breakdowns"]["accuracy_by_type"]) == {"colour", "shape"}
    assert "synthetic_events" in outcome.result["protocol"]["files"]
    (root / "synthetic_events.json").unlink()
    with pytest.raises(UsageError, match="synthetic_events"):
        rescore(outcome.run_dir, host)
    res = subprocess.run([sys.executable, "-m", "vfeval", "rescore", str(outcome.run_dir)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "synthetic_events" in res.stderr and "Traceback" not in res.stderr
    # The record is untouched.
    assert json.loads((outcome.run_dir / "results.json").read_text())["metrics"] == outcome.result["metrics"]


def test_rescore_keeps_a_breakdown_it_cannot_recompute_with_a_note(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 6)
    _synthetic_types(root)
    outcome = run_ego(host, tmp_path, root)
    # A record from before task files were hashed: nothing says the event list is needed.
    path = outcome.run_dir / "results.json"
    record = json.loads(path.read_text())
    del record["protocol"]["files"]
    record["protocol"]["fingerprint"] = fingerprint({k: v for k, v in record["protocol"].items() if k != "fingerprint"})
    path.write_text(json.dumps(record))
    (root / "synthetic_events.json").unlink()
    old, new = rescore(outcome.run_dir, host)
    assert new["breakdowns"]["accuracy_by_type"] == old["breakdowns"]["accuracy_by_type"]
    assert any("accuracy_by_type kept from the run" in n for n in new["notes"])
    assert any("protocol changed since the run" in n for n in new["notes"])
    assert new["metrics"] == old["metrics"]


def test_results_record_the_batch_size_and_a_dirty_tree(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 3)
    res = run_ego(host, tmp_path, root).result
    assert res["pipeline"]["batch_size"] == 3
    assert res["provenance"]["git_dirty"] in (True, False, None)

    repo = tmp_path / "repo"
    repo.mkdir()
    assert git_dirty(repo) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=repo, check=True)
    assert git_dirty(repo) is False
    (repo / "a.txt").write_text("b")
    assert git_dirty(repo) is True


def test_cache_clear_forgets_digests(tmp_path, host):
    root = tmp_path / "ego"
    colour_egoschema(root, 2)
    run(load_run_config(None, overrides(tmp_path, root), host.registry), host, progress=False)
    cache = Cache(tmp_path / "cache" / "vfeval.sqlite")
    try:
        assert cache.info()["files_hashed"] == 2
        cache.clear()
        assert cache.info()["files_hashed"] == 0 and cache.info()["answers"] == 0
    finally:
        cache.close()


@pytest.mark.parametrize("name, split, extra, labels", [
    ("msrvtt_retrieval", "1k-A", [], {"jsfusion_csv"}),
    ("msrvtt_retrieval", "full", [], {"annotations"}),
    ("msrvtt_category", "1k-A", [], {"annotations", "jsfusion_csv", "train_csv"}),
    ("youcook2_retrieval", "validation", [], {"clips_csv"}),
    ("youcook2_retrieval", "validation", ["task.clips=annotations"], {"annotations"}),
    ("youcook2_summary", "validation", [], {"annotations"}),
])
def test_benchmark_protocols_hash_the_files_their_split_reads(tmp_path_factory, host, name, split, extra, labels):
    from vfeval_benchmarks.synthetic import write_synthetic

    data = tmp_path_factory.getbasetemp() / "synthetic-msrvtt-youcook2"
    if not data.exists():
        write_synthetic(data, formats=["msrvtt", "youcook2"], n_videos=4, n_train_videos=0, size=32, duration=4.0,
                        workers=1)
    root = data / name.split("_")[0]
    cfg = load_run_config(None, [f"task.name={name}", f"task.root={root}", f"task.split={split}", *extra,
                                 "pipeline.encoder.name=pixel", "pipeline.aggregator.name=identity"], host.registry)
    task = host.registry.get("tasks", name).load()(cfg.task)
    files = task.protocol()["files"]
    assert set(files) == labels | {"synthetic_events"}
    assert files["synthetic_events"] == file_digest(root / "synthetic_events.json")
