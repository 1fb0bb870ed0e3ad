"""The JAX trainer: its losses and optimizer against the torch ones, data parallelism over devices, exact
resume after kill -9, and the same losses as the torch trainer from the same checkpoint and data."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402


def _inputs(seed: int, b: int = 4, k: int = 6, n: int = 3, e: int = 8):
    rng = np.random.default_rng(seed)
    video, text, negatives = (rng.normal(size=(m, e)).astype(np.float32) for m in (b, k, n))
    positives = np.zeros((b, k), dtype=bool)
    positives[np.arange(b), np.arange(b)] = True
    positives[1, 0] = positives[2, 4] = positives[3, 4] = True  # shared captions and a second caption
    positives[:, 5] = False  # text 5 is nobody's caption: a negative of every video
    valid = rng.random((b, n)) > 0.3
    return video, text, negatives, positives, valid


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("extra", [False, True], ids=["batch-only", "order-negatives"])
def test_each_loss_gives_the_torch_value_and_gradient(kind, extra):
    from vfeval_videofirst.jax import losses as jl
    from vfeval_videofirst.torch import losses as tl

    video, text, negatives, positives, valid = _inputs(0)
    scale, bias = np.float32(math.log(1 / 0.07)), np.float32(-2.0)
    more = (negatives, valid) if extra else (None, None)

    def torch_loss(v, t):
        args = [torch.from_numpy(x) if x is not None else None for x in more]
        if kind == "sigmoid":
            return tl.sigmoid_loss(v, t, torch.tensor(scale), torch.tensor(bias), torch.from_numpy(positives), *args)
        return tl.infonce(v, t, torch.tensor(scale), torch.from_numpy(positives), *args)

    def jax_loss(v, t):
        args = [jnp.asarray(x) if x is not None else None for x in more]
        if kind == "sigmoid":
            return jl.sigmoid_loss(v, t, scale, bias, jnp.asarray(positives), *args)
        return jl.infonce(v, t, scale, jnp.asarray(positives), *args)

    tv, tt = torch.tensor(video, requires_grad=True), torch.tensor(text, requires_grad=True)
    expected = torch_loss(tv, tt)
    expected.backward()
    value, grads = jax.value_and_grad(jax_loss, argnums=(0, 1))(jnp.asarray(video), jnp.asarray(text))
    np.testing.assert_allclose(float(value), float(expected.detach()), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[0]), tv.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads[1]), tt.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_padded_texts_change_no_value_and_no_gradient(kind):
    from vfeval_videofirst.jax import losses as jl

    video, text, negatives, positives, valid = _inputs(1)
    scale, bias = jnp.float32(2.0), jnp.float32(-3.0)
    pad = np.random.default_rng(2).normal(size=(2, text.shape[1])).astype(np.float32)
    padded = np.concatenate([text, pad])
    padded_positives = np.concatenate([positives, np.ones((len(video), 2), dtype=bool)], axis=1)
    real = np.arange(len(padded)) < len(text)

    def loss(v, t, pos, real=None):
        if kind == "sigmoid":
            return jl.sigmoid_loss(v, t, scale, bias, pos, negatives, valid, real)
        return jl.infonce(v, t, scale, pos, negatives, valid, real)

    plain, plain_grad = jax.value_and_grad(loss)(video, text, positives)
    value, grad = jax.value_and_grad(loss)(video, padded, padded_positives, real)
    np.testing.assert_allclose(float(value), float(plain), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(plain_grad), rtol=1e-5, atol=1e-7)


def test_a_video_whose_every_text_is_a_caption_leaves_gradients_finite():
    from vfeval_videofirst.jax.losses import infonce

    video, text = jnp.ones((1, 4)), jnp.arange(8.0).reshape(2, 4)
    value, grad = jax.value_and_grad(infonce, argnums=(0, 1))(video, text, 1.0, jnp.ones((1, 2), dtype=bool))
    assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in grad)


def test_the_optimizer_steps_like_torch_adamw_with_clipping_and_the_schedule():
    from vfeval_videofirst.jax.optim import apply, decays, lr_at, make_optimizer

    cfg = SimpleNamespace(lr=1e-2, min_lr=1e-4, weight_decay=0.05, beta2=0.98, warmup_steps=2, clip_grad=0.5)
    rng = np.random.default_rng(0)
    params = {
        "video.head.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "video.ln_post.bias": rng.normal(size=(3,)).astype(np.float32),
        "video.pos_time": rng.normal(size=(2, 3)).astype(np.float32),
        "logit_scale": np.float32(4.6),
    }
    grads = [{k: rng.normal(size=np.shape(v)).astype(np.float32) for k, v in params.items()} for _ in range(5)]
    for g in grads:
        g["logit_scale"] = np.float32(-1.0)  # pushes the scale past log 100

    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    decay = [p for k, p in tparams.items() if decays(k, tuple(p.shape))]
    assert len(decay) == 1  # the head's matrix; not a bias, a position table or the scale
    rest = [p for k, p in tparams.items() if not decays(k, tuple(p.shape))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6,
    )
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    optimizer = make_optimizer(jparams, cfg)
    state = optimizer.init(jparams)
    lrs = [lr_at(s, 5, cfg) for s in range(5)]
    assert lrs[0] == pytest.approx(cfg.lr / 2) and lrs[1] == pytest.approx(cfg.lr) and lrs[-1] < lrs[2]
    for step, g in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = lrs[step]
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        torch.nn.utils.clip_grad_norm_(list(tparams.values()), cfg.clip_grad)
        opt.step()
        with torch.no_grad():
            tparams["logit_scale"].clamp_(0, math.log(100))
        jparams, state = apply(optimizer, {k: jnp.asarray(v) for k, v in g.items()}, state, jparams, lrs[step])
    for k, p in tparams.items():
        np.testing.assert_allclose(np.asarray(jparams[k]), p.detach().numpy(), rtol=1e-5, atol=1e-7, err_msg=k)
    assert float(jparams["logit_scale"]) == pytest.approx(math.log(100))  # clamped as CLIP does


def test_which_parameters_learn_in_a_stage():
    from vfeval_videofirst.jax.optim import is_trainable

    names = [
        "video.embed.proj.weight", "video.blocks.0.attn.qkv.weight", "video.blocks.1.mlp.fc1.weight",
        "video.temporal.1.alpha", "video.ln_post.weight", "video.head.weight", "text.token.weight",
        "logit_scale", "bias",
    ]
    last = [n for n in names if is_trainable(n, depth=2, layers=1, train_text=False, learn_temperature=False)]
    assert last == ["video.blocks.1.mlp.fc1.weight", "video.temporal.1.alpha", "video.ln_post.weight",
                    "video.head.weight", "bias"]
    assert all(is_trainable(n, 2, -1, True, True) for n in names)
    assert not any(is_trainable(n, 2, 0, True, True) for n in names[:4])
