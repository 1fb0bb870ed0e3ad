"""VideoPrism's recipe: stage 1 is the contrastive trainer with factorised attention; stage 2 (``videoprism-distill``)
distils the frozen stage-1 encoder through a shuffled decoder. The teacher stays frozen, the decoder's loss does
not depend on the order of the kept tokens, resume after kill -9 and two processes reach the weights of one,
the JAX loss is torch's, and the output is a videofirst checkpoint with stage 1's text tower."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.numpy import load_file  # noqa: E402

from vfeval.config import load_trainer_config  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPTIONS = dict(
    variant="tiny", tubelet=(2, 8, 8), num_frames=4, image_size=32, attention="factorised", init="none",
    text="words", text_length=32, embed_dim=16, pool="cls", device="cpu",
)
"""4 frames of 32 px: a token grid of 2 x 4 x 4; tube masks at 0.5 keep 8 tokens and hide 8."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 captioned synthetic training videos (4 s, 32 px), used as video-only clips."""
    from vfeval_benchmarks.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, n_videos=1, n_train_videos=8, duration=4.0, size=32, workers=1)
    return out


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A stage-1 checkpoint of the factorised encoder (random weights, temporal gates opened so that the
    temporal attention takes part)."""
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import build_model, save_checkpoint

    cfg = VideoFirstConfig(**OPTIONS, seed=3)
    model, _ = build_model(cfg)
    with torch.no_grad():
        for gate in model.video.temporal:
            gate.alpha.fill_(0.7)
    path = tmp_path_factory.mktemp("stage1") / "final.safetensors"
    save_checkpoint(model, path, cfg)
    return path


def write_config(folder: Path, data: Path, stage1: Path, name: str, **sections: str) -> Path:
    model = ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in OPTIONS.items())
    lines = {
        "model": f"{{{model}, mask: tube, mask_ratio: 0.5}}",
        "data": f"{{captions: {data / 'train' / 'captions.jsonl'}, "
        "sampling: {mode: uniform, num_frames: 4, size: 32, crop: 32}, cache: true}",
        "optim": "{lr: 1.0e-3, warmup_steps: 2, steps: 8, batch_size: 4}",
        "decoder": "{depth: 1}",
        "stage": f"{{init_from: {stage1}}}",
        "output_dir": str(folder / f"train-{name}"),
        "checkpoint_every": "2",
        "keep_checkpoints": "0",
        "log_every": "1",
    }
    lines.update(sections)
    body = "\n".join(f"{k}: {v}" for k, v in lines.items())
    path = folder / f"{name}.yaml"
    path.write_text(f"trainer: videoprism-distill\nname: {name}\n{body}\n")
    return path


def load(config: Path, host, *overrides: str):
    return load_trainer_config(config, list(overrides), host.registry)


def train(config: Path, host, *overrides: str) -> Path:
    spec, cfg = load(config, host, *overrides)
    return Path(spec.load()(cfg))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def clips(data: Path, n: int = 4) -> np.ndarray:
    from vfeval_videofirst.data import read_clip

    from vfeval.captions import read_captions
    from vfeval.config import SamplingConfig

    pairs = read_captions(data / "train" / "captions.jsonl")
    sampling = SamplingConfig(mode="uniform", num_frames=4, size=32, crop=32)
    return np.stack([read_clip(pairs[i], i, sampling) for i in range(n)])


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data, stage1) -> Path:
    """An uninterrupted 8-step torch run: the reference of the resume test, and a stage-2 checkpoint."""
    from vfeval.plugins import get_plugin_manager

    folder = tmp_path_factory.mktemp("straight")
    return train(write_config(folder, data, stage1, "straight"), get_plugin_manager())


# ---------------------------------------------------------------------------------------------------
# The configs


def test_the_shipped_stages_are_the_contrastive_trainer_with_factorised_attention_then_distillation(host):
    from vfeval_videofirst.config import ARCHITECTURE_KEYS
    from vfeval_videofirst.distill.config import validate
    from vfeval_videofirst.train_config import validate as validate_stage1

    spec1, one = load(REPO / "configs/train/videoprism_stage1_synthetic.yaml", host)
    spec2, two = load(REPO / "configs/train/videoprism_stage2_synthetic.yaml", host)
    assert (spec1.name, one.model.attention, one.model.text) == ("videofirst-contrastive", "factorised", "words")
    assert spec2.name == "videoprism-distill" and two.model.mask == "tube" and two.model.mask_ratio > 0
    validate_stage1(one)
    validate(two)
    assert Path(two.stage.init_from) == one.out_path() / "final.safetensors"
    # the stage-2 model is the stage-1 model (its checkpoint fits), masked while training
    for key in ARCHITECTURE_KEYS:
        assert getattr(one.model, key) == getattr(two.model, key), key
    synthetic = load(REPO / "configs/train/synthetic.yaml", host)[1]
    differ = {k for k in ARCHITECTURE_KEYS if getattr(synthetic.model, k) != getattr(one.model, k)}
    assert differ == {"attention"}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.mask=none", "'model.mask_ratio': 0.5; masked video modelling needs masked input"),
        ("stage.init_from=''", "'stage.init_from' is empty; stage 2 distils a stage-1 checkpoint"),
        ("decoder.depth=0", "'decoder.depth': 0; the decoder needs at least one block"),
        ("loss.global_weight=-1", "'loss.global_weight': -1.0; it cannot be negative"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key(tmp_path, data, stage1, host, override, expected):
    spec, cfg = load(write_config(tmp_path, data, stage1, "bad"), host, override)
    with pytest.raises(UsageError, match=expected.replace("(", r"\(")):
        spec.load()(cfg)
    assert not (tmp_path / "train-bad").exists()


# ---------------------------------------------------------------------------------------------------
# The stage-2 target


def _distiller(tmp_path: Path, data: Path, stage1: Path, host):
    from vfeval_videofirst.distill.torch_train import batch_tensors, build

    _, cfg = load(write_config(tmp_path, data, stage1, "unit"), host)
    distiller = build(cfg, torch.device("cpu"))
    return cfg, distiller, batch_tensors(cfg, clips(data), [0, 1, 2, 3], 0, torch.device("cpu"))


def test_the_teacher_is_frozen_while_the_student_and_decoder_learn(tmp_path, data, stage1, host):
    from vfeval_videofirst.torch.train import make_optimizer

    cfg, distiller, inputs = _distiller(tmp_path, data, stage1, host)
    start = load_file(str(stage1))
    teacher = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    for k, v in teacher.items():  # the teacher is the stage-1 video tower
        np.testing.assert_array_equal(v.numpy(), start[f"video.{k}"], err_msg=k)
    student = {k: v.clone() for k, v in distiller.model.state_dict().items()}
    decoder = {k: v.clone() for k, v in distiller.decoder.state_dict().items()}
    optimizer, _ = make_optimizer(distiller, cfg.optim)
    losses = []
    for _ in range(3):
        loss = distiller(*inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert all(not p.requires_grad for p in distiller.teacher.parameters())
    assert not distiller.teacher.training and distiller.model.video.training
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    after = distiller.model.state_dict()
    assert not torch.equal(after["video.head.weight"], student["video.head.weight"])
    assert not torch.equal(after["video.blocks.0.attn.qkv.weight"], student["video.blocks.0.attn.qkv.weight"])
    assert not torch.equal(distiller.decoder.state_dict()["pos"], decoder["pos"])
    for k in student:  # the text tower and the temperature do not move in stage 2
        if k.startswith("text.") or k == "logit_scale":
            assert torch.equal(after[k], student[k]), k


def test_the_decoder_loss_does_not_depend_on_the_order_of_the_kept_tokens(tmp_path, data, stage1, host):
    _, distiller, (video, keep, masked, order) = _distiller(tmp_path, data, stage1, host)
    distiller.eval()  # no dropout anywhere, but the student must still see the masked clip: keep is explicit
    with torch.no_grad():
        drawn = distiller(video, keep, masked, order)
        identity = distiller(video, keep, masked, torch.arange(keep.shape[1]).expand_as(order))
        reversed_ = distiller(video, keep, masked, order.flip(1))
        torch.testing.assert_close(identity, drawn, rtol=1e-6, atol=0)
        torch.testing.assert_close(reversed_, drawn, rtol=1e-6, atol=0)
        # ... because the decoder's predictions are a function of the set of visible tokens:
        visible = torch.randn(4, keep.shape[1], 64, generator=torch.Generator().manual_seed(0))
        out = distiller.decoder(visible, masked)
        for perm in (torch.randperm(keep.shape[1], generator=torch.Generator().manual_seed(s)) for s in range(3)):
            torch.testing.assert_close(distiller.decoder(visible[:, perm], masked), out, rtol=0, atol=1e-5)
        # ... which it does read, and the positions it is asked about matter
        changed = visible.clone()
        changed[:, 0] += 1.0
        assert (distiller.decoder(changed, masked) - out).abs().max() > 1e-3
        assert (distiller.decoder(visible, masked.flip(1)) - out.flip(1)).abs().max() < 1e-5
        other = (masked + 1) % 32
        assert (distiller.decoder(visible, other) - out).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------
# The torch trainer


def test_a_run_killed_with_sigkill_resumes_to_identical_weights(tmp_path, data, stage1, host, straight):
    config = write_config(tmp_path, data, stage1, "killed")
    run = tmp_path / "train-killed"
    # the same threads as this process's runs (torch's sums depend on how many share them)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfeval", "train", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (run / "step-0000002.state.safetensors").is_file():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (run / "final.safetensors").exists(), "the run ended before it was killed"
    with pytest.raises(UsageError, match="resume=true"):
        train(config, host)
    resumed = train(config, host, "resume=true")

    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and not any(k.startswith("decoder.") for k in a)
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert [m["step"] for m in metrics(run)] == list(range(1, 9))
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(straight.parent)]
    # the decoder, which is no part of the checkpoint, was restored from the state file too
    sa, sb = (load_file(str(p.parent / "step-0000006.state.safetensors")) for p in (straight, resumed))
    assert any(k.startswith("extra/decoder.") for k in sa)
    for key in sa:
        if key.startswith(("extra/", "optim/")):  # not rng/torch: the process's own history, unused by the step
            np.testing.assert_array_equal(sb[key], sa[key], err_msg=key)


def test_two_processes_under_torchrun_match_one_process_with_their_global_batch(tmp_path, data, stage1, host):
    optim = "{lr: 1.0e-3, warmup_steps: 1, steps: 3, batch_size: %d}"
    config = write_config(tmp_path, data, stage1, "ddp", optim=optim % 2, checkpoint_every="0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vfeval"]
    res = subprocess.run([*cmd, "train", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "train-ddp"
    records = metrics(run)
    assert [m["step"] for m in records] == [1, 2, 3]  # written once (rank 0)

    single = train(write_config(tmp_path, data, stage1, "one", optim=optim % 4, checkpoint_every="0"), host)
    np.testing.assert_allclose([m["loss"] for m in records], [m["loss"] for m in metrics(single.parent)], rtol=1e-5)
    a, b = load_file(str(run / "final.safetensors")), load_file(str(single))
    assert not np.array_equal(a["video.head.weight"], load_file(str(stage1))["video.head.weight"])
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0, err_msg=key)


def test_the_output_is_a_videofirst_checkpoint_whose_text_tower_is_stage_ones(straight, stage1, data):
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import make_encoder

    stage2 = make_encoder(VideoFirstConfig(**OPTIONS, mask="tube", mask_ratio=0.5, checkpoint=str(straight)))
    before = make_encoder(VideoFirstConfig(**OPTIONS, checkpoint=str(stage1)))
    texts = ["a red circle, then a blue square", "the last shape was green"]
    np.testing.assert_array_equal(stage2.embed_text(texts), before.embed_text(texts))
    frames = list(clips(data, 2))
    v2, v1 = stage2.embed_video(frames), before.embed_video(frames)
    assert v2.shape == (2, 16) and np.isfinite(v2).all() and not np.allclose(v1, v2)
    # the global term kept the stage-2 embedding near stage 1's: the text tower still reads it
    cos = (v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)
    assert (cos > 0.5).all(), cos


def test_make_step_times_one_training_step(tmp_path, data, stage1, host):
    from vfeval_videofirst.distill.bench import make_step

    config = write_config(tmp_path, data, stage1, "bench")
    step, tokens = make_step(config, "torch")
    assert tokens == 4 * 32  # batch_size x the 2 x 4 x 4 patch tokens of a clip, before masking
    losses = [step() for _ in range(4)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    with pytest.raises(UsageError, match="bad value for 'model.backend'"):
        make_step(config, "tensorflow")


# ---------------------------------------------------------------------------------------------------
# The JAX trainer


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache for this module's JAX runs: resumed runs compile the step once."""
    jax = pytest.importorskip("jax")
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    before = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax-cache")))
    jax.config.update(keys[1], 0)
    jax.config.update(keys[2], 0)
    yield
    for k, v in before.items():
        jax.config.update(k, v)


def test_the_jax_loss_is_the_torch_loss_for_the_same_batch_weights_and_masks(tmp_path, data, stage1, host):
    jax = pytest.importorskip("jax")
    from vfeval_videofirst.distill import jax_train, masks

    cfg, distiller, inputs = _distiller(tmp_path, data, stage1, host)
    with torch.no_grad():
        expected = float(distiller(*inputs))
    _, jcfg = load(write_config(tmp_path, data, stage1, "unit"), host, "model.backend=jax")
    objective, _, params = jax_train.build(jcfg)
    decoder = {f"decoder.{k}": v.detach().numpy() for k, v in distiller.decoder.state_dict().items()}
    assert decoder.keys() <= params.keys()
    params.update(decoder)  # the same decoder weights; student and teacher come from the same checkpoint
    batch = jax_train.micro_batch(jcfg, clips(data), [0, 1, 2, 3], 0)
    drawn = masks.draw("tube", 0.5, (2, 4, 4), cfg.seed, 0, [0, 1, 2, 3])
    for key in ("keep", "masked", "order"):
        np.testing.assert_array_equal(batch[key], drawn[key])
        np.testing.assert_array_equal(inputs[("keep", "masked", "order").index(key) + 1].numpy(), drawn[key])
    loss = float(jax.jit(objective.forward)(params, batch))
    assert abs(loss - expected) <= 1e-4 * abs(expected), (loss, expected)


def test_a_resumed_jax_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path, data, stage1, host, jax_cache):
    optim = "{lr: 1.0e-3, warmup_steps: 1, steps: 4, batch_size: 4}"
    # only the last block learns: a smaller program to compile; the decoder and the head learn as ever
    config = write_config(tmp_path, data, stage1, "jax", optim=optim, stage=f"{{init_from: {stage1}, trainable_layers: 1}}")
    run = train(config, host, "model.backend=jax").parent
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    # What a run killed right after its step-2 checkpoint leaves: later files never got written, and a
    # metrics record torn by the kill.
    for path in run.iterdir():
        if path.name == "final.safetensors" or path.name.startswith("step-0000004"):
            path.unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:9])
    resumed = train(config, host, "model.backend=jax", "resume=true")
    straight_jax = reference / "final.safetensors"
    a, b = load_file(str(straight_jax)), load_file(str(resumed))
    assert a.keys() == b.keys() and not any(k.startswith(("decoder.", "teacher.")) for k in a)
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(reference)]
    start = load_file(str(stage1))
    assert all(np.array_equal(start[k], a[k]) for k in a if k.startswith("text.") or k == "logit_scale")
    assert not np.array_equal(start["video.head.weight"], a["video.head.weight"])
    # a JAX-trained stage 2 is a videofirst checkpoint too: the torch encoder reads it
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import make_encoder

    encoder = make_encoder(VideoFirstConfig(**OPTIONS, mask="tube", mask_ratio=0.5, checkpoint=str(resumed)))
    assert np.isfinite(encoder.embed_video(list(clips(data, 1)))).all()
