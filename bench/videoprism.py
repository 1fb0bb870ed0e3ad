"""VideoPrism's video tower in torch (the transformers port) and in JAX (our Flax model), side by side.

    python bench/videoprism.py                              # base (LvT) at 16 frames of 288 px, batch 1
    python bench/videoprism.py --variant tiny --frames 4 --size 36 --rounds 3   # a quick look
    python bench/videoprism.py --json bench-videoprism.json
    python bench/videoprism.py --threads 1                  # on a busy machine: both backends on one thread

Both backends get the same random weights (official layout, converted for torch with the same key map as
``vfeval convert``) and the same clips, and run ``embed_video`` (vision tower, auxiliary layers, pooler) in
float32 on the CPU:

- clips/s of each, timed in interleaved rounds in this one process (``harness.interleaved``), and JAX's
  throughput over torch's (target: at least 1/1.5, i.e. ours within 1.5x of the port);
- memory of each, in a fresh process with its framework imported: the resident set after loading the weights,
  building the model and one forward pass (weights, caches, compiled code), and the peak of the resident set
  during a second forward pass above that (activations and workspace; Linux's high-water mark, reset before
  it); for JAX also XLA's memory analysis of the compiled forward pass (its temporaries);
- the largest difference between the two backends' unit embeddings (a sanity check, not a timing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import best, interleaved, print_figures, ratio, single, write_json  # noqa: E402
from vfeval_videoprism.checkpoint import Arch, TextArch  # noqa: E402
from vfeval_videoprism.config import VARIANTS  # noqa: E402


def arch(name: str) -> Arch:
    if name == "tiny":
        return Arch(hidden=64, mlp=256, heads=4, spatial_layers=2, temporal_layers=1, frames=4, grid=(2, 2),
                    aux_layers=1, text=TextArch(vocab=64, hidden=64, mlp=256, heads=4, layers=1),
                    pooler_heads=4, pooler_head_dim=64)
    v = VARIANTS[f"videoprism-lvt-{name}-f{16 if name == 'base' else 8}r288"]
    side = v.image_size // 18
    return Arch(hidden=v.hidden, mlp=v.mlp, heads=v.heads, spatial_layers=v.spatial_layers,
                temporal_layers=v.temporal_layers, frames=v.frames, grid=(side, side), aux_layers=v.aux_layers,
                text=TextArch(vocab=v.vocab, hidden=v.hidden, mlp=v.mlp, heads=v.heads, layers=v.text_layers),
                pooler_heads=v.heads, pooler_head_dim=v.mlp // v.heads)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """The resident set's high-water mark (since the last ``_reset_peak``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs sets the high-water mark back to the current resident set.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def build(backend: str, params: dict[str, np.ndarray], threads: int):
    """A function clips -> unit embeddings (numpy) of ``backend`` with these official-layout weights."""
    from vfeval_videoprism.checkpoint import arch_from_official

    a = arch_from_official(params)
    if backend == "torch":
        import torch
        from vfeval_videoprism.checkpoint import official_to_hf
        from vfeval_videoprism.torch.encoder import hf_model

        torch.set_num_threads(threads)
        model = hf_model(*official_to_hf(params)).eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                pixels = torch.from_numpy(x).permute(0, 1, 4, 2, 3)
                out = model.get_video_features(pixel_values_videos=pixels, interpolate_pos_encoding=True)
            return out.pooler_output.reshape(len(x), -1).numpy()

        return run, None
    import jax
    from flax import nnx
    from vfeval_videoprism.jax.encoder import _embed_video
    from vfeval_videoprism.jax.model import build as build_model
    from vfeval_videoprism.jax.model import load_official

    jax_model = build_model(a)
    load_official(jax_model, params)
    graph, state = nnx.split(jax_model)
    del params, jax_model

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(jax.block_until_ready(_embed_video(graph, state, x)))

    def temp_mib(x: np.ndarray) -> float:
        stats = _embed_video.lower(graph, state, x).compile().memory_analysis()
        return stats.temp_size_in_bytes / 2**20 if stats is not None else float("nan")

    return run, temp_mib


def clips(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((args.batch, args.frames, args.size, args.size, 3), dtype=np.float32)


def memory_worker(args: argparse.Namespace, weights: str) -> None:
    """In a fresh process: the resident set's growth over loading, building and running one backend (its
    framework imported before the first reading)."""
    from vfeval_videoprism.checkpoint import read_official

    if args.memory == "torch":
        import torch  # noqa: F401
    else:
        import jax  # noqa: F401
        from flax import nnx  # noqa: F401
    x = clips(args)
    before = _rss_mib()
    run, temp = build(args.memory, read_official(weights), args.threads)
    run(x)  # JAX compiles here
    built = _rss_mib()
    _reset_peak()
    run(x)
    out = {"model_mib": built - before, "forward_peak_mib": _peak_mib() - built}
    if temp is not None:
        out["xla_temp_mib"] = temp(x)
    print(json.dumps(out))


def memory(backend: str, args: argparse.Namespace, weights: str) -> dict:
    cmd = [sys.executable, __file__, "--memory", backend, "--weights", weights, "--variant", args.variant, "--frames", str(args.frames),
           "--size", str(args.size), "--batch", str(args.batch), "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="base", choices=["tiny", "base", "large"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=288)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch's intra-op threads; 1 also limits XLA to one (fair on a busy machine)")
    p.add_argument("--json", default=None)
    p.add_argument("--memory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads == 1:  # XLA's CPU thread pool too, before jax is imported (workers inherit it)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    if args.memory:
        memory_worker(args, args.weights)
        return
    from vfeval_videoprism.checkpoint import write_official
    from vfeval_videoprism.jax.model import random_official

    params = random_official(arch(args.variant), seed=0)
    x = clips(args)
    runs = {b: build(b, params, args.threads)[0] for b in ("torch", "jax")}
    outs = {b: f(x) for b, f in runs.items()}  # also the warm-up (JAX compiles here)
    times = interleaved({b: (lambda f=f: f(x)) for b, f in runs.items()}, rounds=args.rounds, warmup=0)
    setting = f"{args.variant}, {args.batch} x {args.frames} x {args.size}^2"
    figures = [best(f"clips/s, torch (transformers port), {setting}", [args.batch / t for t in times["torch"]],
                    unit="clips/s", higher_is_better=True),
               best(f"clips/s, JAX (ours), {setting}", [args.batch / t for t in times["jax"]], unit="clips/s",
                    higher_is_better=True),
               ratio("JAX throughput / torch throughput", times["torch"], times["jax"], target=">= 0.667",
                     note="ours within 1.5x of the port")]
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "random.npz")
        write_official(params, weights)
        del params
        mem = {b: memory(b, args, weights) for b in ("torch", "jax")}
    for b in mem:
        figures += [single(f"resident after building and one forward pass, {b}", mem[b]["model_mib"]),
                    single(f"peak RSS during a forward pass, above that, {b}", mem[b]["forward_peak_mib"])]
    if "xla_temp_mib" in mem["jax"]:
        figures.append(single("XLA temporaries of the JAX forward", mem["jax"]["xla_temp_mib"]))
    figures.append(single("max |torch - JAX| of unit embeddings", float(np.abs(outs["torch"] - outs["jax"]).max()),
                          unit="abs"))
    print_figures(f"VideoPrism video tower on the CPU ({args.threads} threads, float32, random weights)", figures)
    write_json(args.json, "videoprism", figures, {"setting": vars(args)})


if __name__ == "__main__":
    main()
