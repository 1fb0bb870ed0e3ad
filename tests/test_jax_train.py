"""The JAX trainer: its losses and optimizer against the torch ones, data parallelism over devices, exact
resume after kill -9, and the same losses as the torch trainer from the same checkpoint and data."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

from vfeval.errors import UsageError  # noqa: E402


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


# ---------------------------------------------------------------------------------------------------
# The trainer, end to end, on 8 tiny synthetic videos


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 captioned synthetic training videos (8 s, 32 px)."""
    from vfeval_benchmarks.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, n_videos=2, n_train_videos=8, duration=8.0, size=32, workers=1)
    return out


MODEL = (
    "{variant: tiny, tubelet: [2, 8, 8], num_frames: 4, image_size: 32, mask: none, "
    "init: none, text: bytes, text_length: 32, embed_dim: 16, pool: mean, device: cpu, backend: jax}"
)
"""Unmasked: masks are drawn per process for its own rows (as in the torch trainer under torchrun), so only
unmasked runs compare across process counts. The comparison with the torch trainer masks half the tokens."""


def write_config(folder: Path, data: Path, name: str, **sections: str) -> Path:
    """A tiny from-scratch recipe (4 frames of 32 px: 32 tokens per clip) as YAML."""
    lines = {
        "model": MODEL,
        "data": f"{{captions: {data / 'train' / 'captions.jsonl'}, "
        "sampling: {mode: uniform, num_frames: 4, size: 32, crop: 32}, cache: true}",
        "optim": "{lr: 1.0e-3, warmup_steps: 2, steps: 12, batch_size: 4}",
        "loss": "{kind: sigmoid, captions: all}",  # shared captions: each counts once however many hold it
        "output_dir": str(folder / f"train-{name}"),
        "checkpoint_every": "2",
        "keep_checkpoints": "0",
        "log_every": "1",
    }
    lines.update(sections)
    path = folder / f"{name}.yaml"
    body = "\n".join(f"{k}: {v}" for k, v in lines.items())
    path.write_text(f"trainer: videofirst-contrastive\nname: {name}\n{body}\n")
    return path


def run_in_process(config: Path, *overrides: str) -> Path:
    from vfeval.config import load_trainer_config
    from vfeval.plugins import get_plugin_manager

    spec, cfg = load_trainer_config(config, list(overrides), get_plugin_manager().registry)
    return Path(spec.load()(cfg))


def vfeval_train(config: Path, *overrides: str, devices: int = 1, env: dict | None = None) -> subprocess.Popen:
    """``vfeval train`` in a fresh process with ``devices`` CPU devices (XLA reads its flags when JAX starts)."""
    env = {**(env or os.environ), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vfeval", "train", str(config), *overrides]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data) -> Path:
    """An uninterrupted 12-step run on this process's one device: the reference of the tests below."""
    folder = tmp_path_factory.mktemp("straight")
    return run_in_process(write_config(folder, data, "straight"))


def test_two_devices_with_the_global_batch_reach_the_weights_of_one(tmp_path, data, straight):
    proc = vfeval_train(write_config(tmp_path, data, "two"), devices=2)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "jax on 2 cpu devices in 1 processes" in out
    run = tmp_path / "train-two"
    one, two = metrics(straight.parent), metrics(run)
    assert [m["step"] for m in two] == list(range(1, 13))
    assert set(two[0]) == {"step", "loss", "lr", "temperature", "clips_per_s", "elapsed"}
    np.testing.assert_allclose([m["loss"] for m in two], [m["loss"] for m in one], rtol=1e-5)
    a, b = weights(straight), weights(run / "final.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5, rtol=0, err_msg=key)
    assert not np.array_equal(a["video.head.weight"], weights(straight.parent / "step-0000002.safetensors")["video.head.weight"])


def test_a_batch_that_does_not_split_over_the_devices_is_one_line_and_no_run(tmp_path, data):
    proc = vfeval_train(write_config(tmp_path, data, "odd"), "optim.batch_size=3", devices=2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert err.strip().splitlines() == [
        "error: config: bad value for 'optim.batch_size': 3; each process shards its clips over its 2 devices, "
        "so use a multiple of 2"
    ]
    assert not (tmp_path / "train-odd").exists()


def test_a_run_killed_with_sigkill_resumes_to_identical_weights(tmp_path, data, straight):
    config = write_config(tmp_path, data, "killed")
    run = tmp_path / "train-killed"
    proc = vfeval_train(config)
    deadline = time.monotonic() + 600
    while not (run / "step-0000002.state.safetensors").is_file():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (run / "final.safetensors").exists(), "the run ended before it was killed"
    with pytest.raises(UsageError, match="resume=true"):
        run_in_process(config)
    with pytest.raises(UsageError, match="config differs.*optim.lr"):
        run_in_process(config, "resume=true", "optim.lr=0.5")

    resumed = run_in_process(config, "resume=true")
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert [m["step"] for m in metrics(run)] == list(range(1, 13))
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(straight.parent)]


def test_from_one_checkpoint_the_first_20_losses_match_the_torch_trainer(tmp_path, data):
    # The same recipe in both backends: every caption of each clip in its batch, order negatives, half the
    # tokens masked (numpy draws shared by both), all but the last video block and the text tower frozen.
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import build_model, save_checkpoint

    options = dict(
        variant="tiny", tubelet=(2, 8, 8), num_frames=4, image_size=32, mask="random", mask_ratio=0.5, init="none",
        text="words", text_length=32, embed_dim=16, pool="mean", device="cpu",
    )
    init = tmp_path / "init.safetensors"
    save_checkpoint(build_model(VideoFirstConfig(**options))[0], init, VideoFirstConfig(**options))
    recipe = dict(
        model=MODEL.replace("text: bytes", "text: words").replace("mask: none", "mask: random, mask_ratio: 0.5"),
        optim="{lr: 1.0e-3, warmup_steps: 5, steps: 20, batch_size: 4}",
        loss="{kind: infonce, captions: all, order_negatives: true}",
        stage=f"{{init_from: {init}, trainable_layers: 1, train_text: false}}",
        checkpoint_every="0",
    )
    in_torch = run_in_process(write_config(tmp_path, data, "torch", **recipe), "model.backend=torch")
    in_jax = run_in_process(write_config(tmp_path, data, "jax", **recipe))
    expected = [m["loss"] for m in metrics(in_torch.parent)]
    losses = [m["loss"] for m in metrics(in_jax.parent)]
    assert len(losses) == 20 and expected[-1] < expected[0]
    np.testing.assert_allclose(losses, expected, rtol=1e-3)

    start, end = weights(init), weights(in_jax)
    frozen = [k for k in start if k.startswith(("video.embed", "video.blocks.0.", "text.")) or k == "video.cls"]
    assert frozen and all(np.array_equal(start[k], end[k]) for k in frozen)
    learning = [k for k in start if k.startswith(("video.blocks.1.", "video.head"))]
    assert learning and all(not np.array_equal(start[k], end[k]) for k in learning)


def test_the_backend_key_is_checked_with_one_line(tmp_path, data, host):
    from vfeval.config import load_trainer_config

    config = write_config(tmp_path, data, "bad")
    spec, cfg = load_trainer_config(config, ["model.backend=tensorflow"], host.registry)
    with pytest.raises(UsageError, match="bad value for 'model.backend': 'tensorflow'; the trainer runs on torch, jax"):
        spec.load()(cfg)
    # Without JAX installed: one line naming the extra that installs it, exit 2, and nothing trained.
    code = (
        "import runpy, sys; sys.modules['jax'] = None; "
        f"sys.argv = ['vfeval', 'train', {str(config)!r}]; runpy.run_module('vfeval', run_name='__main__')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert "'model.backend' is 'jax', but jax is not installed: pip install \"vfeval[jax]\"" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "train-bad").exists()


def test_two_processes_joined_by_jax_distributed_train_as_one_with_their_global_batch(tmp_path, data, straight):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, data, "hosts", optim="{lr: 1.0e-3, warmup_steps: 2, steps: 12, batch_size: 2}")
    procs = []
    for rank in range(2):
        env = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)}
        procs.append(vfeval_train(config, env={**os.environ, **env}))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "jax on 2 cpu devices in 2 processes" in outs[0][0] and all("final checkpoint:" in o for o, _ in outs)
    run = tmp_path / "train-hosts"
    two, one = metrics(run), metrics(straight.parent)
    assert [m["step"] for m in two] == list(range(1, 13))  # written once, by process 0
    assert len(list(run.glob("step-*.state.safetensors"))) == 5
    np.testing.assert_allclose([m["loss"] for m in two], [m["loss"] for m in one], rtol=1e-5)
    a, b = weights(run / "final.safetensors"), weights(straight)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0, err_msg=key)
