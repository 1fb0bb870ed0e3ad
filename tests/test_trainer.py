"""The ``videofirst-contrastive`` trainer: learning, exact resume, two-process DDP, stages, and its checkpoints in ``vfeval run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402
from vfeval_benchmarks.synthetic import write_synthetic  # noqa: E402

from vfeval.config import load_run_config, load_trainer_config  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 captioned synthetic training videos (8 s, 32 px) and 5 EgoSchema-format questions about others."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, n_videos=5, n_train_videos=8, duration=8.0, size=32, workers=1)
    return out


UNMASKED = (
    "{variant: tiny, tubelet: [2, 8, 8], num_frames: '${data.sampling.num_frames}', image_size: 32, mask: none, "
    "init: none, text: bytes, text_length: 48, embed_dim: 16, pool: mean, device: cpu}"
)


def write_config(folder: Path, root: Path, name: str = "t", **sections: str) -> Path:
    """A tiny from-scratch recipe (32 px, 4 frames, 32 tokens per clip) as YAML; ``sections`` replace whole lines."""
    lines = {
        "model": "{variant: tiny, tubelet: [2, 8, 8], num_frames: '${data.sampling.num_frames}', image_size: 32, "
        "mask: random, mask_ratio: 0.5, init: none, text: bytes, text_length: 48, embed_dim: 16, pool: mean, "
        "device: cpu}",
        "data": f"{{captions: {root / 'train' / 'captions.jsonl'}, "
        "sampling: {mode: uniform, num_frames: 4, size: 32, crop: 32}}",
        "optim": "{lr: 1.0e-3, warmup_steps: 2, steps: 6, batch_size: 2, grad_accum: 2}",
        "loss": "{kind: sigmoid}",
        "output_dir": str(folder / f"train-{name}"),
        "checkpoint_every": "2",
        "keep_checkpoints": "0",
        "log_every": "1",
    }
    lines.update(sections)
    body = "\n".join(f"{k}: {v}" for k, v in lines.items())
    path = folder / f"{name}.yaml"
    path.write_text(f"trainer: videofirst-contrastive\nname: {name}\n{body}\n")
    return path


def train(config: Path, host, *overrides: str) -> Path:
    spec, cfg = load_trainer_config(config, list(overrides), host.registry)
    return Path(spec.load()(cfg))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "loss, text, overrides",
    [
        ("{kind: infonce}", "bytes", []),
        ("{kind: infonce, captions: all, order_negatives: true}", "words", ["data.shift_text_positions=true"]),
    ],
    ids=["one-caption-bytes", "all-captions-words-shifted"],
)
def test_loss_decreases_on_a_tiny_set(tmp_path, data, host, loss, text, overrides):
    config = write_config(
        tmp_path,
        data,
        optim="{lr: 3.0e-4, warmup_steps: 5, steps: 60, batch_size: 8}",
        loss=loss,
        checkpoint_every="0",
    )
    config.write_text(config.read_text().replace("text: bytes", f"text: {text}"))
    final = train(config, host, *overrides)
    losses = [m["loss"] for m in metrics(final.parent)]
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2, losses
    record = metrics(final.parent)[-1]
    assert set(record) == {"step", "loss", "lr", "temperature", "clips_per_s", "elapsed"}
    assert record["step"] == 60 and record["clips_per_s"] > 0


def test_a_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path, data, host):
    straight = train(write_config(tmp_path, data, name="straight"), host)

    config = write_config(tmp_path, data, name="killed")
    train(config, host)
    run = tmp_path / "train-killed"
    # What a run killed right after its step-2 checkpoint leaves behind: later files never got written.
    for path in run.iterdir():
        if path.name == "final.safetensors" or path.name.startswith(("step-0000004", "step-0000006")):
            path.unlink()
    assert sorted(p.name for p in run.glob("step-*")) == [
        "step-0000002.safetensors",
        "step-0000002.state.safetensors",
    ]
    # ... and a metrics record torn by the kill: its line never got its newline.
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:9])
    with pytest.raises(UsageError, match="resume=true"):
        train(config, host)
    with pytest.raises(UsageError, match="config differs.*optim.lr"):
        train(config, host, "resume=true", "optim.lr=0.5")
    resumed = train(config, host, "resume=true")

    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The sigmoid loss's learned bias lives in the optimizer-side state and was restored too.
    sa, sb = (load_file(str(p.parent / "step-0000004.state.safetensors")) for p in (straight, resumed))
    assert torch.equal(sa["extra/bias"], sb["extra/bias"])
    steps = [m["step"] for m in metrics(run)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(straight.parent)]


def test_metrics_keep_the_records_up_to_the_checkpoint_and_refuse_a_corrupt_one(tmp_path):
    from vfeval_videofirst.run_files import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    records = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3))
    path.write_text(records + '{"step": 4, "lo')
    truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UsageError, match="metrics.jsonl: line 2 is not a metrics record"):
        truncate_metrics(path, 2)


@pytest.mark.parametrize("loss", ["{kind: sigmoid}", "{kind: infonce, captions: all}"], ids=["sigmoid", "all-captions"])
def test_two_processes_under_torchrun_match_one_process_with_their_global_batch(tmp_path, data, host, loss):
    # Without masks, 2 processes x 2 clips see the global batch one process of 4 clips sees (the sampler
    # shards one permutation): gathering embeddings must give the same loss and the same gradient. With
    # every caption of every clip, a caption that clips on both processes share counts once, as in one.
    model = UNMASKED
    config = write_config(
        tmp_path, data, name="ddp", model=model, optim="{lr: 1.0e-3, steps: 3, batch_size: 2}", loss=loss
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vfeval"]
    res = subprocess.run([*cmd, "train", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "train-ddp"
    assert res.stdout.count("final checkpoint:") == 2
    assert sorted(p.name for p in run.glob("step-*.state.safetensors")) == ["step-0000002.state.safetensors"]
    records = metrics(run)  # written once (rank 0), not once per process
    assert [m["step"] for m in records] == [1, 2, 3]

    single = train(
        write_config(
            tmp_path, data, name="one", model=model, optim="{lr: 1.0e-3, steps: 3, batch_size: 4}", loss=loss
        ),
        host,
    )
    np.testing.assert_allclose([m["loss"] for m in records], [m["loss"] for m in metrics(single.parent)], rtol=1e-5)
    a, b = load_file(str(run / "final.safetensors")), load_file(str(single))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def test_the_final_checkpoint_runs_in_vfeval_run(tmp_path, data, host):
    from vfeval.runner import run

    final = train(write_config(tmp_path, data, name="eval", optim="{lr: 1.0e-3, steps: 2, batch_size: 4}"), host)
    options = (
        "variant=tiny tubelet=[2,8,8] num_frames=4 image_size=32 init=none text=bytes text_length=48 "
        "embed_dim=16 pool=mean device=cpu"
    ).split()
    overrides = [
        "pipeline.encoder.name=videofirst",
        f"pipeline.encoder.checkpoint={final}",
        *(f"pipeline.encoder.{o}" for o in options),
        f"task.root={data / 'egoschema'}",
        "pipeline.sampling.num_frames=4",
        "pipeline.sampling.size=32",
        "pipeline.sampling.crop=32",
        f"output.dir={tmp_path / 'runs'}",
        f"output.cache_dir={tmp_path / 'cache'}",
    ]
    cfg = load_run_config(REPO / "configs" / "egoschema.yaml", overrides, host.registry)
    outcome = run(cfg, host, progress=False)
    assert outcome.result["complete"] and outcome.result["task"]["n_failed"] == 0
    weights = load_file(str(final))
    assert outcome.result["pipeline"]["encoder"]["parameters"] == sum(
        t.numel() for k, t in weights.items() if k != "logit_scale"
    ) + 1  # the logit scale is a parameter too

    encoder = host.registry.get("encoders", "videofirst").load()(cfg.pipeline.encoder)
    clips = [np.random.default_rng(i).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for i in range(2)]
    first = encoder.embed_video(clips)
    np.testing.assert_array_equal(first, encoder.embed_video(clips))
    again = host.registry.get("encoders", "videofirst").load()(cfg.pipeline.encoder)
    np.testing.assert_array_equal(first, again.embed_video(clips))

    # Options other than the training ones are refused, with the overrides that fit the checkpoint.
    wrong = load_run_config(
        REPO / "configs" / "egoschema.yaml", [*overrides, "pipeline.encoder.embed_dim=32"], host.registry
    )
    with pytest.raises(UsageError, match=r"embed_dim: 32.*set embed_dim=16"):
        host.registry.get("encoders", "videofirst").load()(wrong.pipeline.encoder)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A random CLIP whose vision tower has the ``tiny`` variant's sizes (32 px, 8 px patches)."""
    from vfeval.testing_models import build_clip

    return build_clip(tmp_path_factory.mktemp("clip"), width=64, vision_mlp=256, text_width=32, projection=16)


def test_two_stages_inflate_then_freeze_all_but_the_last_layer(tmp_path, data, host, tiny_clip):
    clip_model = (
        f"{{variant: tiny, tubelet: [2, 8, 8], num_frames: '${{data.sampling.num_frames}}', image_size: 32, "
        f"mask: random, mask_ratio: 0.5, init: clip, clip_model: {tiny_clip}, text: clip, embed_dim: 16, "
        "device: cpu}"
    )
    stage1 = train(
        write_config(tmp_path, data, name="s1", model=clip_model, loss="{kind: infonce}", checkpoint_every="0"),
        host,
    )
    stage2 = train(
        write_config(
            tmp_path,
            data,
            name="s2",
            model=clip_model.replace("mask_ratio: 0.5", "mask_ratio: 0.75"),
            data=f"{{captions: {data / 'train' / 'captions.jsonl'}, "
            "sampling: {mode: uniform, num_frames: 8, size: 32, crop: 32}}",
            stage=f"{{init_from: {stage1}, trainable_layers: 1, train_text: false}}",
            checkpoint_every="0",
        ),
        host,
    )
    one, two = load_file(str(stage1)), load_file(str(stage2))
    assert one["video.pos_time"].shape == (2, 64) and two["video.pos_time"].shape == (4, 64)
    frozen = [k for k in one if k.startswith(("video.embed", "video.blocks.0.", "text.")) or k == "video.cls"]
    assert frozen and all(torch.equal(one[k], two[k]) for k in frozen)
    learning = [k for k in one if k.startswith(("video.blocks.1.", "video.head"))]
    assert learning and all(not torch.equal(one[k], two[k]) for k in learning)


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_is_a_valid_config_and_says_how_to_run_it(recipe, host):
    import importlib

    assert recipe.read_text().startswith("# ") and f"vfeval train configs/train/{recipe.name}" in recipe.read_text()
    spec, cfg = load_trainer_config(recipe, [], host.registry)
    importlib.import_module(spec.factory.partition(":")[0]).validate(cfg)  # each recipe's own checks
    assert cfg.output_dir == f"runs/train-{cfg.name}"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lrr=0.1", "unknown key 'optim.lrr' (did you mean: lr?)"),
        ("loss.kind=hinge", "bad value for 'loss.kind'"),
        ("stage.trainable_layers=9", "bad value for 'stage.trainable_layers'"),
    ],
)
def test_config_mistakes_exit_2_with_one_line(tmp_path, data, override, expected):
    config = write_config(tmp_path, data)
    res = subprocess.run(
        [sys.executable, "-m", "vfeval", "train", str(config), override], capture_output=True, text=True
    )
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_captions_may_be_a_csv_of_windows(tmp_path, data):
    from vfeval.captions import read_captions

    videos = sorted((data / "train" / "videos").glob("*.mp4"))
    csv = tmp_path / "pairs.csv"
    rows = [f"{os.path.relpath(v, tmp_path)},a caption {i},{i},{i + 2}" for i, v in enumerate(videos[:3])]
    csv.write_text("video,caption,start,end\n" + "\n".join(rows) + "\n")
    pairs = read_captions(csv)
    assert [(p.captions, p.start, p.end) for p in pairs] == [((f"a caption {i}",), i, i + 2) for i in range(3)]
    assert pairs[0].video == str(videos[0].resolve())
    csv.write_text("video,caption\nnowhere.mp4,x\n")
    with pytest.raises(UsageError, match="1 of the 1 videos .* are missing"):
        read_captions(csv)


def test_the_plugin_registers_the_trainer_without_importing_torch():
    code = (
        "import sys; from vfeval.plugins import get_plugin_manager; "
        "spec = get_plugin_manager().registry.trainers['videofirst-contrastive']; "
        "assert 'torch' not in sys.modules; print(spec.factory)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "VFEVAL_PLUGINS": "videofirst"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "vfeval_videofirst.train_config:train"


def test_order_negatives_move_whole_events_and_word_dropout_keeps_the_connectives():
    import random

    from vfeval_videofirst.batching import drop_words, reorder

    caption = "a red circle moves left, then a blue square moves up, then a green triangle moves down"
    rng = random.Random(0)
    for _ in range(20):
        other = reorder(caption, rng)
        assert other != caption and sorted(other.split(", then ")) == sorted(caption.split(", then "))
        shorter = drop_words(caption, 0.5, rng)
        events = shorter.split(", then ")
        assert len(events) == 3 and all(e.strip() for e in events)
        assert all(set(e.split()) <= set(c.split()) for e, c in zip(events, caption.split(", then ")))
    assert reorder("Cut the onions, and then fry them. Then serve.", random.Random(1)) in {
        "Fry them, and then cut the onions. Then serve.",
        "Fry them, and then serve. Then cut the onions.",
        "Serve, and then cut the onions. Then fry them.",
        "Serve, and then fry them. Then cut the onions.",
        "Cut the onions, and then serve. Then fry them.",
    }
    assert reorder("a dog runs", rng) is None and reorder("x, then x", rng) is None


def test_rows_naming_one_window_are_one_clip_with_every_caption(tmp_path, data):
    from vfeval.captions import read_captions

    video = sorted((data / "train" / "videos").glob("*.mp4"))[0]
    rows = [{"video": str(video), "caption": c, "start": s} for c, s in [("a", None), ("b", 2), ("c", None)]]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips = read_captions(path)
    assert [(c.captions, c.start) for c in clips] == [(("a", "c"), None), (("b",), 2.0)]


def test_a_caption_shared_by_two_clips_is_no_negative_for_either():
    from vfeval_videofirst.torch.losses import infonce, sigmoid_loss

    g = torch.Generator().manual_seed(0)
    video, text, scale = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.tensor(1.5)
    logits = scale.exp() * torch.nn.functional.normalize(video, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    clip = (torch.nn.functional.cross_entropy(logits, torch.arange(3)) + torch.nn.functional.cross_entropy(logits.T, torch.arange(3))) / 2
    torch.testing.assert_close(infonce(video, text, scale), clip)  # one caption per clip: CLIP's loss

    # Text 0 is also a caption of clip 1: that pair leaves both softmaxes and becomes a positive pair.
    positives = torch.eye(3, dtype=torch.bool)
    positives[1, 0] = True
    g = logits
    pairs = [  # (row logit, the other logits it competes with), video → text then text → video
        (g[0, 0], g[0, [1, 2]]), (g[1, 0], g[1, [2]]), (g[1, 1], g[1, [2]]), (g[2, 2], g[2, [0, 1]]),
        (g[0, 0], g[[2], 0]), (g[1, 0], g[[2], 0]), (g[1, 1], g[[0, 2], 1]), (g[2, 2], g[[0, 1], 2]),
    ]
    by_hand = [torch.logsumexp(torch.cat([x[None], rest]), 0) - x for x, rest in pairs]
    expected = (torch.stack(by_hand[:4]).mean() + torch.stack(by_hand[4:]).mean()) / 2
    torch.testing.assert_close(infonce(video, text, scale, positives), expected)
    # SigLIP: the shared pair counts as a match.
    bias = torch.tensor(-1.0)
    signs = 2 * positives.float() - 1
    by_pair = -torch.nn.functional.logsigmoid(signs * (logits + bias)).sum() / 3
    torch.testing.assert_close(sigmoid_loss(video, text, scale, bias, positives), by_pair)


def test_hashed_words_give_any_text_ids_that_do_not_depend_on_the_process():
    from vfeval_videofirst.torch.model import WORD_BUCKETS, word_tokenize

    tokens = word_tokenize(["The last shape was BLUE.", "the last shape was blue .", "zyzzyva"], length=8)
    ids, mask = tokens["ids"], tokens["mask"]
    assert torch.equal(ids[0], ids[1])  # case and spacing do not matter; punctuation is a token
    assert ids[0, 0] == 1 and mask[0].sum() == 7 and mask[2].sum() == 2
    assert int(ids.max()) < WORD_BUCKETS and ids[2, 1] >= 2  # an unseen word has an id too
    code = "from vfeval_videofirst.torch.model import word_tokenize; print(word_tokenize(['blue'], 4)['ids'].tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2)}
    assert outs == {str(word_tokenize(["blue"], 4)["ids"].tolist())}


def test_shifted_text_positions_stay_inside_the_table_and_cover_it():
    from vfeval_videofirst.torch.model import SmallTextTower, shifted_positions, word_tokenize

    tokens = word_tokenize(["a b c d e f g", "a", "a b c d e f g h i j k l m n o"], length=16)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([shifted_positions(tokens["mask"], 16, g) for _ in range(400)])  # [400, 3]
    lengths = tokens["mask"].sum(1)  # 8, 2, 16 tokens with the start token
    assert bool(((draws + lengths) <= 16).all()) and bool((draws >= 0).all())
    assert [sorted(set(draws[:, i].tolist())) for i in range(3)] == [list(range(9)), list(range(15)), [0]]
    tower = SmallTextTower(width=16, depth=1, heads=2, mlp=32, embed_dim=8, length=16, tokens="words").eval()
    with torch.no_grad():  # a shift of 0 is the evaluation-time embedding; another shift is another one
        plain = tower(**tokens)
        torch.testing.assert_close(tower(**tokens, shift=torch.zeros(3, dtype=torch.long)), plain)
        assert not torch.allclose(tower(**tokens, shift=torch.tensor([3, 3, 0]))[0], plain[0])


def test_shifting_positions_needs_a_small_text_tower(tmp_path, data, host, tiny_clip):
    clip_model = (
        f"{{variant: tiny, tubelet: [2, 8, 8], num_frames: '${{data.sampling.num_frames}}', image_size: 32, "
        f"init: clip, clip_model: {tiny_clip}, text: clip, embed_dim: 16, device: cpu}}"
    )
    config = write_config(tmp_path, data, name="clipshift", model=clip_model)
    with pytest.raises(UsageError, match="data.shift_text_positions"):
        train(config, host, "data.shift_text_positions=true")


def test_a_run_folder_is_resumed_only_when_asked_and_only_with_the_same_config(tmp_path: Path) -> None:
    from vfeval_videofirst import run_files

    out = tmp_path / "train-x"
    config = {"optim": {"lr": 1e-3}, "resume": False}
    assert run_files.resume_point(out, config, resume=False) == (False, None)  # nothing there yet
    out.mkdir()
    (out / run_files.CONFIG).write_text(json.dumps(config), encoding="utf-8")
    run_files.weights_path(out, 20).write_bytes(b"")  # a checkpoint is both files of a step
    run_files.state_path(out, 20).write_bytes(b"")
    with pytest.raises(UsageError, match="already holds a training run; set resume=true"):
        run_files.resume_point(out, config, resume=False)
    assert run_files.resume_point(out, {**config, "resume": True}, resume=True) == (False, 20)
    with pytest.raises(UsageError, match="optim.lr"):
        run_files.resume_point(out, {"optim": {"lr": 1e-4}, "resume": True}, resume=True)
    (out / run_files.FINAL).write_bytes(b"")
    assert run_files.resume_point(out, config, resume=True) == (True, 20)
