"""The video pipeline of a run: failures become data, decoding runs in worker processes, frames are recorded.

Datasets are EgoSchema-format folders of small real videos: each shows a coloured square and the question
asks for its colour, so the pixel encoder's answers (and so the metrics) depend on the decoded frames.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from vfeval import hookimpl
from vfeval.config import SamplingConfig, load_run_config
from vfeval.errors import DataError, UsageError
from vfeval.requests import VideoWindow
from vfeval.runner import run
from vfeval.specs import DecoderSpec
from vfeval.testing import index_frames, registered_plugin, write_video
from vfeval.video import backends, get_decoder
from vfeval.video.pool import open_pool

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30),
           "magenta": (220, 40, 200)}
FRAME_TIMES = [[0.25, 0.75, 1.25, 1.75]]  # 4 uniform frames of a 2 s video at 4 fps: the span centres


def colour_dataset(root: Path, n: int, keep: list[int] | None = None, seed: int = 0) -> None:
    """``n`` questions (or only those in ``keep``) with videos ``videos/q0000.mkv``... About a fifth of the
    videos show another colour than the right answer, so accuracy is below 100%."""
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    questions, answers = [], {}
    for i in range(n):
        uid = f"q{i:04d}"
        colour, shown = names[int(rng.integers(5))], names[int(rng.integers(5))]
        options = list(rng.permutation(names))
        misleading = rng.random() < 0.2
        if keep is not None and i not in keep:
            continue
        frames = np.full((8, 32, 32, 3), 40, np.uint8)
        frames[:, 8:24, 8:24] = COLOURS[shown if misleading else colour]
        write_video(root / "videos" / f"{uid}.mkv", frames, fps=4)
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour is the square?",
                          **{f"option {k}": f"the {o} one" for k, o in enumerate(options)}})
        answers[uid] = options.index(colour)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))


def config(tmp_path: Path, host, root: Path, name: str, *overrides: str):
    return load_run_config(None, [
        "task.name=egoschema", f"task.root={root}", "task.split=subset", "task.video_ext=mkv",
        "pipeline.encoder.name=pixel", "pipeline.aggregator.name=identity",
        "pipeline.sampling.num_frames=4", "pipeline.sampling.size=32", "pipeline.sampling.crop=32",
        "run.batch_size=4", f"output.dir={tmp_path / 'runs'}", f"output.name={name}",
        f"output.cache_dir={tmp_path / 'cache' / name}", *overrides,
    ], host.registry)


def lines(outcome) -> dict[str, dict]:
    text = (outcome.run_dir / "samples.jsonl").read_text().splitlines()
    return {d["id"]: d for d in map(json.loads, text)}


def worker_processes() -> list[int]:
    """Our children that run a decoding worker (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"vfeval.video.worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_bad_videos_are_failed_samples_and_the_good_ones_score_as_a_clean_dataset(tmp_path, host):
    root = tmp_path / "ego"
    colour_dataset(root, 40)
    videos = root / "videos"
    (videos / "q0003.mkv").write_bytes(np.random.default_rng(1).bytes(3000))  # corrupt
    write_video(videos / "q0011.mkv", np.full((40, 32, 32, 3), 90, np.uint8), fps=4)
    data = (videos / "q0011.mkv").read_bytes()
    (videos / "q0011.mkv").write_bytes(data[: len(data) // 2])  # truncated: the header still says 10 s
    (videos / "q0022.mkv").write_bytes(b"")  # zero bytes
    (videos / "q0035.mkv").unlink()  # missing
    bad = {3: "corrupt", 11: "truncated", 22: "empty", 35: "missing"}

    outcome = run(config(tmp_path, host, root, "dirty"), host, progress=False)
    res = outcome.result
    assert res["failures"] == {"corrupt": 1, "empty": 1, "missing": 1, "truncated": 1}
    assert res["task"]["n"] == 40 and res["task"]["n_failed"] == 4 and res["complete"] is False
    samples = lines(outcome)
    for i, reason in bad.items():
        assert samples[f"q{i:04d}"]["error"].startswith(f"{reason}: ")
        assert "frame_times" not in samples[f"q{i:04d}"]
    good = [s for s in samples.values() if not s["error"]]
    assert len(good) == 36 and all(s["frame_times"] == FRAME_TIMES for s in good)
    assert res["pipeline"]["decoder"]["name"] == "pyav"
    assert res["pipeline"]["decoder"]["pyav"] == av.__version__ and "libavcodec" in res["pipeline"]["decoder"]

    clean_root = tmp_path / "clean"
    colour_dataset(clean_root, 40, keep=[i for i in range(40) if i not in bad])
    clean = run(config(tmp_path, host, clean_root, "clean"), host, progress=False).result
    assert clean["complete"] is True and clean["task"]["n"] == 36
    assert 0 < clean["metrics"]["accuracy"]["value"] < 100
    assert res["metrics"] == clean["metrics"] and res["breakdowns"] == clean["breakdowns"]

    # Answers from the cache keep their frame times; failed videos are not decoded again.
    again = run(config(tmp_path, host, root, "dirty"), host, progress=False)
    assert again.stats.cached == 40 and again.stats.windows_decoded == 0
    assert lines(again) == samples


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_hung_decode_becomes_a_timeout_failure(tmp_path, host, mode):
    root = tmp_path / "ego"
    colour_dataset(root, 6)
    fifo = root / "videos" / "q0002.mkv"
    fifo.unlink()
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: it never does
    cfg = config(tmp_path, host, root, mode, f"run.decode={mode}", "run.workers=2", "run.video_timeout=3")
    try:
        res = run(cfg, host, progress=False).result
    finally:  # let an abandoned thread's open() return
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK) if mode == "thread" else None
        if fd is not None:
            os.close(fd)
    assert res["failures"] == {"timeout": 1} and res["task"]["n_failed"] == 1
    error = lines(run(cfg, host, progress=False))["q0002"]["error"]
    assert error.startswith("timeout: ") and "q0002.mkv" in error
    if sys.platform.startswith("linux"):
        assert worker_processes() == []  # the hung worker was killed, the others stopped


def test_process_and_inline_decoding_give_identical_results(tmp_path, host):
    root = tmp_path / "ego"
    colour_dataset(root, 12)
    (root / "videos" / "q0005.mkv").write_bytes(b"")
    got = {}
    for mode in ("process", "inline"):
        outcome = run(config(tmp_path, host, root, mode, f"run.decode={mode}", "run.workers=2"), host,
                      progress=False)
        assert outcome.stats.windows_decoded == 11
        got[mode] = (outcome.result, lines(outcome))
    (proc, proc_lines), (inline, inline_lines) = got["process"], got["inline"]
    assert proc["metrics"] == inline["metrics"] and proc["failures"] == inline["failures"] == {"empty": 1}
    assert proc["pipeline"]["fingerprint"] == inline["pipeline"]["fingerprint"]
    assert proc_lines == inline_lines


def test_decoder_backends_agree_on_the_frames_they_return(tmp_path):
    path = write_video(tmp_path / "index.mp4", index_frames(120, 48, 64), fps=12, gop=40)
    seek, reference = get_decoder("pyav"), get_decoder("pyav-decode-all")
    assert isinstance(seek, backends.VideoBackend) and seek.version() == reference.version()
    samplings = [SamplingConfig(num_frames=7, size=32, crop=32), SamplingConfig(mode="fps", fps=2.5, size=0, crop=0),
                 SamplingConfig(num_frames=3, size=0, crop=0, segments=3.0)]
    for window in (VideoWindow("v", str(path)), VideoWindow("v", str(path), 2.3, 8.9)):
        for sampling in samplings:
            a, b = seek.read_window(window, sampling), reference.read_window(window, sampling)
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x.times, y.times)
                assert np.abs(x.frames.astype(int) - y.frames.astype(int)).max() <= 2  # codec tolerance
    assert seek.probe(path).duration == reference.probe(path).duration == 10.0


def test_the_decoder_is_chosen_by_config_and_recorded_in_the_fingerprint(tmp_path, host):
    root = tmp_path / "ego"
    colour_dataset(root, 8)
    seek = run(config(tmp_path, host, root, "seek"), host, progress=False)
    full = run(config(tmp_path, host, root, "full", "pipeline.sampling.decoder=pyav-decode-all"), host,
               progress=False)
    assert full.result["pipeline"]["decoder"]["name"] == "pyav-decode-all"
    assert full.result["pipeline"]["fingerprint"] != seek.result["pipeline"]["fingerprint"]
    assert full.result["metrics"] == seek.result["metrics"]
    assert [s["frame_times"] for s in lines(full).values()] == [s["frame_times"] for s in lines(seek).values()]
    with pytest.raises(UsageError, match=r"pipeline\.sampling\.decoder.*did you mean: pyav"):
        config(tmp_path, host, root, "bad", "pipeline.sampling.decoder=pyavv")
    with pytest.raises(UsageError, match=r"run\.decode"):
        config(tmp_path, host, root, "bad", "run.decode=fork")


PLUGIN_BACKEND = '''
import os, signal
from vfeval.video.backends import PyAVBackend

class Fragile(PyAVBackend):
    """PyAV, except that it crashes the way a bug inside FFmpeg would on files named crash*."""
    name = "fragile"

    def version(self):
        return {"fragile": "1", **super().version()}

    def read_window(self, window, sampling):
        if os.path.basename(os.path.realpath(window.path)).startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().read_window(window, sampling)
'''


def test_a_plugin_decoder_runs_in_worker_processes_and_a_crash_is_a_failed_sample(tmp_path, host, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "fragile_decoder.py").write_text(PLUGIN_BACKEND)
    monkeypatch.syspath_prepend(str(site))  # workers import from the caller's sys.path

    class FragilePlugin:
        @hookimpl
        def register_decoders(self, register):
            register(DecoderSpec(name="fragile", factory="fragile_decoder:Fragile"))

    with registered_plugin(host, FragilePlugin(), "fragile-plugin"):
        _crash_in_a_worker(tmp_path, host)


def _crash_in_a_worker(tmp_path: Path, host) -> None:
    root = tmp_path / "ego"
    colour_dataset(root, 8)
    os.replace(root / "videos" / "q0004.mkv", root / "videos" / "crash.mkv")
    os.symlink(root / "videos" / "crash.mkv", root / "videos" / "q0004.mkv")
    cfg = config(tmp_path, host, root, "fragile", "pipeline.sampling.decoder=fragile", "run.decode=process",
                 "run.workers=2")
    outcome = run(cfg, host, progress=False)
    assert outcome.result["pipeline"]["decoder"]["fragile"] == "1"
    assert outcome.result["failures"] == {"crash": 1}
    error = lines(outcome)["q0004"]["error"]
    assert error.startswith("crash: ") and f"signal {int(signal.SIGSEGV)}" in error
    assert outcome.stats.windows_decoded == 7


def test_workers_that_cannot_start_fail_their_windows_instead_of_hanging(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "aborting_decoder.py").write_text("import os\nos._exit(3)  # a library that aborts as it loads\n")
    monkeypatch.syspath_prepend(str(site))
    aborting = DecoderSpec(name="aborting", factory="aborting_decoder:Backend")
    path = write_video(tmp_path / "v.mp4", index_frames(8), fps=4)
    with open_pool("process", workers=1, timeout=30.0, decoder=aborting, windows=2) as pool:
        jobs = [pool.submit(VideoWindow(f"v{i}", str(path)), SamplingConfig(num_frames=2)) for i in range(2)]
        for job in jobs:
            with pytest.raises(DataError, match=r"^decode-error: decoding workers cannot start \(exit code 3"):
                job.result()
