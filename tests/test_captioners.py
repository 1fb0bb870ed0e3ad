"""Segment captioners (retrieval, precomputed caption files, Hugging Face image-to-text) feeding the ``llm``
aggregator, end to end through the runner on EgoSchema-format data."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vfeval_baselines.aggregators.llm import LLMConfig, make_llm  # noqa: E402
from vfeval_baselines.encoders.captioners import (  # noqa: E402
    HFImageCaptionerConfig,
    RetrievalCaptionerConfig,
    frame_indices,
    make_hf_image_captioner,
    make_retrieval,
)
from vfeval_baselines.encoders.precomputed import PrecomputedConfig, make_precomputed  # noqa: E402
from vfeval_baselines.prompts import Timed  # noqa: E402

from vfeval import testing_models  # noqa: E402
from vfeval.config import load_run_config  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402
from vfeval.requests import VideoWindow  # noqa: E402
from vfeval.runner import run  # noqa: E402
from vfeval.testing import write_video  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30),
           "magenta": (220, 40, 200)}
SEGMENT = 2.0
FPS = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread; more only contend with each other on a small machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_colour_egoschema(root: Path, n: int, seed: int = 0, videos: bool = True) -> dict[str, list[str]]:
    """EgoSchema-format data: each video shows one colour for 2 s, then another; the question asks which
    came first. Returns the colours of each video's segments, by q_uid."""
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    questions, answers, truth = [], {}, {}
    for i in range(n):
        uid = f"q{i:04d}"
        first, second = (names[j] for j in rng.permutation(len(names))[:2])
        truth[uid] = [first, second]
        if videos:
            frames = np.full((int(2 * SEGMENT * FPS), 32, 32, 3), 40, np.uint8)
            frames[: int(SEGMENT * FPS), 8:24, 8:24] = COLOURS[first]
            frames[int(SEGMENT * FPS):, 8:24, 8:24] = COLOURS[second]
            write_video(root / "videos" / f"{uid}.mp4", frames, fps=FPS)
        options = list(rng.permutation(names))
        questions.append({"q_uid": uid, "google_drive_id": "", "question": "Which colour appeared first?",
                          **{f"option {k}": o for k, o in enumerate(options)}})
        answers[uid] = options.index(first)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps(answers))
    return truth


def write_bank(path: Path) -> Path:
    # Whole-video captions listing events in order, as the synthetic training captions do.
    rows = [{"caption": f"a {a} square appears, then a {b} square appears"} for a, b in
            [("red", "green"), ("blue", "yellow"), ("magenta", "red"), ("green", "blue"), ("yellow", "magenta")]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    texts = ["a red square appears", "Question: Which colour appeared first? Answer: B. red",
             "Below are descriptions of consecutive parts of a video, each with its time span in seconds."]
    return testing_models.build_causal_lm(tmp_path_factory.mktemp("lm"), texts, arch="llama", context=512)


def run_config(tmp_path: Path, body: str, overrides: list[str], host):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(body) + textwrap.dedent(f"""\
        run: {{batch_size: 3}}
        output: {{dir: {tmp_path / 'runs'}, cache_dir: {tmp_path / 'cache'}}}
        """))
    return load_run_config(cfg, overrides, host.registry)


def test_retrieval_captions_then_llm_through_the_runner(tmp_path, host, lm_dir):
    root = tmp_path / "ego"
    truth = two_colour_egoschema(root, 6)
    bank = write_bank(tmp_path / "bank.jsonl")
    body = f"""\
        task: {{name: egoschema, root: {root}, split: subset}}
        pipeline:
          encoder: {{name: retrieval, bank: {bank}, split: ", then ", encoder: {{name: pixel}}}}
          aggregator: {{name: llm, model: {lm_dir}}}
          sampling: {{mode: uniform, num_frames: 3, size: 32, crop: 32, segments: {SEGMENT}}}
        """
    cfg = run_config(tmp_path, body, [], host)
    outcome = run(cfg, host, progress=False)
    res = outcome.result
    assert res["task"]["n"] == 6 and res["complete"] and outcome.stats.windows_decoded == 6
    described = res["pipeline"]
    assert described["encoder"]["name"] == "retrieval"
    assert described["encoder"]["weights"]["encoder"]["name"] == "pixel"
    assert described["aggregator"]["name"] == "llm" and described["aggregator"]["config"]["mode"] == "loglikelihood"
    assert described["aggregator"]["weights"].startswith("sha256:")

    # Each 2 s segment got the bank phrase of its own colour, in order, and the LM read exactly those.
    from vfeval.cache import Cache
    from vfeval.pipeline import Pipeline
    from vfeval.runner import stored_features

    pipeline = Pipeline.from_config(cfg.pipeline, host.registry)
    cache = Cache(tmp_path / "cache" / "vfeval.sqlite")
    samples = [json.loads(line) for line in (outcome.run_dir / "samples.jsonl").read_text().splitlines()]
    for sample in samples:
        uid = sample["id"]
        stored = stored_features(cache, pipeline, VideoWindow(uid, str(root / "videos" / f"{uid}.mp4")),
                                 cfg.run.batch_size)
        assert stored["captions"] == [f"a {c} square appears" for c in truth[uid]]
        assert stored["times"] == [(0.0, SEGMENT), (SEGMENT, 2 * SEGMENT)]
        options = [q for q in json.loads((root / "questions.json").read_text()) if q["q_uid"] == uid][0]
        expected = pipeline.aggregator.choice_scores(
            [Timed(0, SEGMENT, stored["captions"][0]), Timed(SEGMENT, 2 * SEGMENT, stored["captions"][1])],
            "Which colour appeared first?", [options[f"option {k}"] for k in range(5)])
        np.testing.assert_allclose(sample["answers"][0]["array"], expected, rtol=1e-5)
    cache.close()

    again = run(cfg, host, progress=False)  # everything answered from the cache
    assert again.stats.computed == 0 and again.result["metrics"] == res["metrics"]


def test_retrieval_captioner_bank_and_inner_encoder(tmp_path):
    bank = write_bank(tmp_path / "bank.jsonl")
    whole = make_retrieval(RetrievalCaptionerConfig(bank=str(bank)))
    cut = make_retrieval(RetrievalCaptionerConfig(bank=str(bank), split=", then "))
    assert len(whole.captions) == 5 and len(cut.captions) == 5  # ten phrases, five distinct
    assert whole.fingerprint() != cut.fingerprint()
    red = np.zeros((2, 32, 32, 3), np.uint8)
    red[:] = COLOURS["red"]
    blue = red.copy()
    blue[:] = COLOURS["blue"]
    assert cut.describe([red, blue]) == ["a red square appears", "a blue square appears"]
    with pytest.raises(UsageError, match="cannot embed_video"):
        make_retrieval(RetrievalCaptionerConfig(bank=str(bank), encoder={"name": "hashed-text"}))
    with pytest.raises(UsageError, match="unknown key 'pipeline.encoder.encoder.min_saturatoin'"):
        make_retrieval(RetrievalCaptionerConfig(bank=str(bank), encoder={"name": "pixel", "min_saturatoin": 0.1}))
    with pytest.raises(UsageError, match="not found"):
        make_retrieval(RetrievalCaptionerConfig(bank=str(tmp_path / "nope.jsonl")))


def test_precomputed_llovi_captions_need_no_video(tmp_path, host, lm_dir):
    root = tmp_path / "ego"
    truth = two_colour_egoschema(root, 5, videos=False)  # no video files at all
    captions = tmp_path / "captions.json"
    # LLoVi's format: {q_uid: [caption per second]}.
    table = {uid: [f"a {c} square appears"] * 2 + [f"a {d} square appears"] * 2 for uid, (c, d) in truth.items()}
    captions.write_text(json.dumps(table))
    body = f"""\
        task: {{name: egoschema, root: {root}, split: subset}}
        pipeline:
          encoder: {{name: precomputed, captions: {captions}, seconds_per_caption: 1.0}}
          aggregator: {{name: llm, model: {lm_dir}}}
        """
    cfg = run_config(tmp_path, body, [], host)
    outcome = run(cfg, host, progress=False)
    assert outcome.result["complete"] and outcome.result["task"]["n"] == 5
    assert outcome.stats.windows_decoded == 0 and "decoder" not in outcome.result["pipeline"]
    digest = outcome.result["pipeline"]["encoder"]["weights"]
    assert digest.startswith("captions-sha256:")

    agg = make_llm(LLMConfig(model=str(lm_dir)))
    uid = "q0002"
    question = [q for q in json.loads((root / "questions.json").read_text()) if q["q_uid"] == uid][0]
    timed = [Timed(i, i + 1, text) for i, text in enumerate(table[uid])]
    expected = agg.choice_scores(timed, question["question"], [question[f"option {k}"] for k in range(5)])
    sample = [json.loads(line) for line in (outcome.run_dir / "samples.jsonl").read_text().splitlines()][2]
    assert sample["id"] == uid
    np.testing.assert_allclose(sample["answers"][0]["array"], expected, rtol=1e-5)

    # Another caption file is another pipeline: nothing cached under the old one is reused.
    table[uid][0] = "a grey square appears"
    captions.write_text(json.dumps(table))
    changed = run(cfg, host, progress=False)
    assert changed.stats.cached == 0 and changed.result["pipeline"]["encoder"]["weights"] != digest

    # A video missing from the file is one clear error.
    del table[uid]
    captions.write_text(json.dumps(table))
    with pytest.raises(UsageError, match=f"no captions for video '{uid}'"):
        run(cfg, host, progress=False)


def test_precomputed_jsonl_captions_are_cut_to_the_window(tmp_path):
    path = tmp_path / "captions.jsonl"
    rows = [{"video_id": "v", "start": s, "end": s + 4, "caption": f"c{s}"} for s in (8, 0, 4, 12)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    source = make_precomputed(PrecomputedConfig(captions=str(path)))
    assert [c.text for c in source.captions_for(VideoWindow("v", "", None, None))] == ["c0", "c4", "c8", "c12"]
    assert source.captions_for(VideoWindow("v", "", 5.0, 10.0)) == [Timed(-1.0, 3.0, "c4"), Timed(3.0, 7.0, "c8")]
    with pytest.raises(UsageError, match="looks captions up by video id"):
        source.describe([np.zeros((1, 8, 8, 3), np.uint8)])
    path.write_text('{"video_id": "v", "caption": "no times"}\n')
    with pytest.raises(UsageError, match="numeric 'start' and 'end'"):
        make_precomputed(PrecomputedConfig(captions=str(path)))


def test_hf_image_captioner_captions_the_middle_frame_of_each_segment(tmp_path):
    model_dir = testing_models.build_image_captioner(tmp_path / "cap", ["a red square", "a blue circle on grey"])
    captioner = make_hf_image_captioner(HFImageCaptionerConfig(model=str(model_dir), max_new_tokens=6))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    captions = captioner.describe(clips)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    # The caption of a segment is the caption of its middle frame alone.
    assert captions == [captioner.describe([c[2:3]])[0] for c in clips]
    two = make_hf_image_captioner(HFImageCaptionerConfig(model=str(model_dir), max_new_tokens=6, frames=2))
    assert frame_indices(5, 2) == [1, 3] and frame_indices(5, 1) == [2] and frame_indices(2, 4) == [0, 1]
    assert two.describe(clips[:1]) == ["; ".join(captioner.describe([clips[0][i : i + 1]])[0] for i in (1, 3))]
    assert captioner.fingerprint()["weights"].startswith("sha256:")


def test_hf_image_captioner_missing_weights_is_one_clear_error(tmp_path):
    with pytest.raises(UsageError, match="pipeline.encoder.model.*no such directory"):
        make_hf_image_captioner(HFImageCaptionerConfig(model=str(tmp_path / "absent")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="cannot load image-to-text model"):
        make_hf_image_captioner(HFImageCaptionerConfig(model=str(tmp_path / "empty")))
