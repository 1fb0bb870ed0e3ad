"""The comparison protocol of the pre-training recipes: the synthetic order probe, the training summary that a
trainer stores in its checkpoint and a result records, and the leaderboard's recipes view built from records.

The order probe's claim is checked where it is made: an encoder that pools its frames without their order
(the pixel baseline) is at chance, one that keeps the order reads the label off, through the same probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vfeval_baselines.encoders.pixel import PixelColourEncoder
from vfeval_benchmarks import _probe
from vfeval_benchmarks.synthetic import write_synthetic
from vfeval_benchmarks.synthetic.order import classes, make_items
from vfeval_benchmarks.synthetic.render import render

from vfeval.config import load_run_config, load_trainer_config
from vfeval.errors import UsageError
from vfeval.leaderboard.build import build_site
from vfeval.leaderboard.records import Record, add_run, load_records, rank
from vfeval.metrics import bootstrap
from vfeval.runner import rescore, run

N_VIDEOS = 8
SMALL = {"n_train_videos": 0, "size": 32, "duration": 8.0, "fps": 4, "workers": 1}


@pytest.fixture(scope="module")
def order_root(tmp_path_factory) -> Path:
    """The order probe's files: 8 training and 8 test videos (8 s, 32 px, the 4 default colours)."""
    out = tmp_path_factory.mktemp("order")
    return write_synthetic(out, formats=["order"], n_videos=N_VIDEOS, **SMALL)["order"]


def run_order(host, tmp: Path, root: Path, *extra: str):
    overrides = [
        "task.name=synthetic_order", f"task.root={root}", "pipeline.encoder.name=pixel",
        "pipeline.aggregator.name=identity", "pipeline.sampling.num_frames=8", "pipeline.sampling.size=32",
        "pipeline.sampling.crop=32", f"output.dir={tmp}/runs", f"output.cache_dir={tmp}/cache", *extra,
    ]
    return run(load_run_config(None, overrides, host.registry), host, progress=False)


# -- the data --------------------------------------------------------------------------------------------


def test_every_order_video_shows_the_same_colours_and_ends_with_its_label(order_root):
    data = json.loads((order_root / "order.json").read_text())
    events = json.loads((order_root / "synthetic_events.json").read_text())
    assert data["classes"] == classes(4) == ["red", "green", "blue", "yellow"]
    for split in ("train", "test"):
        labels = [v["label"] for v in data["videos"] if v["split"] == split]
        assert sorted(labels) == sorted([0, 1, 2, 3] * 2)  # balanced: each colour last in 2 of 8 videos
    for v in data["videos"]:
        scene = events[v["video_id"]]["scene"]["events"]
        assert sorted(e["colour"] for e in scene) == sorted(data["classes"])
        assert scene[-1]["colour"] == data["classes"][v["label"]]
    assert len(list((order_root / "videos").glob("*.mp4"))) == 2 * N_VIDEOS


def test_writing_the_order_format_leaves_the_other_formats_as_they_were(tmp_path):
    alone = write_synthetic(tmp_path / "a", formats=["msrvtt"], n_videos=3, **SMALL)["msrvtt"]
    both = write_synthetic(tmp_path / "b", formats=["msrvtt", "order"], n_videos=3, **SMALL)["msrvtt"]
    for name in ("MSRVTT_data.json", "MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv", "synthetic_events.json"):
        assert (alone / name).read_bytes() == (both / name).read_bytes()
    readme_a, readme_b = ((p.parent / "README.md").read_text() for p in (alone, both))
    assert readme_a.split("- `.vfeval")[0] == readme_b.split("- `order/`")[0]


@pytest.mark.parametrize("frames", [8, 16])
def test_pooled_frames_score_at_chance_and_ordered_frames_read_the_label(frames):
    """150 probe-training and 150 test videos rendered in memory (no mp4), sampled as ``uniform`` does (the
    centres of equal spans): the pixel baseline's colour shares pooled over frames are at chance (1 in 4:
    the 95% CI holds 25%), the same features kept frame by frame score over 90%."""
    pixel = PixelColourEncoder()
    pooled, ordered, labels, split = [], [], [], []
    for item in make_items(seed=3, n_videos=150, duration=8.0, n_events=4):
        video = render(item["scene"], fps=4, width=32, height=32)
        times = (np.arange(frames) + 0.5) * 8.0 / frames
        clip = video[np.minimum((times * 4).astype(int), len(video) - 1)]
        per_frame = [pixel.embed_video([clip[i : i + 1]])[0] for i in range(frames)]
        pooled.append(np.mean(per_frame, axis=0))
        ordered.append(np.concatenate(per_frame))
        labels.append(item["label"])
        split.append(item["split"])
    y, train = np.array(labels), np.array(split) == "train"
    for features, low, high in ((pooled, 0.0, 100.0), (ordered, 90.0, 100.0)):
        x = np.asarray(features)
        fit = _probe.fit_predict(x[train], y[train], x[~train])
        correct = 100.0 * (fit.predictions == y[~train])
        mean, ci_low, ci_high = bootstrap.mean_ci(correct, [str(i) for i in range(correct.size)], seed=0)
        assert low <= mean <= high
        if high == 100.0 and low == 0.0:
            assert ci_low <= 25.0 <= ci_high, (mean, ci_low, ci_high)


# -- the task --------------------------------------------------------------------------------------------


def test_the_order_probe_runs_end_to_end_and_rescores_identically(order_root, host, tmp_path):
    outcome = run_order(host, tmp_path, order_root)
    res = outcome.result
    assert res["task"]["n"] == 2 * N_VIDEOS and res["metrics"]["accuracy"]["n"] == N_VIDEOS
    options = res["protocol"]["options"]
    assert options["probe"] == {"features": "standardised", "solver": "lbfgs", "max_iter": _probe.MAX_ITER, "c": 1.0}
    assert options["data"] == "synthetic" and "annotations" in res["protocol"]["files"]
    assert set(res["breakdowns"]["accuracy_by_colour"]) == {"0", "1", "2", "3"}
    assert "commonest training colour" in res["notes"][0]
    old, new = rescore(outcome.run_dir, host)
    assert json.dumps(new["metrics"], sort_keys=True) == json.dumps(old["metrics"], sort_keys=True)
    assert "training" not in res["pipeline"]  # the pixel encoder was never trained: nothing is claimed


def test_missing_or_malformed_order_files_are_one_line_errors(order_root, host, tmp_path):
    with pytest.raises(UsageError, match="--formats order"):
        run_order(host, tmp_path, tmp_path / "nowhere")
    bad = tmp_path / "bad"
    (bad / "videos").mkdir(parents=True)
    (bad / "order.json").write_text(json.dumps({"classes": ["red"], "videos": [{"video_id": "a", "split": "test",
                                                                                  "label": 3}]}))
    with pytest.raises(UsageError, match=r"videos\[0\] key 'label' must be an index into 'classes'"):
        run_order(host, tmp_path, bad)


# -- training summaries, records and the recipes view ---------------------------------------------------


def tiny_recipe(folder: Path, captions: Path, name: str, *extra: str) -> list[str]:
    return [
        f"name={name}", f"output_dir={folder / name}", f"data.captions={captions}", "data.sampling.num_frames=4",
        "data.sampling.size=32", "data.sampling.crop=32", "model.variant=tiny", "model.tubelet=[2,8,8]",
        "model.image_size=32", "model.init=none", "model.text=bytes", "model.embed_dim=16", "model.pool=mean",
        "model.device=cpu", "optim.steps=2", "optim.batch_size=2", "optim.warmup_steps=0", "loss.kind=infonce",
        "checkpoint_every=0", "log_every=1", *extra,
    ]


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory) -> Path:
    """A two-stage recipe in miniature (2 steps unmasked, then 2 steps with half the tubes masked, initialised
    from the first); returns the second stage's final checkpoint."""
    pytest.importorskip("torch")
    from vfeval.plugins import get_plugin_manager

    host = get_plugin_manager()
    folder = tmp_path_factory.mktemp("recipe")
    data = write_synthetic(folder / "data", formats=[], n_train_videos=4, size=32, duration=8.0, workers=1)
    captions = data["train"] / "captions.jsonl"
    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "synthetic.yaml"
    final = None
    for name, extra in (("stage1", ["model.mask=none", "model.mask_ratio=0.0"]),
                        ("stage2", ["model.mask=random", "model.mask_ratio=0.5",
                                    f"stage.init_from={folder / 'stage1' / 'final.safetensors'}",
                                    "stage.time_embedding_std=0.0"])):
        spec, cfg = load_trainer_config(config, tiny_recipe(folder, captions, name, *extra), host.registry)
        final = Path(spec.load()(cfg))
    return final


ENCODER = ("pipeline.encoder.name=videofirst", "pipeline.encoder.variant=tiny", "pipeline.encoder.tubelet=[2,8,8]",
           "pipeline.encoder.image_size=32", "pipeline.encoder.init=none", "pipeline.encoder.text=bytes",
           "pipeline.encoder.embed_dim=16", "pipeline.encoder.pool=mean", "pipeline.encoder.device=cpu",
           "pipeline.encoder.num_frames=4", "pipeline.encoder.text_length=48", "pipeline.sampling.num_frames=4")


def test_a_trained_checkpoint_carries_its_stages_into_the_result_and_the_recipes_view(
        two_stages, order_root, host, tmp_path):
    from vfeval_videofirst import checkpoint

    summary = checkpoint.read_training(two_stages)
    assert [(s["trainer"], s["masking"], s["steps"], s["frames"]) for s in summary["stages"]] == [
        ("videofirst-contrastive", "none", 2, 4), ("videofirst-contrastive", "random 50%", 2, 4)]
    assert summary["stages"][0]["objective"] == "video-text infonce + order negatives"

    trained = run_order(host, tmp_path / "t", order_root, *ENCODER, f"pipeline.encoder.checkpoint={two_stages}",
                        "output.name=two-stage")
    scratch = run_order(host, tmp_path / "r", order_root, *ENCODER, "output.name=random-init")
    assert trained.result["pipeline"]["training"] == summary
    assert scratch.result["pipeline"]["training"] == {"stages": []}
    # How the weights were made is a description, outside the fingerprint (the weights hash is inside it).
    again = run_order(host, tmp_path / "t", order_root, *ENCODER, f"pipeline.encoder.checkpoint={two_stages}",
                      "output.name=two-stage")
    assert again.result["pipeline"]["fingerprint"] == trained.result["pipeline"]["fingerprint"]
    assert again.stats.computed == 0

    results = tmp_path / "results"
    for outcome in (trained, scratch):
        add_run(outcome.run_dir, results)
    records = load_records(results)
    rank(records)
    by_run = {r.run: r for r in records}
    assert by_run["two-stage"].training_label("masking") == "none → random 50%"
    assert by_run["two-stage"].training_steps == 4 and by_run["random-init"].training_steps == 0
    assert by_run["random-init"].training_label("objective") == "random init"
    index = build_site(results, tmp_path / "site")
    page = (index.parent / "recipes.html").read_text()
    assert "two-stage" in page and "random-init" in page and "none → random 50%" in page
    assert "order negatives → video-text" in page and "synthetic_order" in page
    assert 'href="recipes.html"' in index.read_text()


def test_records_without_training_build_no_recipes_view(tmp_path):
    record = Record({"pipeline": {"encoder": {"name": "pixel"}}})
    assert record.training_stages is None and record.training_label("objective") == ""
    assert record.training_steps is None


def test_the_recipes_suite_trains_one_backbone_on_one_budget(host):
    """configs/suites/recipes.yaml: every recipe's encoder has the same transformer size and image size, sees 16
    frames of a video per step in batches of 8, and the recipes take the same number of optimizer steps."""
    from vfeval.suite import load_suite

    suite = load_suite(Path(__file__).resolve().parents[1] / "configs" / "suites" / "recipes.yaml")
    configs = {}
    for name, step in suite.train.items():
        _, configs[name] = load_trainer_config(step.config, list(step.overrides), host.registry)
    encoders = {k: c for k, c in configs.items() if k != "vqvae"}
    assert {(c.model.variant, c.model.image_size) for c in encoders.values()} == {("tiny", 32)}
    frames = {k: c.data.sampling.num_frames for k, c in encoders.items()}  # VIMPAC cuts its two clips from them
    assert set(frames.values()) == {16} and {c.optim.batch_size for c in encoders.values()} == {8}
    budget = {recipe: sum(c.optim.steps for k, c in encoders.items() if k.startswith(recipe))
              for recipe in ("longvivit", "videoprism", "vimpac")}
    assert len(set(budget.values())) == 1, budget
    assert configs["longvivit-stage1"].model.attention == "joint"
    assert configs["videoprism-stage1"].model.attention == "factorised"
    assert configs["videoprism-stage2"].stage.init_from == suite.train["videoprism-stage1"].checkpoint
    assert configs["longvivit-stage2"].stage.init_from == suite.train["longvivit-stage1"].checkpoint
    assert {p for p, e in suite.pipelines.items() if e.pipeline["encoder"].get("checkpoint") == ""} \
        == {"longvivit-random-init", "videoprism-random-init"}
