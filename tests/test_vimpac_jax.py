"""VIMPAC in JAX: the tokenizers give torch's codes, the loss equals torch's for the same batch, weights and
masks (1e-4 relative), the JAX trainer runs and its checkpoint gives the same features in both backends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

from vfeval_vimpac import tokenizer as files  # noqa: E402

from vfeval.config import load_trainer_config  # noqa: E402

PLUGINS = "core,benchmarks,baselines,videofirst,vimpac"
TOL = 1e-4


def random_vqvae(rng: np.random.Generator, codes: int = 32, dim: int = 8, hidden: int = 16) -> dict[str, np.ndarray]:
    shapes = {"enc.0.weight": (hidden, 3, 4, 4), "enc.1.weight": (hidden, hidden, 4, 4),
              "enc.2.weight": (hidden, hidden, 4, 4), "enc.3.weight": (dim, hidden, 1, 1)}
    arrays = {k: rng.normal(0, 0.3, s) for k, s in shapes.items()}
    arrays.update({k.replace("weight", "bias"): rng.normal(0, 0.1, s[0]) for k, s in shapes.items()})
    arrays["codebook"] = rng.normal(0, 0.5, (codes, dim))
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def random_dvae(rng: np.random.Generator, hid: int = 8, vocab: int = 16) -> dict[str, np.ndarray]:
    """DALL-E's encoder layout at small sizes: one block per group, widths hid, 2 hid, 4 hid, 8 hid."""
    shapes = {"blocks.input": (hid, 3, 7, 7), "blocks.output.conv": (vocab, 8 * hid, 1, 1)}
    widths = [(hid, hid), (hid, 2 * hid), (2 * hid, 4 * hid), (4 * hid, 8 * hid)]
    for g, (n_in, n_out) in enumerate(widths, 1):
        p = f"blocks.group_{g}.block_1."
        if n_in != n_out:
            shapes[p + "id_path"] = (n_out, n_in, 1, 1)
        q = n_out // 4
        for n, (o, i, k) in enumerate([(q, n_in, 3), (q, q, 3), (q, q, 3), (n_out, q, 1)], 1):
            shapes[f"{p}res_path.conv_{n}"] = (o, i, k, k)
    arrays = {}
    for name, s in shapes.items():
        scale = 3.0 if name == "blocks.output.conv" else 1 / np.sqrt(np.prod(s[1:]))
        arrays[name + ".w"] = (rng.normal(0, scale, s)).astype(np.float32)
        arrays[name + ".b"] = rng.normal(0, 0.01, s[0]).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def vq_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "vq.safetensors"
    files.save(random_vqvae(np.random.default_rng(0)), path, "vqvae", {"codes": 32})
    return path


@pytest.mark.parametrize("kind", ["vqvae", "dvae"])
def test_both_backends_tokenize_alike(kind):
    from vfeval_vimpac.jax.tokenizer import Tokenizer as JaxTokenizer
    from vfeval_vimpac.torch.tokenizer import Tokenizer

    rng = np.random.default_rng(1)
    arrays = random_vqvae(rng) if kind == "vqvae" else random_dvae(rng)
    frames = rng.integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    a = Tokenizer(kind, arrays, torch.device("cpu")).codes(frames, 32).numpy()
    b = JaxTokenizer(kind, arrays).codes(frames, 32)
    assert a.shape == b.shape == (2, 3, 4, 4) and len(np.unique(a)) > 3
    np.testing.assert_array_equal(a, b)


def test_the_loss_is_the_same_in_both_backends():
    from vfeval_videofirst.jax.model import load_arrays
    from vfeval_vimpac.bench import fixed_batch, load_config
    from vfeval_vimpac.jax.losses import vimpac_loss as jax_loss
    from vfeval_vimpac.jax.train import build_model as jax_model
    from vfeval_vimpac.torch.losses import vimpac_loss as torch_loss
    from vfeval_vimpac.torch.train import arrays, build_model

    cfg = load_config({"model": {"num_frames": 4, "image_size": 32, "proj_dim": 16},
                       "optim": {"batch_size": 3}, "masking": {"blocks": 4}})
    batch = fixed_batch(cfg, vocab=32)
    assert batch["masked"].any() and (batch["inputs"] == 32).any()  # masks and [MASK] tokens in the batch
    model = build_model(cfg.model, 32)
    with torch.no_grad():  # move every parameter off its initial value (zero biases, unit norms)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    with torch.no_grad():
        t_loss, t_parts = torch_loss(model, *(torch.from_numpy(batch[k]) for k in ("inputs", "codes", "masked")), cfg.loss)
    twin = jax_model(cfg.model, 32)
    load_arrays(twin, arrays(model))
    j_loss, j_parts = jax_loss(twin, batch["inputs"], batch["codes"], batch["masked"], cfg.loss)
    for name, a, b in [("total", t_loss, j_loss), ("mlm", t_parts["mlm"], j_parts["mlm"]), ("nce", t_parts["nce"], j_parts["nce"])]:
        assert abs(float(a) - float(b)) <= TOL * abs(float(a)), (name, float(a), float(b))
    assert float(t_parts["nce"]) > 0.1 and float(t_parts["mlm"]) > 1.0


def test_the_jax_trainer_runs_and_its_checkpoint_gives_the_same_features_in_both_backends(tmp_path, vq_file):
    from vfeval_benchmarks.synthetic import write_synthetic

    from vfeval.plugins import get_plugin_manager

    data = tmp_path / "data"
    write_synthetic(data, formats=["msrvtt"], n_videos=2, n_train_videos=4, duration=6.0, size=32, workers=1)
    config = tmp_path / "jax.yaml"
    config.write_text(
        "trainer: vimpac\nname: j\n"
        f"model: {{variant: tiny, num_frames: 4, image_size: 32, proj_dim: 16, init: random, tokenizer: {vq_file}, "
        "device: cpu, backend: jax}\n"
        f"data: {{captions: {data / 'train' / 'captions.jsonl'}, sampling: {{mode: uniform, num_frames: 6, size: 32, crop: 32}}}}\n"
        "optim: {lr: 1.0e-3, steps: 3, batch_size: 2}\n"
        f"output_dir: {tmp_path / 'run'}\ncheckpoint_every: 2\nlog_every: 1\n"
    )
    old = os.environ.get("VFEVAL_PLUGINS")
    os.environ["VFEVAL_PLUGINS"] = PLUGINS
    try:
        host = get_plugin_manager()
        spec, cfg = load_trainer_config(config, [], host.registry)
        final = Path(spec.load()(cfg))
        records = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
        assert (final.parent / "step-0000002.state.safetensors").is_file()

        encoder = host.registry.get("encoders", "vimpac")
        clips = [np.random.default_rng(i).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for i in range(2)]
        feats = {
            backend: encoder.load()(encoder.config(checkpoint=str(final), device="cpu", backend=backend)).embed_video(clips)
            for backend in ("torch", "jax")
        }
    finally:
        os.environ["VFEVAL_PLUGINS"] = old if old is not None else ""
    np.testing.assert_allclose(feats["jax"], feats["torch"], rtol=TOL, atol=TOL)
