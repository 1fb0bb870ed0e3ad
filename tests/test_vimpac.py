"""VIMPAC: block masks against the reference procedure, the 80/10/10 corruption, the tokenizers (our VQ-VAE
and the DALL-E dVAE from its pickle), and the torch trainer (exact resume, two processes = one), its encoder."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402
from vfeval_vimpac import masking  # noqa: E402

from vfeval.config import load_trainer_config  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402

PLUGINS = "core,benchmarks,baselines,videofirst,vimpac"


# ---------------------------------------------------------------------------------------------------
# Masking


def reference_mask_3d(l: int, h: int, w: int, mask_blocks: int, rng: random.Random) -> np.ndarray:  # noqa: E741
    """The reference's block mask for one sample (airsplay/vimpac, ``vimpac/masking.py:mask_3d``), transcribed
    with Python's ``random`` exactly as it draws: per block the three lengths, then the three corners."""
    mask = np.zeros((l, h, w), dtype=bool)
    for _ in range(mask_blocks):
        l_len, h_len, w_len = rng.randint(1, l * 2 // 3), rng.randint(1, h // 2), rng.randint(1, w // 2)
        l1, h1, w1 = rng.randint(0, l - l_len), rng.randint(0, h - h_len), rng.randint(0, w - w_len)
        mask[l1 : l1 + l_len, h1 : h1 + h_len, w1 : w1 + w_len] = True
    return mask


@pytest.mark.parametrize("t", [5, 10])
@pytest.mark.parametrize("side", [16, 32])
def test_block_masks_match_the_reference_procedure(t, side):
    draws = 1000
    for blocks in (4, 6, 8):
        grid = (t, side, side)
        rng, ref_rng = np.random.default_rng(blocks), random.Random(blocks)
        ours = np.mean([masking.block_mask(grid, blocks, rng).mean() for _ in range(draws)])
        reference = np.mean([reference_mask_3d(*grid, blocks, ref_rng).mean() for _ in range(draws)])
        exact = masking.expected_ratio(grid, blocks)
        assert abs(ours - reference) < 0.005, (grid, blocks, ours, reference)
        assert abs(ours - exact) < 0.005 and abs(reference - exact) < 0.005, (grid, blocks, ours, reference, exact)


def test_the_paper_ratio_and_the_line_printed_at_the_start():
    # VIMPAC's table: 5 time steps, a 16 x 16 token map and 5 blocks mask about 14.5% of the tokens.
    assert abs(masking.expected_ratio((5, 16, 16), 5) - 0.145) < 0.005
    line = masking.describe((5, 16, 16), 5)
    assert "5 blocks of up to 3x8x8 tokens" in line and "14.4%" in line
    with pytest.raises(UsageError, match="at least 2 x 2 x 2"):
        masking.block_mask((1, 16, 16), 5, np.random.default_rng(0))


def test_masked_tokens_are_corrupted_80_10_10():
    vocab, grid = 8192, (5, 16, 16)
    rng = np.random.default_rng(0)
    shares = np.zeros(3)
    for _ in range(200):
        codes = rng.integers(0, vocab, size=grid)
        inputs, target = masking.corrupt(codes, 5, vocab, rng)
        assert np.array_equal(inputs[~target], codes[~target])  # unmasked tokens are never touched
        m = inputs[target]
        shares += [(m == vocab).sum(), ((m != vocab) & (m != codes[target])).sum(), (m == codes[target]).sum()]
    assert shares.sum() > 30_000
    np.testing.assert_allclose(shares / shares.sum(), [0.8, 0.1, 0.1], atol=0.01)

    # the reference's per-block variant: every block's tokens share one fate, the rest stay as they were
    codes = rng.integers(0, 16, size=(4, 8, 8))
    inputs, target = masking.corrupt(codes, 3, 16, np.random.default_rng(3), mode="block")
    assert np.array_equal(inputs[~target], codes[~target]) and inputs.max() <= 16


def test_a_clips_mask_does_not_depend_on_its_batch():
    codes = np.random.default_rng(0).integers(0, 32, size=(4, 2, 4, 4, 4))
    whole = masking.corrupt_pairs(codes, [7, 3, 9, 1], 0, 5, 5, 32)
    halves = [masking.corrupt_pairs(codes[i : i + 2], idx, 0, 5, 5, 32) for i, idx in ((0, [7, 3]), (2, [9, 1]))]
    for k in (0, 1):
        assert np.array_equal(whole[k], np.concatenate([h[k] for h in halves]))
    assert not np.array_equal(whole[1][:, 0], whole[1][:, 1])  # a video's two clips get their own masks



def test_a_videos_two_clips_are_cut_at_random_starts_as_the_reference_samples_them():
    from vfeval_vimpac.data import clip_pairs, clip_starts

    # The reference's temporal_random_sample: each start uniform over 0 .. F - T, the two independent.
    rng = np.random.default_rng(0)
    starts = np.array([clip_starts(16, 8, "random", rng) for _ in range(20_000)])
    assert starts.min() == 0 and starts.max() == 8
    np.testing.assert_allclose(np.bincount(starts.ravel(), minlength=9) / starts.size, 1 / 9, atol=0.01)
    assert abs(np.corrcoef(starts.T)[0, 1]) < 0.03
    assert clip_starts(16, 8, "halves", rng) == (0, 8)

    # A clip is T consecutive frames of its video, drawn from (seed, micro-batch, video): not from the batch.
    codes = np.arange(4 * 16).reshape(4, 16, 1, 1) * np.ones((1, 1, 2, 2), dtype=np.int64)
    whole = clip_pairs(codes, [7, 3, 9, 1], seed=0, draw=5, clip=8, mode="random")
    assert whole.shape == (4, 2, 8, 2, 2)
    assert np.all(np.diff(whole[:, :, :, 0, 0], axis=2) == 1)  # consecutive frames
    parts = [clip_pairs(codes[i : i + 2], idx, 0, 5, 8, "random") for i, idx in ((0, [7, 3]), (2, [9, 1]))]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert not np.array_equal(whole, clip_pairs(codes, [7, 3, 9, 1], seed=0, draw=6, clip=8, mode="random"))
    halves = clip_pairs(codes, [7, 3, 9, 1], seed=0, draw=5, clip=8, mode="halves")
    np.testing.assert_array_equal(halves[:, 0], codes[:, :8])
    np.testing.assert_array_equal(halves[:, 1], codes[:, 8:])

# ---------------------------------------------------------------------------------------------------
# Tokenizers


@pytest.fixture(scope="module")
def host():
    old = os.environ.get("VFEVAL_PLUGINS")
    os.environ["VFEVAL_PLUGINS"] = PLUGINS
    from vfeval.plugins import get_plugin_manager

    try:
        yield get_plugin_manager()
    finally:
        os.environ["VFEVAL_PLUGINS"] = old if old is not None else ""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 captioned synthetic training videos (8 s, 32 px)."""
    from vfeval_benchmarks.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("vimpac-synthetic")
    write_synthetic(out, formats=["msrvtt"], n_videos=2, n_train_videos=8, duration=8.0, size=32, workers=1)
    return out


def train(host, path: Path, *overrides: str) -> Path:
    spec, cfg = load_trainer_config(path, list(overrides), host.registry)
    return Path(spec.load()(cfg))


def vqvae_config(folder: Path, data: Path, steps: int = 20) -> Path:
    path = folder / "vq.yaml"
    path.write_text(
        "trainer: vqvae\nname: vq\n"
        "model: {codes: 32, code_dim: 8, hidden: 16, image_size: 32, device: cpu}\n"
        f"data: {{captions: {data / 'train' / 'captions.jsonl'}, sampling: {{mode: uniform, num_frames: 2, size: 32, crop: 32}}, cache: true}}\n"
        f"optim: {{lr: 3.0e-3, weight_decay: 0.0, steps: {steps}, batch_size: 4}}\n"
        f"output_dir: {folder / 'vq'}\nlog_every: 1\n"
    )
    return path


@pytest.fixture(scope="module")
def vq(tmp_path_factory, data, host) -> Path:
    return train(host, vqvae_config(tmp_path_factory.mktemp("vq"), data))


def test_the_vqvae_trainer_learns_and_writes_a_tokenizer(vq):
    from vfeval_vimpac import tokenizer
    from vfeval_vimpac.torch.tokenizer import Tokenizer
    from vfeval_vimpac.torch.vqvae import VQVAE

    records = [json.loads(line) for line in (vq.parent / "metrics.jsonl").read_text().splitlines()]
    assert np.mean([r["recon"] for r in records[-5:]]) < 0.7 * np.mean([r["recon"] for r in records[:5]])
    kind, arrays, config = tokenizer.load(vq)
    assert kind == "vqvae" and arrays["codebook"].shape == (32, 8) and config["image_size"] == 32
    tok = Tokenizer.from_file(vq, torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    codes = tok.codes(frames, 32)
    assert codes.shape == (2, 3, 4, 4) and int(codes.max()) < 32
    # the trainer's module computes the same codes as the tokenizer file
    model = VQVAE(32, 8, 16)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in load_file_np(vq).items()})
    x = torch.from_numpy(frames.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).float() / 255
    from vfeval_vimpac.torch.tokenizer import nearest

    assert torch.equal(nearest(model.latents(x), model.codebook).reshape(codes.shape), codes)


def load_file_np(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file as load_np

    return load_np(str(path))


# A tiny stand-in for DALL-E's dVAE encoder (openai/DALL-E, dall_e/encoder.py and utils.py): the official
# classes' module paths, names, attributes and arithmetic, at small sizes (8 hidden channels, 16 codes),
# pickled whole as the official encoder.pkl is.

def install_fake_dall_e():
    pkg, enc, utl = (types.ModuleType(n) for n in ("dall_e", "dall_e.encoder", "dall_e.utils"))

    class Conv2d(nn.Module):
        def __init__(self, n_in, n_out, kw):
            super().__init__()
            self.kw = kw
            self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / (n_in * kw * kw) ** 0.5)
            self.b = nn.Parameter(torch.randn(n_out) * 0.1)
        def forward(self, x):
            return F.conv2d(x, self.w, self.b, padding=(self.kw - 1) // 2)

    class EncoderBlock(nn.Module):
        def __init__(self, n_in, n_out, n_layers):
            super().__init__()
            n_hid = n_out // 4
            self.post_gain = 1 / n_layers ** 2
            self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
            self.res_path = nn.Sequential(OrderedDict([
                ("relu_1", nn.ReLU()), ("conv_1", Conv2d(n_in, n_hid, 3)), ("relu_2", nn.ReLU()),
                ("conv_2", Conv2d(n_hid, n_hid, 3)), ("relu_3", nn.ReLU()), ("conv_3", Conv2d(n_hid, n_hid, 3)),
                ("relu_4", nn.ReLU()), ("conv_4", Conv2d(n_hid, n_out, 1))]))
        def forward(self, x):
            return self.id_path(x) + self.post_gain * self.res_path(x)

    class Encoder(nn.Module):
        def __init__(self, n_hid=8, n_blk=1, vocab=16):
            super().__init__()
            n_layers = 4 * n_blk
            def group(n_in, n_out, pool):
                items = [(f"block_{i + 1}", EncoderBlock(n_in if i == 0 else n_out, n_out, n_layers)) for i in range(n_blk)]
                return nn.Sequential(OrderedDict(items + ([("pool", nn.MaxPool2d(kernel_size=2))] if pool else [])))
            self.blocks = nn.Sequential(OrderedDict([
                ("input", Conv2d(3, n_hid, 7)),
                ("group_1", group(n_hid, n_hid, True)), ("group_2", group(n_hid, 2 * n_hid, True)),
                ("group_3", group(2 * n_hid, 4 * n_hid, True)), ("group_4", group(4 * n_hid, 8 * n_hid, False)),
                ("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(8 * n_hid, vocab, 1))]))),
            ]))
        def forward(self, x):
            return self.blocks(x)

    Conv2d.__module__, utl.Conv2d = "dall_e.utils", Conv2d
    for c in (EncoderBlock, Encoder):
        c.__module__ = "dall_e.encoder"
        setattr(enc, c.__name__, c)
    Conv2d.__qualname__, EncoderBlock.__qualname__, Encoder.__qualname__ = "Conv2d", "EncoderBlock", "Encoder"
    pkg.encoder, pkg.utils = enc, utl
    sys.modules.update({"dall_e": pkg, "dall_e.encoder": enc, "dall_e.utils": utl})
    return Encoder

def uninstall_fake_dall_e():
    for k in ("dall_e", "dall_e.encoder", "dall_e.utils"):
        sys.modules.pop(k, None)


def test_the_dvae_is_converted_from_its_pickle_once_and_read_without_unpickling(tmp_path):
    encoder_cls = install_fake_dall_e()
    try:
        torch.manual_seed(0)
        official = encoder_cls()
        torch.save(official, tmp_path / "encoder.pkl")
    finally:
        uninstall_fake_dall_e()
    from vfeval_vimpac.torch.tokenizer import Tokenizer

    from vfeval.cli import main

    out = tmp_path / "dvae.safetensors"
    env_old = os.environ.get("VFEVAL_PLUGINS")
    os.environ["VFEVAL_PLUGINS"] = PLUGINS
    try:
        main(["convert", "dvae", "--from-pickle", str(tmp_path / "encoder.pkl"), "--out", str(out)])
    finally:
        os.environ["VFEVAL_PLUGINS"] = env_old if env_old is not None else ""
    assert "dall_e" not in sys.modules  # converted without the package
    frames = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    expected = official(0.8 * x + 0.1).argmax(1)  # DALL-E's map_pixels, then the encoder's logits
    codes = Tokenizer.from_file(out, torch.device("cpu")).codes(frames, 32)
    assert codes.shape == (3, 4, 4) and torch.equal(codes, expected)

    from vfeval_vimpac.tokenizer import convert_dvae, load

    with pytest.raises(UsageError, match="not a readable safetensors"):
        load(tmp_path / "encoder.pkl")  # loading never unpickles
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(os.system))
    with pytest.raises(UsageError, match="not a dVAE encoder pickle"):
        convert_dvae(evil, tmp_path / "x.safetensors")
    with pytest.raises(UsageError, match="exists"):
        convert_dvae(tmp_path / "encoder.pkl", out)


# ---------------------------------------------------------------------------------------------------
# The trainer


def vimpac_config(folder: Path, data: Path, tokenizer: Path, name: str, **sections: str) -> Path:
    lines = {
        "model": f"{{variant: tiny, num_frames: 4, image_size: 32, proj_dim: 16, init: random, tokenizer: {tokenizer}, device: cpu}}",
        "data": f"{{captions: {data / 'train' / 'captions.jsonl'}, sampling: {{mode: uniform, num_frames: 6, size: 32, crop: 32}}, cache: true}}",
        "masking": "{blocks: 4}",
        "optim": "{lr: 1.0e-3, warmup_steps: 2, steps: 6, batch_size: 2, grad_accum: 2}",
        "output_dir": str(folder / f"train-{name}"),
        "checkpoint_every": "2",
        "keep_checkpoints": "0",
        "log_every": "1",
    }
    lines.update(sections)
    path = folder / f"{name}.yaml"
    path.write_text(f"trainer: vimpac\nname: {name}\n" + "\n".join(f"{k}: {v}" for k, v in lines.items()) + "\n")
    return path


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path, data, vq, host, capsys):
    config = vimpac_config(tmp_path, data, vq, "killed")
    final = train(host, config)
    assert "vimpac masking: 4 blocks of up to 2x2x2 tokens in a 4x4x4 token map" in capsys.readouterr().out
    straight, records = load_file(str(final)), metrics(final.parent)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "mlm", "nce", "lr", "clips_per_s", "elapsed"} <= set(records[0])
    # two clips per video in a batch of 2 videos: NT-Xent x 0.2 starts near 2 ln(3) x 0.2
    assert abs(records[0]["nce"] - 2 * np.log(3) * 0.2) < 0.05

    # What kill -9 right after the step-2 checkpoint leaves: later files never written, a torn metrics line.
    run = final.parent
    for path in run.iterdir():
        if path.name == "final.safetensors" or path.name.startswith(("step-0000004", "step-0000006")):
            path.unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:9])
    with pytest.raises(UsageError, match="resume=true"):
        train(host, config)
    resumed = load_file(str(train(host, config, "resume=true")))
    assert straight.keys() == resumed.keys() and any(k.startswith("tokenizer.") for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in records]


def test_two_processes_under_torchrun_match_one_process_with_their_global_batch(tmp_path, data, vq, host):
    optim = "{lr: 1.0e-3, steps: 3, batch_size: %d}"
    config = vimpac_config(tmp_path, data, vq, "ddp", optim=optim % 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VFEVAL_PLUGINS": PLUGINS}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vfeval"]
    res = subprocess.run([*cmd, "train", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("vimpac masking:") == 1  # printed by process 0 only
    single = train(host, vimpac_config(tmp_path, data, vq, "one", optim=optim % 4))
    np.testing.assert_allclose(
        [m["loss"] for m in metrics(tmp_path / "train-ddp")], [m["loss"] for m in metrics(single.parent)], rtol=1e-5
    )
    a, b = load_file(str(tmp_path / "train-ddp" / "final.safetensors")), load_file(str(single))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def test_the_encoder_reads_a_checkpoint_alone_and_the_random_baseline_needs_asking(tmp_path, data, vq, host):
    final = train(host, vimpac_config(tmp_path, data, vq, "enc", optim="{lr: 1.0e-3, steps: 1, batch_size: 2}"))
    spec = host.registry.get("encoders", "vimpac")
    assert spec.backends == ("torch", "jax") and spec.capabilities == ("embed_video",) and spec.family == "video-first"
    make = spec.load()
    encoder = make(spec.config(checkpoint=str(final), device="cpu", backend="torch"))
    clips = [np.random.default_rng(i).integers(0, 256, (n, 48, 48, 3), dtype=np.uint8) for i, n in enumerate((4, 4, 6))]
    out = encoder.embed_video(clips)
    assert out.shape == (3, 64) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:1], encoder.embed_video(clips[:1]))  # no dependence on the batch
    assert encoder.fingerprint()["weights"].startswith("sha256:")

    with pytest.raises(UsageError, match="'checkpoint' is empty"):
        make(spec.config(device="cpu", backend="torch"))
    random_ = make(spec.config(init="random", tokenizer=str(vq), num_frames=4, image_size=32, proj_dim=16,
                               device="cpu", backend="torch"))
    assert random_.fingerprint()["weights"].startswith("random:seed=0")
    assert not np.allclose(random_.embed_video(clips[:1]), out[:1])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.tokenizer=", "'model.tokenizer' is empty"),
        ("masking.blocks=0", "'masking.blocks'"),
        ("data.sampling.num_frames=4", "'data.sampling.num_frames'"),
        ("data.clips=thirds", "'data.clips'"),
        ("model.image_size=12", "'model.image_size'"),
        ("loss.temperature=0", "'loss.temperature'"),
        ("model.tokenizer=missing.safetensors", "tokenizer not found"),
    ],
)
def test_config_mistakes_are_one_line_usage_errors(tmp_path, data, vq, host, override, expected):
    config = vimpac_config(tmp_path, data, vq, "bad")
    if "num_frames" in override:
        config.write_text(config.read_text().replace("num_frames: 6, size", "num_frames: 4, size"))  # = the clip
        override = "seed=0"
    if override == "model.tokenizer=":
        config.write_text(config.read_text().replace(f"tokenizer: {vq}", "tokenizer: ''"))
        override = "seed=0"
    with pytest.raises(UsageError, match=expected) as err:
        train(host, config, override)
    assert "\n" not in str(err.value)


def test_the_plugin_registers_without_importing_torch():
    code = (
        "import sys; from vfeval.plugins import get_plugin_manager; r = get_plugin_manager().registry; "
        "r.get('trainers', 'vimpac'); r.get('trainers', 'vqvae'); r.get('encoders', 'vimpac'); "
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules"
    )
    env = {**os.environ, "VFEVAL_PLUGINS": PLUGINS}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
