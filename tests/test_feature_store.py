"""The feature store: tasks that ask for the same videos with the same encoder and sampling decode each once."""

from __future__ import annotations

import json

import pytest
from vfeval_benchmarks.synthetic import write_synthetic

from vfeval.config import load_run_config
from vfeval.runner import run

N_TEST = 5


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, formats=["msrvtt"], n_videos=N_TEST, n_train_videos=0, size=32, duration=8.0, fps=4,
                    workers=1)
    return out / "msrvtt"


def run_task(host, tmp, root, task: str, *extra: str):
    cfg = load_run_config(None, [
        f"task.name={task}", f"task.root={root}", "pipeline.encoder.name=pixel", "pipeline.aggregator.name=identity",
        "pipeline.sampling.num_frames=4", "pipeline.sampling.size=32", "pipeline.sampling.crop=32",
        f"output.dir={tmp}/runs", f"output.cache_dir={tmp}/cache", *extra,
    ], host.registry)
    return run(cfg, host, progress=False)


def test_shared_videos_are_decoded_once_across_tasks(msrvtt, host, tmp_path):
    data = json.loads((msrvtt / "MSRVTT_data.json").read_text())
    n_train = sum(v["split"] == "train" for v in data["videos"])

    retrieval = run_task(host, tmp_path, msrvtt, "msrvtt_retrieval", "task.split=full")
    assert retrieval.stats.windows_decoded == N_TEST and retrieval.stats.windows_from_store == 0

    # Same pipeline: the test videos' embeddings are already answered; only the training videos are decoded.
    category = run_task(host, tmp_path, msrvtt, "msrvtt_category")
    assert category.stats.cached == N_TEST and category.stats.windows_decoded == n_train

    # Another aggregator over the same encoder and sampling: new answers, all from stored features.
    pooled = run_task(host, tmp_path, msrvtt, "msrvtt_category", "pipeline.aggregator.name=mean")
    assert pooled.result["pipeline"]["fingerprint"] != category.result["pipeline"]["fingerprint"]
    assert pooled.stats.cached == 0 and pooled.stats.computed == N_TEST + n_train
    assert pooled.stats.windows_decoded == 0 and pooled.stats.windows_from_store == N_TEST + n_train
    assert pooled.result["metrics"]["accuracy"] == category.result["metrics"]["accuracy"]  # one segment: same

    # The 1k-A split asks for the same test videos: nothing to decode or to compute but its captions.
    one_k = run_task(host, tmp_path, msrvtt, "msrvtt_retrieval", "task.split=1k-A")
    assert one_k.stats.windows_decoded == 0 and one_k.stats.computed == 0

    # Other sampling is another feature set: decoded again.
    resampled = run_task(host, tmp_path, msrvtt, "msrvtt_retrieval", "task.split=full",
                         "pipeline.sampling.num_frames=2")
    assert resampled.stats.windows_decoded == N_TEST and resampled.stats.windows_from_store == 0
