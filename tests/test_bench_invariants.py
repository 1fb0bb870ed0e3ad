"""What the benchmarks' reports guarantee, whatever the timings: ratios from the same rounds, spreads that
bracket their figure, an MFU that cannot pass 100%, memory peaks of the process's own work, frame budgets
from a fitted line, the decoder's choice between seeking and decoding everything, and RESULTS.md's content.

Nothing here is timed: timings are given, or the test checks frames and bytes, not seconds.
"""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import harness  # noqa: E402
import masking  # noqa: E402
import run_all  # noqa: E402

from vfeval.config import SamplingConfig  # noqa: E402
from vfeval.requests import VideoWindow  # noqa: E402
from vfeval.testing import index_frames, read_index, write_video  # noqa: E402
from vfeval.video.reader import choose_strategy, keyframe_interval, read_all_frames_then_pick, read_window  # noqa: E402


def test_a_ratio_is_the_ratio_of_best_times_and_its_spread_brackets_it():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 6))
        num, den = rng.uniform(0.1, 5, n).tolist(), rng.uniform(0.1, 5, n).tolist()
        fig = harness.ratio("r", num, den)
        assert fig.value == pytest.approx(min(num) / min(den))
        assert fig.low <= fig.value * (1 + 1e-12) and fig.value <= fig.high * (1 + 1e-12)
        assert fig.rounds == n
    with pytest.raises(ValueError, match="same"):
        harness.ratio("r", [1.0, 2.0], [1.0])


def test_a_load_that_slows_a_whole_round_leaves_its_ratio_unchanged():
    # Round 2 ran while the machine was three times busier: per-round ratios do not see it.
    fig = harness.ratio("speed-up", [4.0, 12.0, 4.0], [1.0, 3.0, 1.0])
    assert (fig.value, fig.low, fig.high) == (4.0, 4.0, 4.0)


def test_targets():
    assert harness.meets(3.0, ">= 3") and not harness.meets(2.99, ">=3")
    assert harness.meets(1.5, "<= 1.5") and not harness.meets(1.6, "<= 1.5")
    assert harness.meets(50, "50-100") and not harness.meets(101, "50-100")
    assert harness.Figure("f", 2.0, 1.0, 3.0, target=">= 3").met is False
    assert harness.Figure("f", 2.0, 1.0, 3.0).met is None


def test_interleaved_rounds_run_every_variant_once_per_round_in_rotating_order():
    calls: list[str] = []
    times = harness.interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"}, rounds=3, warmup=1)
    assert calls == list("abc" + "bca" + "cab" + "abc")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_mfu_is_the_forward_rate_over_the_best_probe_of_the_same_round():
    flops = 6e9
    probes = {"square": (2e9, [0.02, 0.06]), "mlp": (1e9, [0.02, 0.03])}  # 100 and 33-50 GFLOP/s
    fig = masking.mfu(flops, [0.1, 0.3], probes)  # 60 and 20 GFLOP/s
    # Round 1: 60 / 100; round 2 ran at a third of the speed, probes too: 20 / 33.3.
    assert fig.value == pytest.approx(60.0) and fig.low == pytest.approx(60.0) and fig.high == pytest.approx(60.0)
    assert fig.unit == "%" and 0 < fig.value <= 100


def test_an_mfu_above_100_percent_is_refused_not_printed():
    with pytest.raises(masking.InvalidFigure, match="above 100%"):
        masking.mfu(2e9, [0.01], {"square": (2e9, [0.02])})  # the forward outran its reference
    with pytest.raises(ValueError, match="same"):
        masking.mfu(2e9, [0.01, 0.02], {"square": (2e9, [0.02])})


def test_frames_within_a_budget_come_from_a_fitted_line():
    frames = [64, 128, 256]
    peaks = [100 + 3.0 * f for f in frames]
    most, r2 = masking.frames_within(1000, frames, peaks, step=2)
    assert most == 300 and r2 == pytest.approx(1.0)  # 100 + 3 * 300 = 1000
    assert masking.frames_within(50, frames, peaks, step=2)[0] == 0
    with pytest.raises(ValueError):
        masking.frames_within(1000, [64, 128], [500.0, 400.0], step=2)


def test_a_memory_peak_is_the_growth_of_this_process_after_the_reset():
    from vfeval_videofirst import profile

    if profile.memory_source() != "VmHWM":
        pytest.skip("no /proc/self/status here")
    def touched(mib: int) -> mmap.mmap:
        # Fresh anonymous pages, each written once: malloc could instead hand back memory that an earlier
        # test freed and that is still resident, which adds nothing to the resident set.
        pages = mmap.mmap(-1, mib * 2**20)
        np.frombuffer(pages, dtype=np.uint8)[::4096] = 1
        return pages

    ballast = touched(48)  # a high-water mark the measurement must not see
    ballast.close()
    base = profile.reset_peak_rss()
    work = touched(24)
    grown = profile.peak_rss_mib() - base
    work.close()
    assert 20 <= grown <= 40, grown


def test_the_decoder_decodes_everything_only_when_seeking_could_save_nothing():
    # 16 frames over 3 minutes with a keyframe every 2 s: most intervals hold none.
    assert choose_strategy(16, 180.0, 2.0) == "seek"
    # 1 frame a second: every interval holds some, but dropping unreferenced frames still saves.
    assert choose_strategy(180, 180.0, 2.0) == "seek"
    # 4 frames a second: every interval holds some and every frame lies near a wanted one.
    assert choose_strategy(720, 180.0, 2.0) == "decode-all"
    # 4 frames a second but keyframes 20 s apart and only the first minute: still every interval.
    assert choose_strategy(240, 60.0, 20.0) == "decode-all"
    assert choose_strategy(720, 180.0, 0.0) == "seek"  # no keyframe interval found
    # Several readers share the video out between them, however dense the times.
    assert choose_strategy(720, 180.0, 2.0, readers=2) == "seek"


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 24 s at 8 fps, a keyframe every 12 frames (1.5 s).
    return write_video(tmp_path_factory.mktemp("v") / "v.mp4", index_frames(192), fps=8, gop=12)


def test_the_keyframe_interval_is_read_from_packet_headers(gop_video: Path):
    import av

    with av.open(str(gop_video)) as container:
        assert keyframe_interval(container, container.streams.video[0]) == pytest.approx(1.5)


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(mode="uniform", num_frames=5, size=0, crop=0),  # sparse: auto seeks
        SamplingConfig(mode="fps", fps=6.0, max_frames=1000, size=0, crop=0),  # dense: auto decodes everything
        SamplingConfig(mode="uniform", num_frames=3, size=0, crop=0, segments=5.0),
    ],
)
def test_every_strategy_returns_the_same_frames(gop_video: Path, sampling: SamplingConfig):
    for start, end in [(None, None), (3.3, 17.9), (10.0, 11.0)]:
        window = VideoWindow("v", str(gop_video), start, end)
        out = {s: read_window(window, sampling, threads=1, strategy=s) for s in ("auto", "seek", "decode-all")}
        for s in ("auto", "seek"):
            for a, b in zip(out[s], out["decode-all"], strict=True):
                assert np.array_equal(a.times, b.times)
                assert [read_index(f) for f in a.frames] == [read_index(f) for f in b.frames]
    with pytest.raises(ValueError, match="strategy"):
        read_window(VideoWindow("v", str(gop_video)), sampling, strategy="fastest")


def test_quickstart_phases_come_from_the_suites_lines_and_the_trainers_clocks(tmp_path):
    timeline = [
        (0.1, "suite quickstart"),
        (0.2, "prepare data: vfeval data synthetic ..."),
        (60.0, "train stage1: training"),
        (290.0, "train quickstart-stage1 ━━━━ 3000/3000 loss 1.2"),  # the progress bar is no suite line
        (300.0, "train stage2: training"),
        (420.0, "run egoschema / pixel: 20.0 (3.0 s, ...)"),
        (500.0, "leaderboard: 9 results added to leaderboard/results"),
        (510.0, "leaderboard site: ..."),
    ]
    for name, elapsed in (("train-quickstart-stage1", 230.0), ("train-quickstart-stage2", 100.0)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.jsonl").write_text(
            f'{{"step": 10, "elapsed": 1.0}}\n{{"step": 20, "elapsed": {elapsed}}}\n')
    got = dict(run_all.phases(timeline, 520.0, run_all.trained_seconds(tmp_path)))
    assert got == {
        "data (prepare steps, before the first training stage)": 60.0,
        "training train-quickstart-stage1": 230.0,
        "training train-quickstart-stage2": 100.0,
        "evaluations (every run of every task)": 110.0,
        "leaderboard site": 20.0,
    }
    assert sum(got.values()) == pytest.approx(520.0)


def test_results_md_has_the_machine_and_every_figure_with_its_spread():
    info = harness.machine() | {"gpu": None}
    figs = [harness.ratio("step speed-up", [3.0, 3.3], [1.0, 1.0], target=">= 3"),
            harness.single("peak", 123.0)]
    results = [
        {"bench": "masking", "figures": [vars(f) for f in figs], "command": "bench/masking.py", "wall_s": 1.0},
        {"bench": "cache", "stdout": "a table\n", "command": "bench/cache.py", "wall_s": 2.0},
        {"bench": "broken", "error": "ValueError: no", "command": "bench/x.py", "wall_s": 0.5},
        {"bench": "new", "skipped": "no --quick settings"},
    ]
    text = run_all.render(info, results, {"phases": [("data", 12.0)], "wall_s": 12.0}, quick=False)
    for needle in (info["cpu"], "numpy", "date (UTC)", "step speed-up", "3 - 3.3 (2 rounds)", ">= 3", "met",
                   "peak", "123", "a table", "failed: ValueError: no", "| data | 12 |", "skipped: no --quick"):
        assert needle in text, needle


@pytest.mark.parametrize("threads", [2, 3, 0])
def test_readers_side_by_side_return_the_frames_of_one_reader(gop_video: Path, threads: int):
    """Seeking with several threads cuts the times into runs, each read by its own demuxer and decoder: the
    frames, their times and a window's end past the last frame are those of one reader and of decode-all."""
    samplings = [SamplingConfig(mode="uniform", num_frames=7, size=0, crop=0),
                 SamplingConfig(mode="fps", fps=6.0, max_frames=1000, size=0, crop=0),
                 SamplingConfig(mode="uniform", num_frames=2, size=0, crop=0, segments=3.0)]
    for sampling in samplings:
        for start, end in [(None, None), (3.3, 17.9), (22.0, None)]:
            window = VideoWindow("v", str(gop_video), start, end)
            one = read_window(window, sampling, threads=1, strategy="seek")
            for strategy in ("seek", "auto"):
                many = read_window(window, sampling, threads=threads, strategy=strategy)
                assert len(many) == len(one)
                for a, b in zip(many, one, strict=True):
                    np.testing.assert_array_equal(a.frames, b.frames)
                    np.testing.assert_array_equal(a.times, b.times)
            every = read_all_frames_then_pick(window, sampling, threads=1)
            for a, b in zip(one, every, strict=True):
                np.testing.assert_array_equal(a.frames, b.frames)
