"""What frames, masking and freezing cost: peak memory and time of a training step and of inference.

Each configuration runs in a fresh process (``python -m vfeval_videofirst.profile --worker JSON``), so one
configuration's measurement never sees another's. A warm-up step (which allocates the optimizer's state), then
the timed steps (time: their median), then one more step whose memory is measured by the allocator itself:
the most bytes that the step's own allocations hold at once (``_working_memory_mib``). On CUDA that is
``torch.cuda.max_memory_allocated`` above what was allocated before; on CPU, where torch has no allocator
statistics, the allocator's events under ``torch.profiler`` (``profile_memory``): one per allocation and free,
summed in order. It is exact and the same from run to run, as XLA's analysis of a compiled step is; the
resident set also moves with malloc's heap and the runtime's own buffers, by hundreds of MiB for the same
step (one 128-frame step read 2777 and 2350 MiB in all in two runs). Encoders other than videofirst, which need not
be torch, are measured by the growth of the resident set (``VmHWM`` reset before the measured steps through
``/proc/self/clear_refs``; ``ru_maxrss`` elsewhere, which would include a parent's peak), as
``memory_source`` says.

Both backends report memory the same way: ``peak_mib`` is a step's working memory beyond its inputs
(activations, gradients, temporaries) and ``args_mib`` its inputs (every weight of the video tower, the
optimizer state, the batch); a step needs the two together.

A training step is the videofirst video tower's forward pass over (masked) tokens, the contrastive loss
against fixed text embeddings, the backward pass and, unless turned off, the AdamW update of the
trainable parameters (the last K blocks when freezing, as ``stage.trainable_layers`` in training).
Inference is any registered encoder's ``embed_video`` on random clips; for videofirst a masking ratio
above 0 drops tokens at inference too (``mask_at_eval``).

With the encoder option ``backend=jax`` the videofirst measurements run in JAX (``jax/profile.py``): the
same step, its memory read from XLA's analysis of the compiled program instead of the process.

``vfeval profile`` runs a grid and writes a table and a JSON report; ``bench/masking.py`` uses the same
measurements. Nothing here imports torch at module level: the worker does, in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from itertools import product
from typing import Any

from vfeval.errors import UsageError

SCHEMA = "vfeval.profile/1"
VIDEOFIRST = "videofirst"
# Cost does not depend on the weights, so profiles build random ones without any text tower by default.
VIDEOFIRST_DEFAULTS: dict[str, Any] = {"init": "none", "text": "none"}
TEXT_DIM_DEFAULT = 512


_STATUS = "/proc/self/status"


def _status_mib(key: str) -> float | None:
    """A ``Vm*`` line of ``/proc/self/status`` in MiB, or None where there is no such file (not Linux)."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def memory_source() -> str:
    """How CPU peaks are measured here: ``VmHWM`` (reset before measuring) or ``ru_maxrss`` (never reset)."""
    return "VmHWM" if _status_mib("VmHWM") is not None else "ru_maxrss"


def reset_peak_rss() -> float:
    """Start a CPU measurement: reset the high-water mark to the current resident set where Linux allows it,
    and return the baseline (MiB) that ``peak_rss_mib() - baseline`` measures growth from."""
    if memory_source() == "VmHWM":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak resident set size (Linux 4.0+)
        except OSError:
            pass  # the peak is then the process's own since exec, still not the parent's
        return _status_mib("VmRSS") or 0.0
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB: ``VmHWM`` on Linux (since exec or the last
    ``reset_peak_rss``), else ``ru_maxrss``, which on Linux would include a parent's peak."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    scale = 2**20 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def attention_flops(model: Any, seq_len: int, batch: int) -> int:
    """QK^T and AV of every joint layer: 2 matmuls of L x L x D, 2 FLOPs per multiply-add."""
    width = model.pos_space.shape[1]
    return batch * len(model.blocks) * 4 * seq_len * seq_len * width


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    """fp32 FLOP/s of a square matmul, with torch's default thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------
# One measurement, in a worker process


def videofirst_config(options: dict[str, Any], kind: str, mask_ratio: float) -> Any:
    """The VideoFirstConfig a measurement builds: profile defaults, the user's options, then the masking."""
    from omegaconf import OmegaConf

    from vfeval_videofirst.config import VideoFirstConfig, validate

    merged = {**VIDEOFIRST_DEFAULTS, **options}
    if mask_ratio > 0:
        merged.setdefault("mask", "tube" if merged.get("attention") == "factorised" else "random")
        merged.update(mask_ratio=mask_ratio, mask_at_eval=kind == "infer")
    else:
        merged.update(mask="none", mask_ratio=0.0)
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VideoFirstConfig), merged))
    except Exception as exc:
        raise UsageError(f"profile: bad encoder option ({str(exc).splitlines()[0]})") from exc
    validate(cfg)
    check_backend(cfg.backend)
    return cfg


PROFILE_BACKENDS = {"": "torch", "torch": "torch", "jax": "jax"}


def check_backend(backend: str) -> None:
    """Refuse a backend the videofirst encoder does not have, or whose framework is not installed."""
    import importlib.util

    if backend not in PROFILE_BACKENDS:
        raise UsageError(f"profile: unknown backend {backend!r}; use torch or jax")
    module = PROFILE_BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        raise UsageError(f'profile: backend={backend} needs {module}, which is not installed: pip install "vfeval[{module}]"')


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _working_memory_mib(fn: Any, device: Any) -> float:
    """The working memory of ``fn()`` in MiB: the most bytes that its own allocations held at once, net of its
    own frees (tensors that existed before it are its inputs and not counted). On CUDA the caching
    allocator's peak; on CPU the allocator's events under ``torch.profiler`` (``profile_memory``), one per
    allocation and free, summed in order: exact, and the same from run to run, where the resident set also
    moves with malloc's heap and the runtime's own buffers."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:  # > 0: an allocation, < 0: a free
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def _name(device: Any) -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def _videofirst(args: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vfeval_videofirst.config import token_grid
    from vfeval_videofirst.masking import mask_rng
    from vfeval_videofirst.torch.encoder import build_model, resolve_device
    from vfeval_videofirst.torch.model import contrastive_loss
    from vfeval_videofirst.torch.train import set_trainable

    kind, batch, frames = args["kind"], args["batch"], args["frames"]
    cfg = videofirst_config(args.get("options", {}), kind, args.get("mask_ratio", 0.0))
    device = resolve_device(args.get("device", "cpu"))
    torch.manual_seed(0)
    dual = build_model(cfg)[0]
    model = dual.video.to(device)
    size = cfg.image_size
    video = torch.randn(batch, 3, frames, size, size, device=device)
    generator = mask_rng(0)  # masks are drawn with numpy (vfeval_videofirst.masking), as in training
    times = []
    keep = None  # training draws its masks from ``generator``, step by step
    if kind == "train":
        model.train()
        set_trainable(dual, args.get("trainable_layers", -1), train_text=False, learn_temperature=False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4) if args.get("optimizer", True) else None
        text = torch.nn.functional.normalize(torch.randn(batch, cfg.embed_dim, device=device), dim=-1)
        scale = torch.tensor(2.0, device=device)

        def step() -> None:
            loss = contrastive_loss(model(video, generator=generator), text, scale)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            model.zero_grad(set_to_none=True)

        run = step
    else:
        model.eval()
        keep = model.draw_keep(batch, token_grid(cfg, frames), generator)

        def run() -> None:
            with torch.inference_mode():
                model(video, keep=keep)

    run()  # warm-up, not measured: it allocates the optimizer's state, an input of every later step
    _sync(device)
    for _ in range(args["steps"]):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = _working_memory_mib(run, device)  # one more step, on its own: the profiler would slow a timed one
    with torch.no_grad():
        x = model.tokens(video, keep=keep, generator=generator)[0]
    tokens = x.shape[1] if x.dim() == 3 else x.shape[1] * x.shape[2]
    step_s = statistics.median(times)
    # The step's inputs, as XLA counts a compiled step's arguments: every weight of the tower, the optimizer's
    # state (allocated by the warm-up step) and the batch.
    state = sum(t.nbytes for s in (optimizer.state.values() if kind == "train" and optimizer else ()) for t in
                s.values() if torch.is_tensor(t))
    weights = sum(t.nbytes for t in [*model.parameters(), *model.buffers()])
    result = {"peak_mib": peak, "args_mib": (weights + state + video.nbytes) / 2**20, "step_s": step_s,
              "tokens": int(tokens), "device": _name(device),
              "memory_source": "cuda" if device.type == "cuda" else "allocator"}
    if args.get("flops"):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(video)
        result["fwd_flops"] = counter.get_total_flops() + attention_flops(model, tokens, batch)
    return result


def _any_encoder(args: dict[str, Any]) -> dict[str, Any]:
    """Inference through the plain ``Encoder`` interface, for encoders other than videofirst."""
    import numpy as np
    from omegaconf import OmegaConf

    from vfeval.plugins import get_plugin_manager

    if args["kind"] != "infer":
        raise UsageError(f"profile: training steps are measured for {VIDEOFIRST!r} only, not {args['encoder']!r}")
    spec = get_plugin_manager().registry.get("encoders", args["encoder"])
    schema = OmegaConf.structured(spec.config) if spec.config else OmegaConf.create({})
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, {"name": args["encoder"], **args.get("options", {})}))
    encoder = spec.load()(cfg)
    rng = np.random.default_rng(0)
    size = args.get("size") or 224
    clips = [rng.integers(0, 256, (args["frames"], size, size, 3), dtype=np.uint8) for _ in range(args["batch"])]
    base = reset_peak_rss()
    times = []
    for _ in range(args["steps"] + 1):
        start = time.perf_counter()
        encoder.embed_video(clips)
        times.append(time.perf_counter() - start)
    return {"peak_mib": peak_rss_mib() - base, "step_s": statistics.median(times[1:]), "tokens": None, "device": "cpu",
            "memory_source": memory_source()}


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process (see the module docstring for what is measured)."""
    if args.get("encoder", VIDEOFIRST) != VIDEOFIRST:
        result = _any_encoder(args)
    else:
        cfg = videofirst_config(args.get("options", {}), args["kind"], args.get("mask_ratio", 0.0))
        if cfg.backend == "jax":  # XLA's compiled memory analysis (``jax/profile.py``)
            from vfeval_videofirst.jax.profile import measure as measure_jax

            result = measure_jax(args, cfg)
        else:
            result = _videofirst(args)
    result["clips_per_s"] = args["batch"] / result["step_s"] if result["step_s"] > 0 else None
    return result


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """``worker(args)`` in a fresh Python process; its stderr becomes the error if it fails."""
    out = subprocess.run(
        [sys.executable, "-m", "vfeval_videofirst.profile", "--worker", json.dumps(args)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"profile worker {json.dumps(args)} failed: {lines[-1] if lines else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# A grid of measurements


def grid(
    frames: list[int], mask_ratios: list[float], trainable_layers: list[int], kinds: list[str]
) -> list[dict[str, Any]]:
    """The configurations to measure: training over frames x ratios x layers, inference over frames x ratios."""
    rows = []
    for kind in kinds:
        layers = trainable_layers if kind == "train" else [None]
        for f, r, k in product(frames, mask_ratios, layers):
            rows.append({"kind": kind, "frames": f, "mask_ratio": r, "trainable_layers": k})
    return rows


def check(encoder: str, options: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Refuse a grid that cannot run, before any process is started."""
    from vfeval_videofirst.config import architecture

    for row in rows:
        if row["kind"] not in ("train", "infer"):
            raise UsageError(f"profile: unknown kind {row['kind']!r}; use train or infer")
        if row["frames"] < 1 or not 0 <= row["mask_ratio"] < 1:
            raise UsageError(f"profile: frames must be positive and mask ratios in [0, 1), got {row}")
    if encoder != VIDEOFIRST:
        if any(r["kind"] == "train" for r in rows) or any(r["mask_ratio"] for r in rows):
            raise UsageError(f"profile: only {VIDEOFIRST!r} has training steps and masks; use --kinds infer --mask-ratios 0")
        return
    for row in rows:
        cfg = videofirst_config(options, row["kind"], row["mask_ratio"])
        depth = architecture(cfg)["depth"]
        if row["trainable_layers"] is not None and not -1 <= row["trainable_layers"] <= depth:
            raise UsageError(f"profile: trainable layers must be -1 (all) or 0..{depth}, got {row['trainable_layers']}")


def provenance() -> dict[str, Any]:
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "vfeval": version("vfeval"),
        "torch": version("torch"),
        "jax": version("jax"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def profile(
    encoder: str,
    options: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    batch: int,
    infer_batch: int,
    steps: int,
    device: str = "auto",
    optimizer: bool = True,
    size: int = 0,
    on_row: Any = None,
) -> dict[str, Any]:
    """Measure every configuration of ``rows`` in its own process; returns the report (``SCHEMA``)."""
    check(encoder, options, rows)
    measured, devices, sources = [], set(), set()
    for row in rows:
        b = batch if row["kind"] == "train" else infer_batch
        args = {
            "encoder": encoder,
            "options": options,
            **row,
            "batch": b,
            "steps": steps,
            "device": device,
            "optimizer": optimizer,
            "size": size,
        }
        if row["trainable_layers"] is None:
            args.pop("trainable_layers")
        result = {**row, "batch": b, **measure(args)}
        devices.add(result.pop("device"))
        sources.add(result.pop("memory_source"))
        measured.append(result)
        if on_row is not None:
            on_row(result)
    return {
        "schema": SCHEMA,
        "encoder": {"name": encoder, "options": {**(VIDEOFIRST_DEFAULTS if encoder == VIDEOFIRST else {}), **options}},
        "device": ", ".join(sorted(devices)) or device,
        "steps": steps,
        "optimizer": optimizer,
        "memory_source": ", ".join(sorted(sources)),
        "measures": {
            "peak_mib": "the step's working memory beyond its inputs (activations, gradients, temporaries); torch: "
            "growth of peak memory over the moment before the measured steps (CPU: VmHWM, reset first; CUDA: "
            "max_memory_allocated), less the optimizer state the first step allocates; jax (memory_source xla): "
            "the compiled step's temporaries and outputs not aliased to its inputs, from XLA's memory analysis; MiB",
            "args_mib": "the step's inputs: every weight of the video tower, the optimizer state (AdamW's moments) "
            "and the batch, MiB; a training step needs args_mib + peak_mib in all",
            "step_s": "median seconds of the timed steps after one warm-up step",
            "clips_per_s": "batch / step_s",
            "tokens": "tokens entering the transformer per clip (class tokens included, after masking)",
        },
        "provenance": provenance(),
        "rows": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="One profile measurement (used by `vfeval profile`).")
    parser.add_argument("--worker", required=True, help="JSON arguments of one measurement")
    ns = parser.parse_args()
    print(json.dumps(worker(json.loads(ns.worker))))


if __name__ == "__main__":
    main()
