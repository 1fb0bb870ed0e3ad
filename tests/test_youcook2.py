"""YouCook2: the real MIL-NCE clip list, the annotation schema, video layouts, and every task end to end on
synthetic data with rescoring."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import av
import pytest
import typer
from typer.testing import CliRunner
from vfeval_benchmarks.commands import add_data_commands
from vfeval_benchmarks.synthetic import write_synthetic
from vfeval_benchmarks.youcook2 import (
    YouCook2CaptioningConfig,
    YouCook2RetrievalConfig,
    YouCook2SummaryConfig,
    make_captioning,
    make_retrieval,
    make_summary,
)

from vfeval.config import load_run_config
from vfeval.errors import UsageError
from vfeval.requests import GENERATE, TEXT_EMBEDDING, VIDEO_EMBEDDING
from vfeval.runner import rescore, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "youcook2"
CLIPS_CSV = SHARED / "validation_youcook.csv"
N_VIDEOS = 4
STEPS = 6  # 4 events + 2: the synthetic YouCook2 videos are longer than the other formats'


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, formats=["youcook2"], n_videos=N_VIDEOS, n_train_videos=3, size=32, duration=12.0, fps=4,
                    workers=1)
    return out


def run_task(host, tmp: Path, root: Path, task: str, *extra: str):
    cfg = load_run_config(None, [
        f"task.name={task}", f"task.root={root}", "pipeline.encoder.name=pixel", "pipeline.aggregator.name=identity",
        "pipeline.sampling.num_frames=4", "pipeline.sampling.size=32", "pipeline.sampling.crop=32",
        f"output.dir={tmp}/runs", f"output.cache_dir={tmp}/cache", *extra,
    ], host.registry)
    return run(cfg, host, progress=False)


def assert_rescore_is_identical(outcome, host) -> None:
    old, new = rescore(outcome.run_dir, host)
    assert json.dumps(new["metrics"], sort_keys=True) == json.dumps(old["metrics"], sort_keys=True)
    assert new["notes"] == old["notes"]


def annotations(videos: dict[str, tuple[str, str, list[tuple[float, float, str]]]]) -> dict:
    """``{"database": ...}`` in YouCook2's schema from ``{video_id: (subset, recipe_type, [(start, end, sentence)])}``."""
    return {"database": {
        vid: {"duration": 300.0, "subset": subset, "recipe_type": recipe, "video_url": f"https://x.invalid/{vid}",
              "annotations": [{"segment": [s, e], "id": i, "sentence": text} for i, (s, e, text) in enumerate(steps)]}
        for vid, (subset, recipe, steps) in videos.items()
    }}


def youcook2_root(tmp_path: Path, data: dict | None = None) -> Path:
    root = tmp_path / "youcook2"
    (root / "raw_videos").mkdir(parents=True)
    if data is not None:
        (root / "youcookii_annotations_trainval.json").write_text(json.dumps(data))
    return root


# -- loading -------------------------------------------------------------------------------------------


def test_the_real_clip_list_loads_3350_clips_of_436_videos(tmp_path):
    if not CLIPS_CSV.is_file():
        pytest.skip(f"real annotation file not available: {CLIPS_CSV}")
    root = youcook2_root(tmp_path)
    shutil.copy(CLIPS_CSV, root / "validation_youcook.csv")
    mkv = root / "raw_videos" / "validation" / "226" / "xHr8X2Wpmno.mkv"
    mkv.parent.mkdir(parents=True)
    mkv.write_bytes(b"")  # the first video exists only as .mkv
    task = make_retrieval(YouCook2RetrievalConfig(root=str(root)))
    samples = task.load()
    assert len(samples) == 3350 and len({s.group for s in samples}) == 436
    assert len({s.id for s in samples}) == 3350
    first = samples[0]
    assert (first.id, first.group, first.data["caption"]) == ("xHr8X2Wpmno_0", "xHr8X2Wpmno",
                                                              "pick the ends off the verdalago")
    assert (first.video.start, first.video.end, first.video.path) == (47.0, 60.0, str(mkv))
    other = next(s for s in samples if s.group != first.group)
    assert Path(other.video.path).parent.parent == root / "raw_videos" / "validation"
    assert other.video.path.endswith(f"{other.group}.mp4")
    video, text = task.requests(first)
    assert (video.kind, video.video, text.kind, text.text) == (VIDEO_EMBEDDING, first.video, TEXT_EMBEDDING,
                                                               first.data["caption"])
    assert task.protocol()["options"] == {"clips": "csv"}


def test_a_flat_video_folder_is_used_only_when_configured(tmp_path):
    root = youcook2_root(tmp_path, annotations({"abc": ("validation", "101", [(1, 5, "cut")])}))
    (root / "raw_videos" / "abc.mp4").write_bytes(b"")
    split = make_captioning(YouCook2CaptioningConfig(root=str(root))).load()
    assert split[0].video.path == str(root / "raw_videos" / "validation" / "101" / "abc.mp4")
    flat = make_captioning(YouCook2CaptioningConfig(root=str(root), video_layout="flat")).load()
    assert flat[0].video.path == str(root / "raw_videos" / "abc.mp4")


def test_annotations_give_clips_captions_and_ordered_summaries(tmp_path):
    data = annotations({
        "v1": ("validation", "101", [(30, 40, "fry the onion"), (2, 9.5, "cut the onion"), (12, 20, "heat oil")]),
        "v2": ("training", "101", [(0, 5, "boil water")]),
        "v3": ("validation", "226", [(5, 8, "mix"), (1, 3, "pour")]),
    })
    root = youcook2_root(tmp_path, data)
    clips = make_captioning(YouCook2CaptioningConfig(root=str(root))).load()
    assert [s.id for s in clips] == ["v1_0", "v1_1", "v1_2", "v3_0", "v3_1"]  # validation only
    assert clips[1].target == ["cut the onion"] and (clips[1].video.start, clips[1].video.end) == (2.0, 9.5)
    assert make_captioning(YouCook2CaptioningConfig(root=str(root))).requests(clips[0])[0].kind == GENERATE

    summary = make_summary(YouCook2SummaryConfig(root=str(root)))
    samples = summary.load()
    assert [(s.id, s.target) for s in samples] == [
        ("v1", ["cut the onion. heat oil. fry the onion"]), ("v3", ["pour. mix"])]
    assert (samples[0].video.start, samples[0].video.end) == (None, None)  # the whole video
    options = summary.protocol()["options"]
    assert options["target"] == "join_steps" and options["separator"] == ". "
    spaced = make_summary(YouCook2SummaryConfig(root=str(root), separator=" ")).load()
    assert spaced[1].target == ["pour mix"]

    by_annotations = make_retrieval(YouCook2RetrievalConfig(root=str(root), clips="annotations")).load()
    assert [s.id for s in by_annotations] == [s.id for s in clips]


def test_missing_and_malformed_files_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError) as info:
        make_summary(YouCook2SummaryConfig(root=str(tmp_path / "nowhere"))).load()
    message = str(info.value)
    assert "\n" not in message
    for expected in ("youcookii_annotations_trainval.json", "<subset>/<recipe_type>/<video_id>.mp4",
                     "vfeval data synthetic --out DIR --formats youcook2", "task.root=DIR/youcook2"):
        assert expected in message
    data = annotations({"v1": ("validation", "101", [(5, 2, "backwards")])})
    with pytest.raises(UsageError, match=r"database\['v1'\] annotations\[0\].*start must precede end"):
        make_captioning(YouCook2CaptioningConfig(root=str(youcook2_root(tmp_path / "a", data)))).load()
    root = youcook2_root(tmp_path / "b")
    (root / "validation_youcook.csv").write_text("end,start,task,text,video_id\nten,0,101,cut,v1\n")
    with pytest.raises(UsageError, match="line 2: start and end must be numbers"):
        make_retrieval(YouCook2RetrievalConfig(root=str(root))).load()
    with pytest.raises(UsageError, match="task.video_layout"):
        make_retrieval(YouCook2RetrievalConfig(root=str(root), video_layout="nested"))
    with pytest.raises(UsageError, match="task.split"):
        make_retrieval(YouCook2RetrievalConfig(root=str(root), split="training"))


# -- end to end on synthetic data ------------------------------------------------------------------------


def test_synthetic_youcook2_has_the_official_format(synthetic):
    root = synthetic / "youcook2"
    database = json.loads((root / "youcookii_annotations_trainval.json").read_text())["database"]
    subsets = [v["subset"] for v in database.values()]
    assert subsets.count("validation") == N_VIDEOS and subsets.count("training") == N_VIDEOS // 2
    for vid, entry in database.items():
        assert set(entry) == {"duration", "subset", "recipe_type", "annotations", "video_url"}
        assert len(vid) == 11 and len(entry["annotations"]) == STEPS
        assert all(type(t) is int for a in entry["annotations"] for t in a["segment"])
        assert (root / "raw_videos" / entry["subset"] / entry["recipe_type"] / f"{vid}.mp4").is_file()
    lines = (root / "validation_youcook.csv").read_text().splitlines()
    assert lines[0] == "end,start,task,text,video_id" and len(lines) == 1 + N_VIDEOS * STEPS


def test_retrieval_end_to_end_counts_the_clips_evaluated(synthetic, host, tmp_path):
    root = synthetic / "youcook2"
    victim = next((root / "raw_videos" / "validation").rglob("*.mp4"))
    copy = tmp_path / "youcook2"
    shutil.copytree(root, copy)
    (copy / victim.relative_to(root)).unlink()  # one missing video: its clips fail, the run goes on
    outcome = run_task(host, tmp_path, copy, "youcook2_retrieval")
    res = json.loads((outcome.run_dir / "results.json").read_text())
    evaluated = (N_VIDEOS - 1) * STEPS
    assert res["task"]["n"] == N_VIDEOS * STEPS and res["task"]["n_failed"] == STEPS and not res["complete"]
    assert res["metrics"]["t2v_R@1"]["n"] == evaluated and "v2t_R@1" not in res["metrics"]
    assert any(f"{evaluated} captions scored against {evaluated} candidate clips from {N_VIDEOS - 1} videos" in n
               for n in res["notes"])
    assert res["protocol"]["options"] == {"clips": "csv", "data": "synthetic"}
    assert_rescore_is_identical(outcome, host)


def test_captioning_micro_and_macro_end_to_end(synthetic, host, tmp_path):
    bank = synthetic / "train" / "captions.jsonl"
    outcome = run_task(host, tmp_path, synthetic / "youcook2", "youcook2_captioning",
                       "pipeline.aggregator.name=nearest-caption", f"pipeline.aggregator.bank={bank}")
    metrics = outcome.result["metrics"]
    micro = ["BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert set(metrics) == {*micro, *(f"macro_{m}" for m in micro if m != "METEOR")}
    assert metrics["CIDEr"]["n"] == N_VIDEOS * STEPS and metrics["macro_CIDEr"]["n"] == N_VIDEOS
    assert metrics["macro_ROUGE-L"]["value"] == pytest.approx(metrics["ROUGE-L"]["value"])  # equal clip counts
    assert any(n.startswith("macro_*: mean over videos") for n in outcome.result["notes"])
    assert_rescore_is_identical(outcome, host)


def test_summary_end_to_end(synthetic, host, tmp_path):
    bank = synthetic / "train" / "captions.jsonl"
    outcome = run_task(host, tmp_path, synthetic / "youcook2", "youcook2_summary",
                       "pipeline.aggregator.name=nearest-caption", f"pipeline.aggregator.bank={bank}",
                       "pipeline.sampling.segments=6")
    res = outcome.result
    assert set(res["metrics"]) == {"ROUGE-L", "CIDEr"} and res["task"]["n"] == N_VIDEOS
    assert res["protocol"]["options"]["separator"] == ". " and res["protocol"]["options"]["data"] == "synthetic"
    assert all(r.sample.target[0].count(". ") == STEPS - 1 for r in outcome.results)
    assert res["metrics"]["ROUGE-L"]["value"] > 0
    assert_rescore_is_identical(outcome, host)


def test_all_three_formats_from_the_command_line_and_the_same_seed_gives_the_same_data(tmp_path):
    app = typer.Typer()
    add_data_commands(app)
    app.command("other")(lambda: None)  # with one command typer would fold the sub-app away
    args = "data synthetic --videos 2 --train-videos 1 --size 32 --duration 4 --formats egoschema,msrvtt,youcook2"
    for out, workers in (("a", "1"), ("b", "2")):
        result = CliRunner().invoke(app, [*args.split(), "--workers", workers, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    a, b = tmp_path / "a", tmp_path / "b"
    assert {p.name for p in a.iterdir()} == {"egoschema", "msrvtt", "youcook2", "train", "README.md",
                                            ".vfeval_synthetic.json"}
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files:
        if name.suffix == ".mp4":  # written by other processes, yet the same pixels
            assert decoded(a / name) == decoded(b / name), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def decoded(path: Path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest.update(frame.to_ndarray(format="rgb24").tobytes())
    return digest.hexdigest()
