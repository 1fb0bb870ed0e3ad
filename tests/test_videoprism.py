"""VideoPrism: our Flax model against the transformers port, the two checkpoint layouts, and zero-shot runs.

The reference is a tiny random VideoPrism-LvT built with transformers (every parameter moved off its
initial value, so a zero-initialised LayerNorm or pooler scale cannot hide a mistake), exported to the
official ``.npz`` layout by ``vfeval convert``; its tokenizer is a tiny unigram (SentencePiece-model)
tokenizer over the words of the synthetic data, loaded by ``transformers.AutoTokenizer``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
pytest.importorskip("transformers")

from vfeval_videoprism import checkpoint  # noqa: E402
from vfeval_videoprism.config import VideoPrismConfig  # noqa: E402
from vfeval_videoprism.jax import encoder as jax_encoder  # noqa: E402
from vfeval_videoprism.torch import encoder as torch_encoder  # noqa: E402

from vfeval.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLUGINS = "core,benchmarks,baselines,videoprism"
TOL = 1e-4
FRAMES, SIZE = 4, 36  # the tiny model's trained frames and resolution (2 x 2 patches of 18 px)
TEXTS = ["a red ball", "c picks up the blue cup", "what did c do after the green box appeared?", "zebra"]


def _vocab(root: Path) -> list[str]:
    words: set[str] = set()
    for f in root.rglob("*"):
        if f.suffix in (".json", ".csv", ".jsonl", ".txt"):
            words.update(re.findall(r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]", f.read_text(errors="ignore")))
    return sorted(words)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from vfeval_benchmarks.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("vp-synthetic")
    write_synthetic(out, formats=["egoschema", "msrvtt"], n_videos=6, n_train_videos=0, size=32, duration=6.0,
                    fps=4, workers=1)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic) -> dict[str, Path]:
    """``hf/``: the transformers model and tokenizer; ``npz/model.npz``: the same weights, official layout."""
    from transformers import VideoPrismClipModel, VideoPrismTokenizer
    from transformers import VideoPrismConfig as HFConfig

    root = tmp_path_factory.mktemp("vp-model")
    words = _vocab(synthetic) + [w for t in TEXTS for w in t.replace("?", "").split()]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(f"▁{w}", -1.0) for w in sorted(set(words))] + [(w, -2.0) for w in sorted(set(words))]
    tokenizer = VideoPrismTokenizer(vocab=pieces, extra_ids=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_frames=FRAMES,
                  num_spatial_layers=2, num_temporal_layers=1, num_auxiliary_layers=1, image_size=SIZE)
    text = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                vocab_size=len(tokenizer), max_position_embeddings=64)
    torch.manual_seed(0)
    model = VideoPrismClipModel(HFConfig(vision_config=vision, text_config=text)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    (root / "npz").mkdir()
    run_cli("convert", "videoprism", str(root / "hf"), str(root / "npz" / "model.npz"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "hf" / f, root / "npz" / f)
    return {"hf": root / "hf", "npz": root / "npz" / "model.npz", "root": root}


def run_cli(*args: str) -> None:
    """``vfeval ARGS`` in this process; a nonzero exit fails the test."""
    old = os.environ.get("VFEVAL_PLUGINS")
    os.environ["VFEVAL_PLUGINS"] = PLUGINS
    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code in (0, None), f"vfeval {' '.join(args)} exited {exc.code}"
    finally:
        os.environ["VFEVAL_PLUGINS"] = old if old is not None else ""


@functools.cache
def encoder(backend: str, model: Path):
    """One encoder per backend and checkpoint for the whole module (JAX compiles each input shape once)."""
    cfg = VideoPrismConfig(model=str(model), backend=backend, device="cpu")
    return (jax_encoder if backend == "jax" else torch_encoder).make_encoder(cfg)


def clips(n: int, frames: int = FRAMES, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for _ in range(n)]


def hf_reference(folder: Path):
    """The port exactly as transformers users load it."""
    from transformers import AutoTokenizer, VideoPrismClipModel

    model = VideoPrismClipModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


def hf_embed(model, tokenizer, videos: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.from_numpy(np.stack(videos).astype(np.float32) / 255).permute(0, 1, 4, 2, 3)
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        v = model.get_video_features(pixel_values_videos=pixels, interpolate_pos_encoding=True).pooler_output
        t = model.get_text_features(**tokens).pooler_output
    return v.reshape(len(videos), -1).numpy(), t.numpy()


# -- parity ---------------------------------------------------------------------------------------------------


def test_our_jax_model_on_the_official_npz_matches_the_transformers_port(tiny):
    model, tokenizer = hf_reference(tiny["hf"])
    videos = clips(3)
    ref_video, ref_text = hf_embed(model, tokenizer, videos, TEXTS)
    ours = encoder("jax", tiny["npz"])
    video = ours.embed_video(videos)
    assert video.shape == (3, 32) and video.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(video, axis=-1), 1.0, atol=1e-5)
    assert np.abs(video - ref_video).max() < TOL
    # Text: the official layout stores no position table, so the .npz is read with the official formula's;
    # the port computes its own (other timescales), and keeps the one an hf folder carries. The same weights
    # and table give the same embeddings in both: our model on the hf folder against the port on it, and our
    # model on the .npz against the port holding the .npz's weights (what the torch backend loads).
    assert np.abs(encoder("jax", tiny["hf"]).embed_text(TEXTS) - ref_text).max() < TOL
    text = ours.embed_text(TEXTS)
    assert np.abs(text - encoder("torch", tiny["npz"]).embed_text(TEXTS)).max() < TOL
    np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, atol=1e-5)
    assert np.abs(text[:, None] - text[None]).max() > 0.1  # different texts, different embeddings


@pytest.mark.parametrize("frames,size", [(6, 54), (3, 18)])
def test_other_frame_counts_and_resolutions_resize_positions_alike_in_both_backends(tiny, frames, size):
    videos = clips(2, frames, size, seed=frames)
    t, j = encoder("torch", tiny["npz"]).embed_video(videos), encoder("jax", tiny["npz"]).embed_video(videos)
    assert np.abs(t - j).max() < TOL
    native = encoder("jax", tiny["npz"]).embed_video(clips(2))
    assert t.shape == native.shape


def test_frames_that_are_not_whole_patches_are_refused(tiny):
    from vfeval.errors import UsageError

    with pytest.raises(UsageError, match=r"pipeline.sampling.crop"):
        encoder("jax", tiny["npz"]).embed_video(clips(1, size=40))


def test_a_video_only_checkpoint_gives_pooled_tokens_in_both_backends(tmp_path):
    from transformers import VideoPrismVisionConfig, VideoPrismVisionModel

    torch.manual_seed(3)
    model = VideoPrismVisionModel(VideoPrismVisionConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=2, num_frames=FRAMES, num_spatial_layers=1,
        num_temporal_layers=1, image_size=SIZE)).eval()
    model.save_pretrained(tmp_path / "hf")
    run_cli("convert", "videoprism", str(tmp_path / "hf"), str(tmp_path / "video.npz"))
    assert "params/spatial_encoder/transformers_stack/x_layers/self_attention/query/w" in np.load(tmp_path / "video.npz")
    videos = clips(2)
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack(videos).astype(np.float32) / 255).permute(0, 1, 4, 2, 3)
        ref = model(pixel_values_videos=pixels).last_hidden_state.mean(dim=1).numpy()
    jax_enc = encoder("jax", tmp_path / "video.npz")
    assert np.abs(jax_enc.embed_video(videos) - ref).max() < TOL
    assert np.abs(encoder("torch", tmp_path / "hf").embed_video(videos) - ref).max() < TOL
    from vfeval.errors import UsageError

    with pytest.raises(UsageError, match="video-only"):
        jax_enc.embed_text(["a"])


# -- the two layouts ------------------------------------------------------------------------------------------


def test_conversion_round_trips_bit_exactly(tiny, tmp_path):
    official = checkpoint.read_official(tiny["npz"])
    key = "params/vision_encoder/spatial_encoder/transformers_stack/x_layers/self_attention/query/w"
    assert official[key].shape == (2, 32, 2, 16)  # (L, D, N, H)
    run_cli("convert", "videoprism", str(tiny["npz"]), str(tmp_path / "hf"))
    run_cli("convert", "videoprism", str(tmp_path / "hf"), str(tmp_path / "again.npz"))
    again = checkpoint.read_official(tmp_path / "again.npz")
    assert sorted(again) == sorted(official)
    for k, a in official.items():
        assert again[k].dtype == a.dtype and again[k].shape == a.shape and again[k].tobytes() == a.tobytes(), k

    from safetensors.numpy import load_file

    first, second = load_file(tiny["hf"] / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(first) == sorted(second)
    table = "text_model.embeddings.position_embedding"  # computed, not learned: the official formula's after .npz
    for k, a in first.items():
        if k != table:
            assert second[k].dtype == a.dtype and second[k].tobytes() == a.tobytes(), k
    np.testing.assert_array_equal(second[table], checkpoint.text_positions(64, 32))


def test_convert_refuses_what_it_cannot_convert(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VFEVAL_PLUGINS", PLUGINS)
    for args in ([str(tmp_path / "missing"), str(tmp_path / "x.npz")],
                 [str(tiny["npz"]), str(tmp_path / "out.npz")],
                 [str(tiny["hf"]), str(tiny["npz"])]):
        with pytest.raises(SystemExit) as exc:
            main(["convert", "videoprism", *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: convert:"), err


# -- runs -----------------------------------------------------------------------------------------------------


def vfeval_run(config: str, root: Path, model: Path, backend: str, out: Path) -> dict:
    run_cli("run", str(REPO / "configs" / "videoprism" / config), f"task.root={root}", f"pipeline.encoder.model={model}",
            f"pipeline.encoder.backend={backend}", f"pipeline.sampling.num_frames={FRAMES}",
            f"pipeline.sampling.size={SIZE}", f"pipeline.sampling.crop={SIZE}", f"output.dir={out / 'runs'}",
            f"output.cache_dir={out / 'cache'}", "--name", f"{config.split('.')[0]}-{backend}")
    run_dir = out / "runs" / f"{config.split('.')[0]}-{backend}"
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {"result": json.loads((run_dir / "results.json").read_text()), "samples": samples}


@pytest.mark.parametrize("config,task", [("egoschema.yaml", "egoschema"), ("msrvtt.yaml", "msrvtt")])
def test_zero_shot_runs_give_identical_predictions_in_both_backends(tiny, synthetic, tmp_path, config, task):
    runs = {b: vfeval_run(config, synthetic / task, tiny["npz"], b, tmp_path) for b in ("torch", "jax")}
    for backend, r in runs.items():
        pipeline = r["result"]["pipeline"]
        assert pipeline["family"] == "video-first", pipeline
        assert pipeline["encoder"]["name"] == "videoprism" and pipeline["encoder"]["backend"] == backend, pipeline
        assert r["result"]["task"]["n"] == len(r["samples"]) > 0 and r["result"]["task"]["n_failed"] == 0
    torch_pred = [s.get("prediction") for s in runs["torch"]["samples"]]
    assert torch_pred == [s.get("prediction") for s in runs["jax"]["samples"]]
    assert runs["torch"]["result"]["metrics"] == runs["jax"]["result"]["metrics"]
    if task == "egoschema":
        assert all(p is not None for p in torch_pred)
    for a, b in zip(runs["torch"]["samples"], runs["jax"]["samples"]):
        for x, y in zip(a["answers"], b["answers"]):
            if isinstance(x, dict) and "array" in x:
                assert np.abs(np.asarray(x["array"]) - np.asarray(y["array"])).max() < TOL


@pytest.mark.slow
def test_the_jax_backend_runs_without_torch(tiny, synthetic, tmp_path):
    code = ("import sys\nsys.modules['torch'] = None\n"
            f"sys.argv = ['vfeval', 'run', {str(REPO / 'configs' / 'videoprism' / 'egoschema.yaml')!r}, "
            f"'task.root={synthetic / 'egoschema'}', 'pipeline.encoder.model={tiny['npz']}', "
            f"'pipeline.encoder.backend=jax', 'pipeline.sampling.num_frames={FRAMES}', "
            f"'pipeline.sampling.size={SIZE}', 'pipeline.sampling.crop={SIZE}', '--limit', '2', "
            f"'output.dir={tmp_path / 'runs'}', 'output.cache_dir={tmp_path / 'cache'}']\n"
            "from vfeval.cli import main\nmain()\n")
    env = {**os.environ, "VFEVAL_PLUGINS": PLUGINS}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_model_that_is_not_here_is_one_line_naming_it_and_how_to_fetch_it(synthetic, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("VFEVAL_PLUGINS", PLUGINS)
    for backend in ("torch", "jax"):
        with pytest.raises(SystemExit) as exc:
            main(["run", str(REPO / "configs" / "videoprism" / "egoschema.yaml"), f"task.root={synthetic / 'egoschema'}",
                  f"pipeline.encoder.backend={backend}", f"output.dir={tmp_path / 'runs'}",
                  f"output.cache_dir={tmp_path / 'cache'}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "google/videoprism-lvt-base-f16r288" in err[0] and "hf download" in err[0], err
    with pytest.raises(SystemExit) as exc:
        main(["run", str(REPO / "configs" / "videoprism" / "egoschema.yaml"), f"task.root={synthetic / 'egoschema'}",
              f"pipeline.encoder.model={tmp_path / 'nothing.npz'}", f"output.dir={tmp_path / 'runs'}"])
    assert exc.value.code == 2 and "nothing.npz" in capsys.readouterr().err
