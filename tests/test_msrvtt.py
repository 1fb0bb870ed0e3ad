"""MSR-VTT: loaders against the real 1k-A list and the official json schema, scoring, end-to-end runs on
synthetic data, rescoring, batch-size invariance, and the nearest-caption aggregator that captions with a bank."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from vfeval_baselines.aggregators.nearest_caption import NearestCaptionConfig, make_nearest_caption
from vfeval_benchmarks.msrvtt import (
    MSRVTTCaptioningConfig,
    MSRVTTCategoryConfig,
    MSRVTTRetrievalConfig,
    make_captioning,
    make_category,
    make_retrieval,
)
from vfeval_benchmarks.synthetic import COLOURS, Scene, write_synthetic

from vfeval.config import load_run_config
from vfeval.errors import UsageError
from vfeval.pipeline import VideoInputs
from vfeval.requests import TEXT_EMBEDDING, VIDEO_EMBEDDING, VideoWindow, generate
from vfeval.runner import rescore, run
from vfeval.task import Sample, SampleResult

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "msrvtt"
JSFUSION = SHARED / "MSRVTT_JSFUSION_test.csv"
N_TEST = 6


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Synthetic MSR-VTT data (6 test, 6 train, 1 validate videos) and 4 captioned training videos."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, formats=["msrvtt"], n_videos=N_TEST, n_train_videos=4, size=32, duration=8.0, fps=4,
                    workers=1)
    return out


def overrides(tmp: Path, root: Path, task: str, *extra: str) -> list[str]:
    return [
        f"task.name={task}", f"task.root={root}", "pipeline.encoder.name=pixel",
        "pipeline.aggregator.name=identity", "pipeline.sampling.num_frames=4", "pipeline.sampling.size=32",
        "pipeline.sampling.crop=32", f"output.dir={tmp}/runs", f"output.cache_dir={tmp}/cache", *extra,
    ]


def run_task(host, tmp: Path, root: Path, task: str, *extra: str):
    return run(load_run_config(None, overrides(tmp, root, task, *extra), host.registry), host, progress=False)


def assert_rescore_is_identical(outcome, host) -> None:
    old, new = rescore(outcome.run_dir, host)
    assert json.dumps(new["metrics"], sort_keys=True) == json.dumps(old["metrics"], sort_keys=True)
    assert new["notes"] == old["notes"] and new["breakdowns"] == old["breakdowns"]


# -- loading -------------------------------------------------------------------------------------------


def official_json(videos: list[tuple[str, int, str]], captions_per_video: int = 3) -> dict:
    """An MSR-VTT json in the official schema for (video_id, category, split) entries, in the given order."""
    entries, sentences = [], []
    for i, (video_id, category, split) in enumerate(videos):
        entries.append({"category": category, "url": f"https://example.invalid/{video_id}", "video_id": video_id,
                        "start time": 1.5, "end time": 11.5, "split": split, "id": i})
        for k in range(captions_per_video):
            sentences.append({"caption": f"caption {k} of {video_id}", "video_id": video_id,
                              "sen_id": len(sentences)})
    return {"info": {"contributor": "test", "data_created": "", "version": "1.0", "year": ""},
            "videos": entries, "sentences": sentences}


def msrvtt_root(tmp_path: Path, data: dict | None = None) -> Path:
    root = tmp_path / "msrvtt"
    (root / "videos").mkdir(parents=True)
    if data is not None:
        (root / "MSRVTT_data.json").write_text(json.dumps(data))
    return root


def test_the_real_1k_a_list_loads_1000_caption_video_pairs(tmp_path):
    if not JSFUSION.is_file():
        pytest.skip(f"real annotation file not available: {JSFUSION}")
    root = msrvtt_root(tmp_path)
    shutil.copy(JSFUSION, root / "MSRVTT_JSFUSION_test.csv")
    (root / "videos" / "video9770.webm").write_bytes(b"")  # a .webm copy is used when there is no .mp4
    task = make_retrieval(MSRVTTRetrievalConfig(root=str(root), split="1k-A"))
    samples = task.load()
    assert len(samples) == 1000 and len({s.video.video_id for s in samples}) == 1000
    assert [s.id for s in samples[:2]] == ["ret0", "ret1"]
    first = samples[0]
    assert (first.video.video_id, first.group, first.target) == ("video9770",) * 3
    assert first.data["caption"] == "a person is connecting something to system"
    assert first.video.path == str(root / "videos" / "video9770.webm")
    assert samples[1].video.path == str(root / "videos" / "video9771.mp4")
    video, text = task.requests(first)
    assert (video.kind, video.video, text.kind, text.text) == (VIDEO_EMBEDDING, first.video, TEXT_EMBEDDING,
                                                               first.data["caption"])
    assert task.protocol()["options"] == {"video_to_text": "captions"}


def test_splits_come_from_the_split_field_of_either_json_layout(tmp_path):
    videos = [("video3", 7, "test"), ("video0", 1, "train"), ("video2", 4, "validate"), ("video1", 2, "train"),
              ("video4", 19, "test")]
    data = official_json(videos)
    combined = msrvtt_root(tmp_path / "a", data)
    official = msrvtt_root(tmp_path / "b")
    for name, keep in (("train_val_videodatainfo.json", {"train", "validate"}), ("test_videodatainfo.json", {"test"})):
        ids = {v for v, _, s in videos if s in keep}
        part = {**data, "videos": [v for v in data["videos"] if v["video_id"] in ids],
                "sentences": [s for s in data["sentences"] if s["video_id"] in ids]}
        (official / name).write_text(json.dumps(part))

    for root in (combined, official):
        full = make_retrieval(MSRVTTRetrievalConfig(root=str(root), split="full")).load()
        assert [s.id for s in full] == [f"sen{i}" for i in (0, 1, 2, 12, 13, 14)]
        assert {s.group for s in full} == {"video3", "video4"}
        captioning = make_captioning(MSRVTTCaptioningConfig(root=str(root))).load()
        assert [(s.id, len(s.target)) for s in captioning] == [("video3", 3), ("video4", 3)]
        category = make_category(MSRVTTCategoryConfig(root=str(root))).load()
        assert [(s.id, s.target, s.data["role"]) for s in category] == [
            ("video3", 7, "test"), ("video4", 19, "test"), ("video0", 1, "train"), ("video1", 2, "train")]


def test_the_1k_a_category_probe_trains_on_the_9k_list(tmp_path):
    videos = [(f"video{i}", i % 3, "train" if i < 6 else "test") for i in range(9)]
    root = msrvtt_root(tmp_path, official_json(videos, 1))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo6\nvideo2\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr7,video7,a cat\nret1,msr8,video8,\"a dog, running\"\n")
    samples = make_category(MSRVTTCategoryConfig(root=str(root), split="1k-A")).load()
    assert [(s.id, s.data["role"]) for s in samples] == [
        ("video7", "test"), ("video8", "test"), ("video0", "train"), ("video1", "train"), ("video6", "train"),
        ("video2", "train")]
    capped = make_category(MSRVTTCategoryConfig(root=str(root), split="1k-A", max_train_videos=2)).load()
    train = [s.id for s in capped if s.data["role"] == "train"]
    assert len(train) == 2 and train == [s.id for s in make_category(
        MSRVTTCategoryConfig(root=str(root), split="1k-A", max_train_videos=2)).load() if s.data["role"] == "train"]


def test_missing_and_malformed_files_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError) as info:
        make_retrieval(MSRVTTRetrievalConfig(root=str(tmp_path / "nowhere"), split="full")).load()
    message = str(info.value)
    assert "\n" not in message
    for expected in ("MSRVTT_data.json", "test_videodatainfo.json", "videos/{video_id}.mp4", "CLIP4Clip",
                     "vfeval data synthetic --out DIR --formats msrvtt", "task.root=DIR/msrvtt"):
        assert expected in message
    root = msrvtt_root(tmp_path)
    with pytest.raises(UsageError, match=r"MSRVTT_JSFUSION_test\.csv"):
        make_retrieval(MSRVTTRetrievalConfig(root=str(root))).load()

    data = official_json([("video0", 1, "test")])
    del data["videos"][0]["split"]
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r"videos\[0\] has no key 'split'"):
        make_captioning(MSRVTTCaptioningConfig(root=str(root))).load()
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,video_id\nret0,video0\n")
    with pytest.raises(UsageError, match="missing vid_key, sentence"):
        make_retrieval(MSRVTTRetrievalConfig(root=str(root))).load()
    with pytest.raises(UsageError, match="task.split"):
        make_retrieval(MSRVTTRetrievalConfig(root=str(root), split="test"))
    with pytest.raises(UsageError, match="task.video_to_text"):
        make_retrieval(MSRVTTRetrievalConfig(root=str(root), video_to_text="max"))


# -- scoring -------------------------------------------------------------------------------------------


def retrieval_results(video_vectors: dict[str, list[float]], captions: list[tuple[str, list[float]]]):
    task = make_retrieval(MSRVTTRetrievalConfig(root="/data/msrvtt", split="full"))
    out = []
    for i, (video_id, text) in enumerate(captions):
        sample = Sample(f"sen{i}", VideoWindow(video_id, f"/v/{video_id}.mp4"), video_id, {"caption": str(i)},
                        group=video_id)
        out.append(SampleResult(sample, [np.asarray(video_vectors[video_id], np.float32),
                                         np.asarray(text, np.float32)]))
    return task, out


def test_retrieval_scores_both_directions_and_leaves_failed_videos_out():
    vectors = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]}
    # Two captions of a, one of b: each finds its video first; c's caption is nearer to a (rank 1).
    task, results = retrieval_results(vectors, [("a", [1, 0, 0]), ("a", [1, 0.1, 0]), ("b", [0, 1, 0.9]),
                                                ("c", [1, 0, 0.5])])
    scores = task.score(results, seed=0)
    m = scores.metrics
    assert scores.headline == "t2v_R@1"
    assert m["t2v_R@1"].value == pytest.approx(75.0) and m["t2v_MdR"].value == 1.0
    assert m["t2v_MnR"].value == pytest.approx(1.25) and m["t2v_R@5"].value == 100.0
    assert m["t2v_R@1"].n == 4 and m["v2t_R@1"].n == 3
    # Videos a and b rank one of their captions first; for c, b's caption (0.67) beats its own (0.45).
    assert m["v2t_R@1"].value == pytest.approx(200 / 3) and m["v2t_MnR"].value == pytest.approx(4 / 3)
    assert any("best rank of any of its own captions" in n for n in scores.notes)
    assert [r.prediction["t2v_rank"] for r in results] == [0, 0, 0, 1]

    results[3] = SampleResult(results[3].sample, None, error="video file not found")
    scores = task.score(results, seed=0)
    assert scores.metrics["t2v_R@1"].value == 100.0 and scores.metrics["t2v_R@1"].n == 3
    assert any("1 of 4 captions failed" in n for n in scores.notes)
    assert any("against 2 candidate videos" in n for n in scores.notes)


def test_the_linear_probe_separates_separable_categories():
    rng = np.random.default_rng(0)
    task = make_category(MSRVTTCategoryConfig(root="/data/msrvtt", probe_c_grid=[0.1, 1.0], probe_cv_folds=2))
    results = []
    for i in range(40):
        label, role = i % 4, "train" if i < 24 else "test"
        emb = rng.normal(0, 0.1, 8).astype(np.float32)
        emb[label] += 3.0
        sample = Sample(f"video{i}", VideoWindow(f"video{i}", ""), label * 5, {"role": role}, group=f"video{i}")
        results.append(SampleResult(sample, [emb]))
    scores = task.score(results, seed=0)
    assert scores.metrics["accuracy"].value == 100.0 and scores.metrics["accuracy"].n == 16
    assert set(scores.breakdowns["accuracy_by_category"]) == {"0", "5", "10", "15"}
    assert "chosen by 2-fold stratified CV" in scores.notes[0]
    assert all(r.correct for r in results[24:]) and results[0].prediction is None  # train videos: not scored
    assert task.protocol()["options"]["probe"]["c_grid"] == [0.1, 1.0]


# -- end to end on synthetic data ------------------------------------------------------------------------


def test_synthetic_msrvtt_has_the_official_format(synthetic):
    root = synthetic / "msrvtt"
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert list(data) == ["info", "videos", "sentences"]
    splits = [v["split"] for v in data["videos"]]
    assert sorted(splits) == sorted(["train"] * 6 + ["validate"] + ["test"] * 6)
    assert splits != sorted(splits, key=["train", "validate", "test"].index)  # only the field tells them apart
    assert set(data["videos"][0]) == {"category", "url", "video_id", "start time", "end time", "split", "id"}
    assert set(data["sentences"][0]) == {"caption", "video_id", "sen_id"}
    assert len(data["sentences"]) == 5 * 13
    events = json.loads((root / "synthetic_events.json").read_text())
    for v in data["videos"]:  # the category is the colour of the first shape
        assert list(COLOURS)[v["category"]] == Scene.from_dict(events[v["video_id"]]["scene"]).events[0].colour
        assert (root / "videos" / f"{v['video_id']}.mp4").is_file()
    lines = (root / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()
    assert lines[0] == "key,vid_key,video_id,sentence" and len(lines) == 1 + N_TEST
    assert (root / "MSRVTT_train.9k.csv").read_text().splitlines()[0] == "video_id"


@pytest.mark.parametrize("split", ["1k-A", "full"])
def test_retrieval_end_to_end_rescore_and_batch_size(synthetic, host, tmp_path, split):
    root = synthetic / "msrvtt"
    outcome = run_task(host, tmp_path / "b4", root, "msrvtt_retrieval", f"task.split={split}", "run.batch_size=4")
    res = json.loads((outcome.run_dir / "results.json").read_text())
    assert res["task"]["n"] == (N_TEST if split == "1k-A" else 5 * N_TEST) and res["task"]["n_failed"] == 0
    assert res["headline"] == "t2v_R@1" and res["protocol"]["options"]["data"] == "synthetic"
    assert {"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", "v2t_MnR"} <= set(res["metrics"])
    assert all(m["ci95"] is not None for m in res["metrics"].values())
    assert outcome.stats.windows_decoded == N_TEST  # one decode per video, whatever its number of captions
    assert res["metrics"]["t2v_R@1"]["value"] > 100 / N_TEST  # colour words find their videos above chance
    assert_rescore_is_identical(outcome, host)

    single = run_task(host, tmp_path / "b1", root, "msrvtt_retrieval", f"task.split={split}", "run.batch_size=1")
    assert json.dumps(single.result["metrics"], sort_keys=True) == json.dumps(res["metrics"], sort_keys=True)


def test_category_end_to_end_and_rescore(synthetic, host, tmp_path):
    outcome = run_task(host, tmp_path, synthetic / "msrvtt", "msrvtt_category", "task.max_train_videos=4")
    res = outcome.result
    assert res["task"]["n"] == N_TEST + 4 and res["metrics"]["accuracy"]["n"] == N_TEST
    assert res["protocol"]["options"]["max_train_videos"] == 4 and res["protocol"]["options"]["probe"]["c"] == 1.0
    lines = [json.loads(line) for line in (outcome.run_dir / "samples.jsonl").read_text().splitlines()]
    assert all(isinstance(x["prediction"], int) for x in lines if x["data"]["role"] == "test")
    assert_rescore_is_identical(outcome, host)


def test_captioning_end_to_end_with_the_nearest_caption_baseline(synthetic, host, tmp_path):
    bank = synthetic / "train" / "captions.jsonl"
    outcome = run_task(host, tmp_path, synthetic / "msrvtt", "msrvtt_captioning",
                       "pipeline.aggregator.name=nearest-caption", f"pipeline.aggregator.bank={bank}")
    res = outcome.result
    assert res["task"]["n"] == N_TEST and res["headline"] == "CIDEr"
    assert set(res["metrics"]) == {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert all(0 <= m["value"] <= 1000 and m["ci95"] is not None for m in res["metrics"].values())
    assert res["protocol"]["options"]["references"] == "all"
    bank_captions = {json.loads(line)["caption"] for line in bank.read_text().splitlines()}
    assert {r.prediction for r in outcome.results} <= bank_captions
    assert all(len(r.sample.target) == 5 for r in outcome.results)  # every reference, none dropped
    assert_rescore_is_identical(outcome, host)

    with pytest.raises(UsageError, match="pipeline.aggregator.bank"):
        run_task(host, tmp_path, synthetic / "msrvtt", "msrvtt_captioning",
                 "pipeline.aggregator.name=nearest-caption", f"pipeline.aggregator.bank={tmp_path}/absent.jsonl")
    with pytest.raises(UsageError, match="cannot answer 'generate'.*nearest-caption"):
        run_task(host, tmp_path, synthetic / "msrvtt", "msrvtt_captioning")


# -- the nearest-caption aggregator -------------------------------------------------------------------


class AxisEncoder:
    """A text encoder with one axis per letter x, y, z: a text's embedding counts them."""

    def embed_text(self, texts):
        return np.array([[t.count("x"), t.count("y"), t.count("z")] for t in texts], dtype=np.float32)


def test_nearest_caption_picks_the_closest_bank_caption(tmp_path):
    bank = tmp_path / "bank.csv"
    bank.write_text("id,caption\n1,x only\n2,y only\n3,again y only\n4,z and y\n")
    aggregator = make_nearest_caption(NearestCaptionConfig(bank=str(bank)))
    aggregator.bind(AxisEncoder())
    segments = [VideoInputs([(0, 1), (1, 2)], np.array([[0, 1, 0], [0, 2, 0.1]], np.float32)),
                VideoInputs([(0, 1)], np.array([[0, 0.1, 5]], np.float32))]
    answers = aggregator.answer([generate(None, "p"), generate(None, "p")], segments)
    assert answers == ["y only", "z and y"]  # ties ("again y only" scores the same) go to the first

    text = tmp_path / "bank.txt"
    text.write_text("x only\n\n  y only  \n")
    jsonl = tmp_path / "bank.jsonl"
    jsonl.write_text('{"video": "v.mp4", "caption": "x only"}\n"y only"\n')
    a, b = (make_nearest_caption(NearestCaptionConfig(bank=str(p))) for p in (text, jsonl))
    assert a.captions == b.captions == ["x only", "y only"]
    assert a.fingerprint()["bank_sha256"] != b.fingerprint()["bank_sha256"]
    text.write_text("x only\ny only\nz\n")
    assert make_nearest_caption(NearestCaptionConfig(bank=str(text))).fingerprint() != a.fingerprint()
    with pytest.raises(UsageError, match="not found"):
        make_nearest_caption(NearestCaptionConfig(bank=str(tmp_path / "none.jsonl")))
    with pytest.raises(UsageError, match="missing value for 'pipeline.aggregator.bank'"):
        make_nearest_caption(NearestCaptionConfig())


def test_a_bank_pattern_retrieves_only_the_captions_it_matches(tmp_path):
    """The floor of a captioner trained on one kind of caption retrieves from that kind alone."""
    bank = tmp_path / "bank.txt"
    bank.write_text("a fact about y\nthe events: x then z\nthe events: y then x\n")
    everything = make_nearest_caption(NearestCaptionConfig(bank=str(bank)))
    events = make_nearest_caption(NearestCaptionConfig(bank=str(bank), pattern=r"^the events: "))
    assert events.captions == ["the events: x then z", "the events: y then x"]
    segments = [VideoInputs([(0, 1)], np.array([[0, 1, 0]], np.float32))]
    for aggregator in (everything, events):
        aggregator.bind(AxisEncoder())
    assert everything.answer([generate(None, "p")], segments) == ["a fact about y"]
    assert events.answer([generate(None, "p")], segments) == ["the events: y then x"]
    assert "bank_pattern" not in everything.fingerprint() and events.fingerprint() != everything.fingerprint()
    with pytest.raises(UsageError, match="'pipeline.aggregator.pattern' 'nothing' matches no caption"):
        make_nearest_caption(NearestCaptionConfig(bank=str(bank), pattern="nothing"))
    with pytest.raises(UsageError, match="'pipeline.aggregator.pattern'.*not a regular expression"):
        make_nearest_caption(NearestCaptionConfig(bank=str(bank), pattern="("))
