"""The JAX videofirst encoder: parity with the torch one from one checkpoint, the shared checkpoint layout,
inflation from CLIP, and choosing the backend from a run config.

Parity is measured on L2-normalised fp32 embeddings (max abs difference at most 1e-4), from a checkpoint
with random weights made to look trained (non-zero temporal table, open temporal gates), for clips of 8,
16 and 32 frames on a model laid out for 16 (so the temporal table is resampled), each mask kind with the
same kept indices (drawn by numpy from the seed in both backends).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("transformers")

from vfeval_videofirst.config import VideoFirstConfig  # noqa: E402
from vfeval_videofirst.jax import encoder as jax_encoder  # noqa: E402
from vfeval_videofirst.torch import encoder as torch_encoder  # noqa: E402

PROJ = 16
TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_parity(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    diff = np.abs(normalised(a.astype(np.float32)) - normalised(b.astype(np.float32))).max()
    assert diff <= TOL, f"max abs difference {diff:.2e} > {TOL}"


def scratch_cfg(**kw) -> VideoFirstConfig:
    base = dict(
        variant="tiny", tubelet=(2, 8, 8), image_size=32, embed_dim=PROJ, num_frames=16, init="none",
        text="bytes", device="cpu",
    )
    return VideoFirstConfig(**{**base, **kw})


def clips(frames: int, n: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + frames)
    return [rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8) for _ in range(n)]


TEXTS = ["a red square moves left, then a blue circle.", "cooking pasta", "x"]


def trained_looking_checkpoint(cfg: VideoFirstConfig, path: Path) -> Path:
    """A torch model of ``cfg`` with weights perturbed so that every parameter matters, saved to ``path``."""
    model, _ = torch_encoder.build_model(cfg)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
            if name.endswith("alpha"):
                p.fill_(0.7)  # open the temporal gates: a closed gate hides the temporal attention
        model.video.pos_time.normal_(0.0, 0.5, generator=g)
    torch_encoder.save_checkpoint(model, path, cfg)
    return path


# One checkpoint per architecture, shared by the tests of this module.
ARCHS = {
    "tiny-joint": dict(attention="joint", text="bytes"),
    "tiny-factorised": dict(attention="factorised", text="words"),
    "S-joint": dict(variant="S", attention="joint", text="bytes", pool="mean"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {
        name: trained_looking_checkpoint(scratch_cfg(**kw, backend="torch"), folder / f"{name}.safetensors")
        for name, kw in ARCHS.items()
    }


@pytest.fixture(scope="module")
def pairs(checkpoints):
    """(torch encoder, jax encoder) per (architecture, mask): both from the same checkpoint, built once."""
    cache: dict[tuple[str, str], tuple] = {}

    def get(arch: str, mask: str = "none"):
        if (arch, mask) not in cache:
            options = dict(ARCHS[arch], checkpoint=str(checkpoints[arch]))
            if mask != "none":
                options.update(mask=mask, mask_ratio=0.5, mask_at_eval=True, seed=5)
            cfg = scratch_cfg(**options)
            cache[arch, mask] = (torch_encoder.make_encoder(cfg), jax_encoder.make_encoder(cfg))
        return cache[arch, mask]

    return get


@pytest.mark.parametrize(
    "arch,frames",
    # The tiny models at all three frame counts; the wide one at twice the frames its table is laid out for.
    [(a, f) for a in ("tiny-joint", "tiny-factorised") for f in (8, 16, 32)] + [("S-joint", 32)],
)
def test_video_embeddings_agree_between_backends(pairs, arch, frames):
    torch_side, jax_side = pairs(arch)
    batch = clips(frames)
    assert_parity(torch_side.embed_video(batch), jax_side.embed_video(batch))


@pytest.mark.parametrize("arch,mask", [("tiny-joint", "random"), ("tiny-joint", "block"), ("tiny-factorised", "tube")])
def test_masked_embeddings_agree_between_backends(pairs, arch, mask):
    torch_side, jax_side = pairs(arch, mask)
    batch = clips(16)
    got = jax_side.embed_video(batch)
    assert_parity(torch_side.embed_video(batch), got)
    unmasked = pairs(arch)[1].embed_video(batch)  # the mask really drops tokens in the JAX encoder
    assert np.abs(normalised(got) - normalised(unmasked)).max() > 1e-3


@pytest.mark.parametrize("arch", list(ARCHS))
def test_text_embeddings_agree_between_backends(pairs, arch):
    torch_side, jax_side = pairs(arch)
    assert_parity(torch_side.embed_text(TEXTS), jax_side.embed_text(TEXTS))


def test_a_checkpoint_saved_by_jax_is_the_same_file_and_loads_in_torch(pairs, checkpoints, tmp_path):
    _, jax_side = pairs("tiny-factorised")
    again = tmp_path / "from-jax.safetensors"
    jax_encoder.save_checkpoint(jax_side.model, again, scratch_cfg(**ARCHS["tiny-factorised"], backend="jax"))
    original = checkpoints["tiny-factorised"]
    # Same weights, same layout, same metadata: the same bytes, so the same weights hash in either backend.
    assert again.read_bytes() == original.read_bytes()
    cfg = scratch_cfg(**ARCHS["tiny-factorised"], checkpoint=str(again))
    torch_side = torch_encoder.make_encoder(cfg)
    assert torch_side.fingerprint() == jax_side.fingerprint()
    assert jax_side.fingerprint()["weights"] == "sha256:" + hashlib.sha256(original.read_bytes()).hexdigest()
    batch = clips(16)
    assert_parity(torch_side.embed_video(batch), jax_side.embed_video(batch))


def test_a_jax_trained_checkpoint_loads_in_torch(tmp_path):
    """Weights that only JAX ever held (its own random init, then changed) give torch the same embeddings."""
    import jax.numpy as jnp
    from flax import nnx

    cfg = scratch_cfg(attention="joint", text="bytes", seed=3)
    model, _ = jax_encoder.build_model(cfg)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax_tree_add(params, 0.01))
    model.video.pos_time.set_value(jnp.linspace(-1.0, 1.0, model.video.pos_time.size).reshape(model.video.pos_time.shape))
    path = tmp_path / "jax.safetensors"
    jax_encoder.save_checkpoint(model, path, cfg)
    loaded = scratch_cfg(attention="joint", text="bytes", checkpoint=str(path))
    t, j = torch_encoder.make_encoder(loaded), jax_encoder.make_encoder(loaded)
    batch = clips(16)
    assert_parity(t.embed_video(batch), j.embed_video(batch))
    assert_parity(t.embed_text(TEXTS), j.embed_text(TEXTS))
    from safetensors.torch import load_file

    assert load_file(str(path))["video.embed.proj.weight"].shape == (64, 3, 2, 8, 8)


def jax_tree_add(tree, value: float):
    import jax

    return jax.tree.map(lambda x: x + value, tree)


def test_a_checkpoint_of_another_architecture_is_refused_in_jax(checkpoints):
    from vfeval.errors import UsageError

    cfg = scratch_cfg(**{**ARCHS["tiny-joint"], "attention": "factorised"}, checkpoint=str(checkpoints["tiny-joint"]))
    with pytest.raises(UsageError, match="set attention=\"joint\""):
        jax_encoder.make_encoder(cfg)


# -- inflation from CLIP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from vfeval.testing_models import build_clip

    return build_clip(tmp_path_factory.mktemp("clip"), width=64, vision_mlp=256, text_width=32, projection=PROJ)


def clip_cfg(clip_dir, **kw) -> VideoFirstConfig:
    base = dict(variant="tiny", tubelet=(2, 8, 8), image_size=32, embed_dim=PROJ, num_frames=4, init="clip",
                clip_model=str(clip_dir), text="clip", device="cpu")
    return VideoFirstConfig(**{**base, **kw})


FRAME = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_image_embedding(clip_dir) -> np.ndarray:
    """CLIP's own embedding of ``FRAME``, from Hugging Face's torch model."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    x = (FRAME.astype(np.float32) / 255 - np.array(jax_encoder.CLIP_MEAN, np.float32)) / np.array(
        jax_encoder.CLIP_STD, np.float32
    )
    with torch.inference_mode():
        out = clip.get_image_features(pixel_values=torch.from_numpy(x).permute(2, 0, 1)[None])
    return getattr(out, "pooler_output", out).numpy()


@pytest.mark.parametrize("attention,inflation", [("joint", "central"), ("factorised", "average")])
def test_static_video_through_the_jax_inflated_encoder_gives_clip_image_embedding(
    clip_dir, clip_image_embedding, attention, inflation
):
    encoder = jax_encoder.make_encoder(clip_cfg(clip_dir, attention=attention, inflation=inflation, text="none"))
    got = encoder.embed_video([np.repeat(FRAME[None], 4, axis=0)])
    np.testing.assert_allclose(got, clip_image_embedding, atol=1e-4, rtol=1e-4)


def test_clip_towers_agree_between_backends(clip_dir):
    cfg = clip_cfg(clip_dir)
    t, j = torch_encoder.make_encoder(cfg), jax_encoder.make_encoder(cfg)
    assert_parity(t.embed_text(TEXTS), j.embed_text(TEXTS))
    assert_parity(t.embed_video(clips(4)), j.embed_video(clips(4)))


# -- the backend as a run option -------------------------------------------------------------------------


def test_the_factory_builds_the_backend_the_config_names():
    from vfeval_videofirst.factory import make_encoder

    assert isinstance(make_encoder(scratch_cfg(backend="jax", text="none")), jax_encoder.JaxVideoFirstEncoder)
    assert isinstance(make_encoder(scratch_cfg(backend="torch", text="none")), torch_encoder.VideoFirstEncoder)


def _run(args: list[str], block_jax: bool, cwd: Path) -> subprocess.CompletedProcess:
    # ``sys.modules["jax"] = None`` is how Python spells "not installed" to importlib.util.find_spec.
    code = (
        "import sys\n"
        + ("sys.modules['jax'] = None\n" if block_jax else "")
        + f"sys.argv = ['vfeval', *{args!r}]\nfrom vfeval.cli import main\nmain()\n"
    )
    env = {**os.environ, "VFEVAL_PLUGINS": "core,benchmarks,baselines,videofirst"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize(
    "backend,block_jax,message",
    [
        ("jax", True, 'jax is not installed: pip install "vfeval[jax]"'),
        ("tensorflow", False, "'tensorflow'"),
    ],
)
def test_vfeval_run_refuses_a_backend_it_cannot_use(tmp_path, backend, block_jax, message):
    args = ["run", str(REPO / "configs" / "egoschema.yaml"), "pipeline.encoder.name=videofirst",
            f"pipeline.encoder.backend={backend}", f"output.dir={tmp_path / 'runs'}"]
    res = _run(args, block_jax, tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "torch" in lines[0]  # names the backend that does work
    assert not (tmp_path / "runs").exists()


def softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
    """One softmax over all keys in float64: q, k, v ``[B, N, heads, d]``, ``extra`` an additive
    ``[B, heads, N, N]`` mask → ``[B, N, heads, d]``."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + extra
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)


def test_blocked_attention_is_softmax_attention_with_either_mask():
    """Long inputs go through ``attention`` in blocks of queries (the last one shorter): the same numbers as
    one softmax over all keys, with a key mask or an additive mask, whose rows travel with their block."""
    import jax.numpy as jnp
    from vfeval_videofirst.jax.model import QUERY_CHUNK, attention

    rng = np.random.default_rng(0)
    b, n, h, d = 2, QUERY_CHUNK * 2 + 37, 2, 8
    q, k, v = (rng.standard_normal((b, n, h, d)).astype(np.float32) for _ in range(3))
    keys = rng.random((b, n)) < 0.8
    bias = np.where(rng.random((b, 1, n, n)) < 0.7, 0.0, -1e30).astype(np.float32)
    bias[..., 0] = 0.0  # every query sees at least one key

    got = np.asarray(attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(keys)))
    want = softmax_attention(q, k, v, np.where(keys[:, None, None, :], 0.0, -1e30))
    np.testing.assert_allclose(got, want, atol=1e-5)
    got = np.asarray(attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(bias)))
    np.testing.assert_allclose(got, softmax_attention(q, k, v, bias), atol=1e-5)


def test_per_head_attention_is_softmax_attention_and_trains_as_the_blocked_one():
    """Long unmasked inputs, not differentiated, run one head at a time in blocks of ``HEAD_CHUNK`` queries (the
    last one shorter): the numbers of one softmax over all keys. Differentiated, the forward and the gradient are
    the blocked path's, bit for bit, so a training step does not change."""
    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import model as jm

    rng = np.random.default_rng(1)
    b, n, h, d = 2, max(jm.HEAD_CHUNK + 37, jm.PER_HEAD_MIN), 2, 8
    q, k, v = (jnp.asarray(rng.standard_normal((b, n, h, d)).astype(np.float32)) for _ in range(3))

    fast = np.asarray(jax.jit(jm.attention)(q, k, v))
    np.testing.assert_allclose(fast, softmax_attention(q, k, v), atol=1e-5)
    blocked = np.asarray(jm._attention_blocks(q, k, v, None))
    assert not np.array_equal(fast, blocked)  # another summation: the per-head path is the one taken

    weights = jnp.asarray(rng.standard_normal((b, n, h, d)).astype(np.float32))

    def loss(path):
        return lambda *qkv: jnp.sum(path(*qkv) * weights)

    got = jax.value_and_grad(loss(jm.attention), argnums=(0, 1, 2))(q, k, v)
    want = jax.value_and_grad(loss(lambda *qkv: jm._attention_blocks(*qkv, None)), argnums=(0, 1, 2))(q, k, v)
    assert float(got[0]) == float(want[0])
    for g, g_ref in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))


def softmax_attention_grads(q, k, v, g) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradient of ``sum(softmax_attention(q, k, v) * g)`` with respect to q, k and v, in float64."""
    q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, g))
    scale = 1 / np.sqrt(q.shape[-1])
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dv = np.einsum("bhqk,bqhd->bkhd", p, g)
    dp = np.einsum("bqhd,bkhd->bhqk", g, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", ds, k) * scale, np.einsum("bhqk,bqhd->bkhd", ds, q) * scale, dv


@pytest.fixture(scope="module")
def long_attention_grads():
    """Gradients of long unmasked attention (``FLASH_MIN`` + 100 tokens, a last block shorter), compiled once."""
    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import model as jm

    rng = np.random.default_rng(3)
    b, n, h, d = 1, jm.FLASH_MIN + 100, 2, 8
    q, k, v, g = (jnp.asarray(rng.standard_normal((b, n, h, d)).astype(np.float32)) for _ in range(4))

    def grads(path):
        return jax.jit(jax.grad(lambda *qkv: jnp.sum(path(*qkv) * g), argnums=(0, 1, 2)))

    return (q, k, v, g), grads(jm.attention), grads(lambda *qkv: jm._attention_blocks(*qkv, None))


def test_the_gradient_of_long_attention_is_softmax_attentions(long_attention_grads):
    """From ``FLASH_MIN`` tokens on, the backward pass rebuilds each block's weights from the rows' log-sum-exp:
    the gradient of one softmax over all keys, as autodiff of the blocks gives it."""
    (q, k, v, g), flash, blocks = long_attention_grads
    want = softmax_attention_grads(q, k, v, g)
    for got, by_autodiff, ref in zip(flash(q, k, v), blocks(q, k, v), want, strict=True):
        scale = np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(got), ref, atol=2e-6 * scale)
        np.testing.assert_allclose(np.asarray(got), np.asarray(by_autodiff), atol=2e-6 * scale)


def test_training_through_long_attention_keeps_no_score_matrix_per_layer():
    """A stack of attention layers: each more layer adds its q, k, v and output to what the gradient holds, and
    (autodiff of the blocks) its N x N weights; from ``FLASH_MIN`` tokens on, not those."""
    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import model as jm

    b, n, h, d = 1, jm.FLASH_MIN + 100, 2, 8
    x = jnp.ones((b, n, h, d), jnp.float32)

    def held(path, layers: int) -> int:
        def loss(x):
            for _ in range(layers):
                x = path(jnp.sin(x), jnp.cos(x), x)
            return jnp.sum(x)

        return jax.jit(jax.grad(loss)).lower(x).compile().memory_analysis().temp_size_in_bytes

    weights = b * h * n * n * 4  # one layer's N x N float32 weights
    flash = held(jm.attention, 3) - held(jm.attention, 1)
    blocks = held(lambda *qkv: jm._attention_blocks(*qkv, None), 3) - held(lambda *qkv: jm._attention_blocks(*qkv, None), 1)
    assert blocks >= 2 * weights  # the test can see the weights: two more layers keep two more
    assert flash < weights / 4, (flash, weights)


def test_materialised_gradient_passes_the_cotangent_unchanged():
    """The identity in the forward pass; its VJP (a product with the identity matrix on CPU, to stop XLA's CPU
    fusion from recomputing the residual stream's gradient in every block) returns the cotangent bit for bit,
    so a block's gradient is the one it would have without it."""
    from unittest import mock

    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import model as jm

    rng = np.random.default_rng(2)
    g = (rng.standard_normal((2, 5, 16)) * 10.0 ** rng.integers(-30, 30, (2, 5, 16))).astype(np.float32)
    x = jnp.asarray(rng.standard_normal((2, 5, 16)).astype(np.float32))
    out, vjp = jax.vjp(jm.materialised_gradient, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), g)

    blocks = [jm.Block(16, 2, 32, "gelu", rng=rng) for _ in range(3)]

    def loss(x):
        for block in blocks:
            x = block(x)
        return jnp.sum(x * x)

    got = jax.jit(jax.grad(loss))(x)
    with mock.patch.object(jm, "materialised_gradient", lambda x: x):
        want = jax.jit(jax.grad(loss))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
