"""``vfeval profile``: a grid of measured configurations, each in its own process, as a table and a JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

TINY = ["variant=tiny", "image_size=32", "tubelet=[2,8,8]", "embed_dim=16", "num_frames=4"]


def profile(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vfeval", "profile", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )


def test_a_one_by_two_grid_writes_every_configuration(tmp_path):
    out = tmp_path / "reports" / "profile.json"
    res = profile(
        *TINY, "--frames", "4", "--mask-ratios", "0,0.5", "--trainable-layers", "1",
        "--kinds", "train,infer", "--steps", "1", "--device", "cpu", "--out", str(out), cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "vfeval.profile/1" and report["device"] == "cpu"
    assert report["encoder"]["name"] == "videofirst" and report["encoder"]["options"]["variant"] == "tiny"
    assert {"torch", "vfeval", "cpus", "date"} <= set(report["provenance"])
    rows = report["rows"]
    assert [(r["kind"], r["mask_ratio"], r["trainable_layers"]) for r in rows] == [
        ("train", 0.0, 1), ("train", 0.5, 1), ("infer", 0.0, None), ("infer", 0.5, None)
    ]
    for r in rows:
        assert set(r) == {"kind", "frames", "mask_ratio", "trainable_layers", "batch", "tokens", "peak_mib",
                          "args_mib", "step_s", "clips_per_s"}
        assert r["frames"] == 4 and r["step_s"] > 0 and r["clips_per_s"] > 0 and r["peak_mib"] >= 0
    # 4 frames of 32 px in 2x8x8 tubelets: 2 x 4 x 4 patch tokens plus one class token per slice.
    assert rows[0]["tokens"] == 34 and rows[1]["tokens"] == 18 and rows[2]["tokens"] == 34
    assert rows[0]["batch"] == 2 and rows[2]["batch"] == 1
    assert "peak MiB" in res.stdout and "clips/s" in res.stdout


def test_a_grid_that_cannot_run_is_refused_before_measuring(tmp_path):
    res = profile(*TINY, "--trainable-layers", "5", "--out", str(tmp_path / "p.json"), cwd=tmp_path)
    assert res.returncode == 2 and "trainable layers must be -1 (all) or 0..2" in res.stderr
    res = profile("variant=huge", "--out", str(tmp_path / "p.json"), cwd=tmp_path)
    assert res.returncode == 2 and "bad value for 'variant'" in res.stderr
    assert not (tmp_path / "p.json").exists()


def test_backend_jax_reads_memory_from_the_compiled_step(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "jax.json"
    res = profile(
        *TINY, "backend=jax", "--frames", "8", "--mask-ratios", "0,0.75", "--trainable-layers", "all",
        "--kinds", "train,infer", "--steps", "1", "--device", "cpu", "--out", str(out), cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["memory_source"] == "xla" and report["encoder"]["options"]["backend"] == "jax"
    assert report["provenance"]["jax"]
    train, masked, infer, _ = report["rows"]
    # 8 frames of 32 px in 2x8x8 tubelets: 4 x 16 patch tokens plus one class token per slice; 75% masked: 16 kept.
    assert (train["tokens"], masked["tokens"], infer["tokens"]) == (68, 20, 68)
    for r in report["rows"]:
        assert r["peak_mib"] > 0 and r["args_mib"] > 0 and r["step_s"] > 0
    # Dropped tokens never enter the encoder, so the compiled step needs less memory.
    assert masked["peak_mib"] < train["peak_mib"]
    assert train["args_mib"] == pytest.approx(masked["args_mib"], abs=0.01)  # same weights and optimizer state

    # Both backends count a step's inputs alike (every weight, AdamW's two moments, the batch): the torch worker
    # measuring the same grid reports the same inputs, and its peak excludes the optimizer state it allocated.
    torch_out = tmp_path / "torch.json"
    res = profile(
        *TINY, "--frames", "8", "--mask-ratios", "0,0.75", "--trainable-layers", "all",
        "--kinds", "train,infer", "--steps", "1", "--device", "cpu", "--out", str(torch_out), cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for jax_row, torch_row in zip(report["rows"], json.loads(torch_out.read_text())["rows"]):
        assert torch_row["args_mib"] == pytest.approx(jax_row["args_mib"], rel=0.02), (jax_row, torch_row)


def test_a_backend_the_encoder_does_not_have_is_refused(tmp_path):
    res = profile(*TINY, "backend=tensorflow", "--out", str(tmp_path / "p.json"), cwd=tmp_path)
    assert res.returncode == 2 and "unknown backend 'tensorflow'; use torch or jax" in res.stderr


def test_cpu_working_memory_is_the_allocators_exact_peak():
    """On CPU a step's memory is summed from the allocator's own events: what the step allocates and still holds
    at its worst moment, exactly, and nothing that existed before it."""
    import torch

    from vfeval_videofirst.profile import _working_memory_mib

    before = torch.ones(4 * 2**20 // 4)  # 4 MiB held by the caller: an input, not the step's

    def step():
        a = torch.empty(8 * 2**20 // 4)  # 8 MiB
        b = torch.empty(2 * 2**20 // 4)  # 10 MiB held: the peak
        del a
        c = torch.empty(1 * 2**20 // 4)  # 3 MiB held
        return b, c

    cpu = torch.device("cpu")
    assert _working_memory_mib(step, cpu) == 10.0
    assert _working_memory_mib(lambda: before.mul_(2), cpu) < 1e-4  # in place: only the scalar 2 is allocated


def test_torch_step_memory_is_the_same_in_every_run_and_masking_shrinks_it(tmp_path):
    out = tmp_path / "p.json"
    rows = []
    for _ in range(2):
        res = profile(*TINY, "--frames", "8", "--mask-ratios", "0,0.75", "--trainable-layers", "all",
                      "--kinds", "train", "--steps", "1", "--device", "cpu", "--out", str(out), cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        report = json.loads(out.read_text())
        assert report["memory_source"] == "allocator"
        rows.append([r["peak_mib"] for r in report["rows"]])
    assert rows[0] == rows[1]  # exact, where the resident set of the same step moves from run to run
    dense, masked = rows[0]
    # 75% of the tokens never embedded nor attended; the weights' gradients are in both
    assert dense > 1.5 * masked > 0
