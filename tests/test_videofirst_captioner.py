"""The video-to-text captioner (``videofirst-captioner``): gates at zero, frozen weights, decoding with and without
the KV cache, exact resume after ``kill -9``, DDP, and the captioner answering ``generate`` requests in ``vfeval run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vfeval_benchmarks.synthetic import write_synthetic  # noqa: E402

from vfeval.config import load_run_config, load_trainer_config  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLUGINS = "core,benchmarks,baselines,videofirst,captioner"
VIDEO = ("{variant: tiny, tubelet: [2, 8, 8], num_frames: 4, image_size: 32, init: none, text: none, "
         "embed_dim: 16, pool: cls, seed: 3}")


@pytest.fixture(scope="module")
def host():
    from vfeval.plugins import get_plugin_manager

    old = os.environ.get("VFEVAL_PLUGINS")
    os.environ["VFEVAL_PLUGINS"] = PLUGINS
    try:
        yield get_plugin_manager()
    finally:
        os.environ["VFEVAL_PLUGINS"] = old if old is not None else ""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in every process the tests start (OMP_NUM_THREADS, which the trainer
    honours): the same float sums in all of them, so a run continued in another process can match bit for
    bit, and tiny models lose nothing by it."""
    threads, old = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 captioned synthetic training videos (8 s, 32 px) and 5 evaluation videos in each benchmark's format."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, formats=("youcook2",), n_videos=2, n_train_videos=8, duration=8.0, size=32, workers=1)
    return out


@pytest.fixture(scope="module")
def lm(tmp_path_factory, data) -> Path:
    """A tiny GPT-2 whose tokenizer is learnt from the training captions (random weights: only its logits matter)."""
    from vfeval.testing_models import build_causal_lm

    texts = [json.loads(line)["caption"] for line in (data / "train" / "captions.jsonl").read_text().splitlines()]
    return build_causal_lm(tmp_path_factory.mktemp("lm") / "gpt2", texts, width=32, layers=2, heads=2, vocab_size=300)


def captioner_config(lm: Path, **options):
    from omegaconf import OmegaConf
    from vfeval_captioner.config import CaptionerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(CaptionerConfig),
                          {"video": OmegaConf.create(VIDEO), "lm": str(lm), "num_latents": 4, "heads": 2,
                           "device": "cpu", **options})
    return OmegaConf.to_object(cfg)


@pytest.fixture(scope="module")
def model(lm):
    """A fresh captioner (random tiny encoder, the tiny LM, a bridge with closed gates) and its tokenizer."""
    from vfeval_captioner.encoder import build_captioner

    captioner, tokenizer, _ = build_captioner(captioner_config(lm))
    return captioner.eval(), tokenizer


def clips_tensor(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def test_gates_at_zero_leave_the_frozen_lm_logits_exactly_unchanged(model, lm):
    from transformers import AutoModelForCausalLM

    captioner, tokenizer = model
    ids = torch.tensor([tokenizer("a red circle moves left, then a blue square moves up")["input_ids"]] * 2)
    plain = AutoModelForCausalLM.from_pretrained(lm).eval()
    with torch.no_grad():
        media = captioner.media(clips_tensor())
        assert media.shape == (2, 4, 64)  # num_latents x the encoder's width
        expected = plain(input_ids=ids).logits
        torch.testing.assert_close(media, captioner.media(clips_tensor()), rtol=0, atol=0)
        assert torch.equal(captioner.lm_forward(media, ids)[0], expected)
        # ... and the blocks do read the video once a gate opens: the check above could fail.
        block = captioner.bridge.xattn[0]
        block.attn_gate.fill_(0.5)
        try:
            opened = captioner.lm_forward(media, ids)[0]
        finally:
            block.attn_gate.fill_(0.0)
    assert not torch.equal(opened, expected)
    assert not torch.equal(opened[0], captioner.lm_forward(media[[1, 0]], ids)[0][0])


@pytest.fixture(scope="module")
def opened(model):
    """The fresh captioner with its gates open (a copy), so that the video changes what it writes."""
    import copy

    captioner, tokenizer = model
    opened = copy.deepcopy(captioner)
    with torch.no_grad():
        for block in opened.bridge.xattn:
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
    return opened, tokenizer


def test_decoding_with_the_kv_cache_chooses_the_tokens_decoding_without_it_chooses(opened):
    from vfeval_captioner.decoding import beam, greedy, prefix_ids

    captioner, tokenizer = opened
    media = captioner.media(clips_tensor(3))
    prefix = prefix_ids(tokenizer, "a video of")
    # eos=-1 never ends a caption, so every step is compared
    cached = greedy(captioner, media, prefix, 10, eos=-1, kv_cache=True)
    assert cached == greedy(captioner, media, prefix, 10, eos=-1, kv_cache=False)
    assert all(len(row) == 10 for row in cached)
    # one clip alone gets the caption it gets in a batch
    assert greedy(captioner, media[1:2], prefix, 10, eos=-1)[0] == cached[1]
    with_cache = beam(captioner, media[:1], prefix, 6, eos=-1, beams=3)
    assert len(with_cache) == 6 and with_cache == beam(captioner, media[:1], prefix, 6, eos=-1, beams=3, kv_cache=False)
    # beam search finds a caption at least as likely as greedy's
    eos = tokenizer.eos_token_id
    g = greedy(captioner, media[:1], prefix, 6, eos)[0]
    b = beam(captioner, media[:1], prefix, 6, eos, beams=4, length_penalty=0.0)

    @torch.no_grad()
    def logp(tokens: list[int]) -> float:
        seq = torch.tensor([prefix + tokens + ([eos] if len(tokens) < 6 else [])])
        logits = captioner.lm_forward(media[:1], seq)[0][0, len(prefix) - 1 : -1]
        return float(torch.log_softmax(logits, -1).gather(1, seq[0, len(prefix):, None]).sum())

    assert logp(b) >= logp(g) - 1e-5


def write_config(folder: Path, data: Path, lm: Path, name: str, **sections: str) -> Path:
    lines = {
        "model": f"{{video: {VIDEO}, lm: {lm}, num_latents: 4, heads: 2, device: cpu}}",
        "data": f"{{captions: {data / 'train' / 'captions.jsonl'}, caption_pattern: 'moves \\w+, then ', "
        "sampling: {mode: uniform, num_frames: 4, size: 32, crop: 32}, cache: true}",
        "mask": "{kind: random, ratio: 0.3}",
        "optim": "{lr: 1.0e-2, warmup_steps: 2, steps: 6, batch_size: 2, grad_accum: 2, weight_decay: 0.0}",
        "output_dir": str(folder / f"train-{name}"),
        "checkpoint_every": "2",
        "keep_checkpoints": "0",
        "log_every": "1",
    }
    lines.update(sections)
    path = folder / f"{name}.yaml"
    path.write_text(f"trainer: videofirst-captioner\nname: {name}\n" + "".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def train(config: Path, host, *overrides: str) -> Path:
    spec, cfg = load_trainer_config(config, list(overrides), host.registry)
    return Path(spec.load()(cfg))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_training_moves_only_the_bridge_and_the_encoder_and_lm_stay_bit_identical(tmp_path, data, lm, host,
                                                                                   monkeypatch):
    import vfeval_captioner.train as trainer
    from safetensors.torch import load_file
    from vfeval_captioner.encoder import build_captioner

    built = {}

    def keep(*args, **kwargs):
        built["model"] = trainer_build(*args, **kwargs)
        return built["model"]

    trainer_build = trainer.build_captioner
    monkeypatch.setattr(trainer, "build_captioner", keep)
    final = train(write_config(tmp_path, data, lm, "frozen"), host)
    trained = built["model"][0]
    fresh, _, _ = build_captioner(captioner_config(lm))

    frozen = dict(fresh.video.named_parameters())
    frozen.update({f"lm.{k}": v for k, v in fresh.lm.named_parameters() if ".xattn." not in k})
    now = dict(trained.video.named_parameters())
    now.update({f"lm.{k}": v for k, v in trained.lm.named_parameters() if ".xattn." not in k})
    assert frozen.keys() == now.keys() and len(frozen) > 20
    for name, value in frozen.items():
        assert torch.equal(value, now[name]), name
    # the bridge learnt: the checkpoint holds exactly its tensors, and the gates left zero
    saved = load_file(str(final))
    assert saved.keys() == fresh.bridge.state_dict().keys()
    assert any(not torch.equal(saved[k], v) for k, v in fresh.bridge.state_dict().items())
    assert all(float(saved[f"xattn.{i}.attn_gate"]) != 0.0 for i in range(len(fresh.bridge.xattn)))
    records = metrics(final.parent)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in records) and records[-1]["gate"] > 0
    assert set(records[-1]) == {"step", "loss", "lr", "gate", "clips_per_s", "elapsed"}


def test_resume_after_kill_9_reaches_the_weights_of_an_uninterrupted_run(tmp_path, data, lm, host):
    from safetensors.torch import load_file

    steps = "{lr: 1.0e-2, warmup_steps: 2, steps: 16, batch_size: 2, weight_decay: 0.0}"
    straight = train(write_config(tmp_path, data, lm, "straight", optim=steps), host)

    config = write_config(tmp_path, data, lm, "killed", optim=steps)
    run = tmp_path / "train-killed"
    env = {**os.environ, "VFEVAL_PLUGINS": PLUGINS}
    proc = subprocess.Popen([sys.executable, "-m", "vfeval", "train", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # only bounds a hang: a loaded machine may take minutes to start
        while not (run / "step-0000002.state.safetensors").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final.safetensors").exists()  # killed in the middle of the run
    with pytest.raises(UsageError, match="resume=true"):
        train(config, host)
    resumed = train(config, host, "resume=true")

    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [m["step"] for m in metrics(run)] == list(range(1, 17))
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(straight.parent)]


def test_two_processes_under_torchrun_match_one_process_with_their_global_batch(tmp_path, data, lm, host):
    from safetensors.torch import load_file

    no_mask = {"mask": "{kind: none, ratio: 0.0}"}
    config = write_config(tmp_path, data, lm, "ddp", optim="{lr: 1.0e-2, steps: 3, batch_size: 2}", **no_mask)
    env = {**os.environ, "VFEVAL_PLUGINS": PLUGINS}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vfeval"]
    res = subprocess.run([*cmd, "train", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    single = train(write_config(tmp_path, data, lm, "one", optim="{lr: 1.0e-2, steps: 3, batch_size: 4}", **no_mask),
                   host)
    records = metrics(tmp_path / "train-ddp")
    assert [m["step"] for m in records] == [1, 2, 3]  # written once, by rank 0
    np.testing.assert_allclose([m["loss"] for m in records], [m["loss"] for m in metrics(single.parent)], rtol=1e-5)
    a, b = load_file(str(tmp_path / "train-ddp" / "final.safetensors")), load_file(str(single))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def test_the_trained_captioner_answers_generate_requests_in_vfeval_run(tmp_path, data, lm, host):
    from vfeval.runner import run

    final = train(write_config(tmp_path, data, lm, "eval", optim="{lr: 1.0e-2, steps: 2, batch_size: 4}"), host)
    encoder = [f"pipeline.encoder.{k}={v}" for k, v in
               {"name": "videofirst-captioner", "checkpoint": final, "lm": lm, "num_latents": 4, "heads": 2,
                "device": "cpu", "max_new_tokens": 8}.items()]
    video = ["variant=tiny", "tubelet=[2,8,8]", "num_frames=4", "image_size=32", "init=none", "text=none",
             "embed_dim=16", "seed=3"]
    overrides = [
        *encoder, *(f"pipeline.encoder.video.{o}" for o in video),
        "pipeline.aggregator.name=caption",
        "pipeline.sampling.num_frames=4", "pipeline.sampling.size=32", "pipeline.sampling.crop=32",
        f"output.dir={tmp_path / 'runs'}", f"output.cache_dir={tmp_path / 'cache'}",
    ]
    overrides += ["task.name=youcook2_summary", f"task.root={data / 'youcook2'}"]
    outcome = run(load_run_config(REPO / "configs" / "youcook2.yaml", overrides, host.registry), host, progress=False)
    result = outcome.result
    assert result["complete"] and result["task"]["n"] == 2 and result["task"]["n_failed"] == 0
    assert result["pipeline"]["family"] == "video-first"
    weights = result["pipeline"]["encoder"]["weights"]
    assert set(weights) == {"bridge", "video", "lm"} and weights["bridge"].startswith("sha256:")
    assert result["headline"] == "ROUGE-L" and set(result["metrics"]) == {"ROUGE-L", "CIDEr"}  # LongViViT's Table 3
    assert all(isinstance(r.answers[0], str) for r in outcome.results)

    # The same bridge with other bridge options, or on top of another encoder, is refused with the fix.
    for override, message in (("pipeline.encoder.num_latents=8", r"num_latents.*set pipeline.encoder.num_latents=4"),
                              ("pipeline.encoder.video.seed=4", "trained on another video")):
        cfg = load_run_config(REPO / "configs" / "youcook2.yaml", [*overrides, override], host.registry)
        with pytest.raises(UsageError, match=message):
            host.registry.get("encoders", "videofirst-captioner").load()(cfg.pipeline.encoder)


@pytest.mark.parametrize("override, expected", [
    ("mask.ratio=1.0", "'mask.ratio'"),
    ("mask.kind=cubes", "'mask.kind'"),
    ("model.lm=", "'model.lm'"),
    ("model.checkpoint=x.safetensors", "'model.checkpoint'"),
    ("data.caption_pattern=(", "'data.caption_pattern'"),
    ("model.decoding=sample", "'model.decoding'"),
])
def test_config_mistakes_are_one_line_naming_the_key(tmp_path, data, lm, host, override, expected):
    config = write_config(tmp_path, data, lm, "bad")
    with pytest.raises(UsageError, match=expected) as info:
        train(config, host, override)
    assert "\n" not in str(info.value)


def test_the_plugin_registers_without_importing_torch():
    code = ("import sys, vfeval_captioner.plugin as p; from vfeval.plugins import get_plugin_manager; "
            "h = get_plugin_manager(); assert 'videofirst-captioner' in h.registry.encoders; "
            "assert 'caption' in h.registry.aggregators and 'videofirst-captioner' in h.registry.trainers; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "VFEVAL_PLUGINS": PLUGINS})
    assert res.returncode == 0, res.stderr[-2000:]
