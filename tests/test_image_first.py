"""Image-first and segment-based baselines: ``hf-clip`` (frames as images, mean-pooled), and any encoder
applied per segment with ``mean`` pooling across segments, on EgoSchema-format data."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from vfeval.config import SamplingConfig, load_run_config
from vfeval.requests import VideoWindow
from vfeval.runner import run
from vfeval.testing import write_video

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30)}
FPS = 4


def pair_egoschema(root: Path, n: int, seed: int = 0) -> None:
    """EgoSchema-format data: 2 s of one colour, then 2 s of another; the question asks which two appeared."""
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    pairs = [f"{a} and {b}" for a, b in combinations(COLOURS, 2)]
    questions, answers = [], {}
    for i in range(n):
        uid = f"q{i:04d}"
        first, second = (list(COLOURS)[j] for j in rng.permutation(len(COLOURS))[:2])
        frames = np.full((4 * FPS, 32, 32, 3), 40, np.uint8)
        frames[: 2 * FPS, 8:24, 8:24] = COLOURS[first]
        frames[2 * FPS:, 8:24, 8:24] = COLOURS[second]
        write_video(root / "videos" / f"{uid}.mp4", frames, fps=FPS)
        right = next(p for p in pairs if set(p.split(" and ")) == {first, second})
        options = [right, *[pairs[j] for j in rng.permutation(len(pairs)) if pairs[j] != right][:4]]
        options = [options[j] for j in rng.permutation(5)]
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colours appeared?",
                          **{f"option {k}": o for k, o in enumerate(options)}})
        answers[uid] = options.index(right)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def test_segments_with_mean_pooling_on_egoschema(tmp_path, host):
    """configs/baselines/egoschema_segments.yaml: each segment encoded alone, the mean of unit embeddings."""
    from vfeval_baselines.encoders.pixel import PixelColourEncoder

    from vfeval.video.reader import read_window

    root = tmp_path / "ego"
    pair_egoschema(root, 6)
    overrides = [f"task.root={root}", "pipeline.sampling.segments=2", "pipeline.sampling.size=32",
                 "pipeline.sampling.crop=32", f"output.dir={tmp_path}/runs", f"output.cache_dir={tmp_path}/cache"]
    cfg = load_run_config(REPO / "configs" / "baselines" / "egoschema_segments.yaml", overrides, host.registry)
    outcome = run(cfg, host, progress=False)
    res = outcome.result
    assert res["pipeline"]["aggregator"]["name"] == "mean" and res["pipeline"]["sampling"]["segments"] == 2
    # Pooling both segments sees both colours: every question is answered right.
    assert res["metrics"]["accuracy"]["value"] == 100.0 and res["task"]["n"] == 6

    # The answer is the cosine between the mean of the unit segment embeddings and each option's text.
    encoder = PixelColourEncoder()
    sample = json.loads((outcome.run_dir / "samples.jsonl").read_text().splitlines()[0])
    window = VideoWindow(sample["id"], str(root / "videos" / f"{sample['id']}.mp4"))
    clips = read_window(window, SamplingConfig(mode="uniform", num_frames=4, size=32, crop=32, segments=2))
    assert [(c.start, c.end) for c in clips] == [(0.0, 2.0), (2.0, 4.0)]
    video = unit(unit(encoder.embed_video([c.frames for c in clips])).mean(axis=0))
    texts = unit(encoder.embed_text([f"Which colours appeared? {o}" for o in sample["data"]["options"]]))
    np.testing.assert_allclose(sample["answers"][0]["array"], texts @ video, rtol=1e-5, atol=1e-6)

    whole = run(load_run_config(REPO / "configs" / "egoschema.yaml", overrides[:1] + overrides[2:], host.registry),
                host, progress=False)
    assert whole.result["pipeline"]["sampling"]["segments"] is None  # one clip: a different pipeline


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP; torch runs on one thread meanwhile (tiny models are fastest so on small machines)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vfeval import testing_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield testing_models.build_clip(tmp_path_factory.mktemp("clip"))
    torch.set_num_threads(threads)


def test_hf_clip_mean_pools_unit_frame_embeddings(clip_dir):
    import torch
    from transformers import AutoProcessor, CLIPModel
    from vfeval_baselines.encoders.clip import HFClipConfig, make_hf_clip

    encoder = make_hf_clip(HFClipConfig(model=str(clip_dir), batch_size=3))
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), AutoProcessor.from_pretrained(clip_dir)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 40, 48, 3), dtype=np.uint8)

    def image(frame):
        with torch.no_grad():
            out = model.get_image_features(pixel_values=processor(images=[frame], return_tensors="pt")["pixel_values"])
        return unit((out if hasattr(out, "shape") else out.pooler_output)[0].numpy())

    static, mixed = encoder.embed_video([np.stack([a, a, a]), np.stack([a, b])])
    np.testing.assert_allclose(static, image(a), atol=1e-5)  # a static clip is its frame's image embedding
    np.testing.assert_allclose(mixed, (image(a) + image(b)) / 2, atol=1e-5)

    texts = ["a red square", "blue", "a green circle moves left"]
    batch = encoder.embed_text(texts)
    assert batch.shape == (3, 16) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], encoder.embed_text(["blue"])[0], atol=1e-5)  # padding changes nothing
    assert encoder.fingerprint()["weights"].startswith("sha256:")


def test_hf_clip_through_the_runner_with_segments_and_mean(tmp_path, host, clip_dir):
    root = tmp_path / "ego"
    pair_egoschema(root, 4)
    cfg = load_run_config(REPO / "configs" / "baselines" / "egoschema_segments.yaml", [
        f"task.root={root}", "pipeline.encoder.name=hf-clip", f"pipeline.encoder.model={clip_dir}",
        "pipeline.sampling.segments=2", "pipeline.sampling.num_frames=2", "pipeline.sampling.size=32",
        "pipeline.sampling.crop=32", f"output.dir={tmp_path}/runs", f"output.cache_dir={tmp_path}/cache",
    ], host.registry)
    res = run(cfg, host, progress=False).result
    # A random tiny CLIP says nothing about accuracy; the point is that the image-first path runs end to end.
    assert res["complete"] and res["task"]["n"] == 4
    assert res["pipeline"]["encoder"]["name"] == "hf-clip" and res["pipeline"]["encoder"]["dtype"] == "float32"


def test_hf_clip_missing_weights_is_one_clear_error(tmp_path, clip_dir):
    from vfeval_baselines.encoders.clip import HFClipConfig, make_hf_clip

    from vfeval.errors import UsageError

    with pytest.raises(UsageError, match="pipeline.encoder.model.*no such directory"):
        make_hf_clip(HFClipConfig(model=str(tmp_path / "absent")))
    with pytest.raises(UsageError, match="missing value for 'pipeline.encoder.model'"):
        make_hf_clip(HFClipConfig())


def test_attention_pooler_starts_as_mean_and_learns_to_pass_over_distractor_segments():
    """Each video: one segment that shows its caption's content, five distractors that share a marker
    direction. Mean pooling drowns the content; the learned query finds the marker and looks away."""
    pytest.importorskip("torch")
    from vfeval_baselines.aggregators.attention import (
        AttentionPoolAggregator,
        AttentionPoolConfig,
        train_pooler,
    )

    from vfeval.aggregators import MeanAggregator

    rng = np.random.default_rng(0)
    d, n = 16, 48

    def videos(texts: np.ndarray) -> list[np.ndarray]:
        out = []
        for t in texts:
            distractors = unit(rng.normal(size=(5, d)) * (np.arange(d) < d - 1) + 2.0 * np.eye(d)[d - 1])
            segments = np.vstack([unit(t + 0.1 * rng.normal(size=d)), distractors])
            out.append(unit(segments[rng.permutation(6)]))
        return out

    texts = unit(rng.normal(size=(2 * n, d)) * (np.arange(d) < d - 1))
    train, test = videos(texts[:n]), videos(texts[n:])
    config = AttentionPoolConfig(name="attention", train="unused", steps=200, batch_size=16)
    query, weight = train_pooler(train, [[i] for i in range(n)], texts[:n], config)

    pooler = AttentionPoolAggregator.__new__(AttentionPoolAggregator)
    pooler.config, pooler.query, pooler.weight = config, np.zeros(d, np.float32), np.eye(d, dtype=np.float32)
    mean = MeanAggregator()
    np.testing.assert_allclose(pooler.pool(test[0]), mean.pool(test[0]), rtol=1e-6, atol=1e-7)  # q=0, W=I: mean

    def recall_at_1(pool) -> float:
        video = unit(np.stack([pool(v) for v in test]))
        return float(np.mean((video @ texts[n:].T).argmax(1) == np.arange(n)))

    before = recall_at_1(mean.pool)
    pooler.query, pooler.weight = query, weight
    after = recall_at_1(pooler.pool)
    assert after >= before + 0.4 and after > 0.75, (before, after)
    assert query @ np.eye(d)[d - 1] < 0  # it learned to look away from the distractors' marker


def test_attention_pooler_through_the_runner_trains_saves_and_loads(tmp_path, host):
    pytest.importorskip("torch")
    root = tmp_path / "ego"
    pair_egoschema(root, 6)
    train_root = tmp_path / "train"
    pair_egoschema(train_root, 8, seed=1)
    questions = json.loads((train_root / "questions.json").read_text())
    answers = json.loads((train_root / "subset_answers.json").read_text())
    lines = [json.dumps({"video": f"videos/{q['q_uid']}.mp4", "caption": q[f"option {answers[q['q_uid']]}"]})
             for q in questions]
    (train_root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    saved = tmp_path / "pooler.safetensors"
    common = [f"task.root={root}", "pipeline.encoder.name=pixel", "pipeline.aggregator.name=attention",
              "pipeline.sampling.segments=2", "pipeline.sampling.size=32", "pipeline.sampling.crop=32",
              f"output.dir={tmp_path}/runs", f"output.cache_dir={tmp_path}/cache"]
    learn = [*common, f"pipeline.aggregator.train={train_root / 'captions.jsonl'}", f"pipeline.aggregator.save={saved}",
             "pipeline.aggregator.steps=20", "pipeline.aggregator.batch_size=4"]
    first = run(load_run_config(REPO / "configs" / "egoschema.yaml", learn, host.registry), host, progress=False)
    assert first.result["complete"] and first.result["pipeline"]["aggregator"]["name"] == "attention"
    assert saved.is_file()
    again = run(load_run_config(REPO / "configs" / "egoschema.yaml", [*common, f"pipeline.aggregator.load={saved}"],
                                host.registry), host, progress=False)
    assert again.result["metrics"]["accuracy"] == first.result["metrics"]["accuracy"]
    assert again.result["pipeline"]["fingerprint"] != first.result["pipeline"]["fingerprint"]

    from vfeval.errors import UsageError

    with pytest.raises(UsageError, match="set exactly one of pipeline.aggregator.train"):
        run(load_run_config(REPO / "configs" / "egoschema.yaml", common, host.registry), host, progress=False)
