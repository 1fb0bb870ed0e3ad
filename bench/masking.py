"""What masking, freezing and frame count cost: memory and time of the videofirst encoder, measured.

    python bench/masking.py                      # S variant, 16 frames, 224 px, batch 2
    python bench/masking.py --size 112 --batch 1 # smaller, for a slow machine

Each configuration runs in a fresh subprocess and reports the growth of its peak resident memory
(``ru_maxrss``) over the moment before the measured work began: torch's CPU allocations are invisible to
tracemalloc, and a fresh process per configuration keeps one configuration's high-water mark out of the
next one's. Training steps are forward + backward of the contrastive loss against fixed text embeddings
(no optimiser state). MFU is the encoder's forward FLOPs per second over this machine's fp32 matmul rate,
both measured in this run; FLOPs are counted by torch's FlopCounterMode plus attention counted by hand
(4 L^2 D per joint layer), since the counter does not see the CPU attention kernel.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build(args: dict):
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import build_model

    cfg = VideoFirstConfig(
        variant=args["variant"],
        image_size=args["size"],
        num_frames=args["frames"],
        init="none",
        text="none",
        mask="random",
        mask_ratio=args.get("ratio", 0.0),
        embed_dim=512,
        device="cpu",
    )
    return cfg, build_model(cfg)[0].video


def attention_flops(model, seq_len: int, batch: int) -> int:
    """QK^T and AV of every joint layer: 2 matmuls of L x L x D, 2 FLOPs per multiply-add."""
    width = model.pos_space.shape[1]
    return batch * len(model.blocks) * 4 * seq_len * seq_len * width


def worker(args: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from vfeval_videofirst.torch.model import contrastive_loss

    torch.manual_seed(0)
    cfg, model = build(args)
    video = torch.randn(args["batch"], 3, args["frames"], args["size"], args["size"])
    generator = torch.Generator().manual_seed(0)
    times = []
    if args["kind"] == "train":
        model.train()
        if args.get("freeze"):  # only the last `freeze` blocks and the head learn
            for p in model.parameters():
                p.requires_grad_(False)
            for module in [*model.blocks[-args["freeze"] :], model.ln_post, model.head]:
                for p in module.parameters():
                    p.requires_grad_(True)
        text = torch.nn.functional.normalize(torch.randn(args["batch"], 512), dim=-1)
        scale = torch.tensor(2.0)
        base = peak_rss_mib()
        for _ in range(args["steps"] + 1):  # the first step warms up and is not timed
            start = time.perf_counter()
            loss = contrastive_loss(model(video, generator=generator), text, scale)
            loss.backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        tokens = model.tokens(video, generator=generator)[0].shape[1]
    else:
        model.eval()
        base = peak_rss_mib()
        with torch.inference_mode():
            for _ in range(args["steps"] + 1):
                start = time.perf_counter()
                model(video)
                times.append(time.perf_counter() - start)
            tokens = model.tokens(video)[0].shape[1]
    result = {"peak_mib": peak_rss_mib() - base, "step_s": statistics.median(times[1:]), "tokens": tokens}
    if args.get("flops"):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(video)
        result["fwd_flops"] = counter.get_total_flops() + attention_flops(model, tokens, args["batch"])
    return result


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


def run(args: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(args)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"worker {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        print(json.dumps(worker(json.loads(ns.worker))))
        return

    base = dict(variant=ns.variant, size=ns.size, frames=ns.frames, batch=ns.batch, steps=ns.steps)
    started = time.perf_counter()
    dense = run({**base, "kind": "train", "ratio": 0.0})
    masked = run({**base, "kind": "train", "ratio": 0.75})
    frozen = run({**base, "kind": "train", "ratio": 0.75, "freeze": 4})
    infer = run({**base, "kind": "infer", "batch": 1, "flops": True})
    infer4 = run({**base, "kind": "infer", "batch": 1, "frames": 4 * ns.frames})
    rate = matmul_rate()
    mfu = infer["fwd_flops"] / infer["step_s"] / rate

    print(
        f"videofirst {ns.variant}, {ns.frames} frames, {ns.size} px, tubelet 2x16x16, batch {ns.batch} "
        f"(inference batch 1), fp32 CPU; {time.perf_counter() - started:.0f} s in all\n"
    )
    rows = [
        ("train, no masking", dense),
        ("train, 75% random masking", masked),
        ("train, 75% masking + last 4 layers only", frozen),
        (f"inference, {ns.frames} frames", infer),
        (f"inference, {4 * ns.frames} frames", infer4),
    ]
    print(f"{'configuration':42} {'tokens':>7} {'peak MiB':>9} {'step s':>8}")
    for name, r in rows:
        print(f"{name:42} {r['tokens']:>7} {r['peak_mib']:>9.0f} {r['step_s']:>8.2f}")
    print()
    figures = [
        ("memory saving, 75% masking (target >= 3x)", dense["peak_mib"] / masked["peak_mib"]),
        ("step speed-up, 75% masking (target >= 3x)", dense["step_s"] / masked["step_s"]),
        ("further memory saving, freezing (target >= 2x)", masked["peak_mib"] / frozen["peak_mib"]),
        ("further step speed-up, freezing", masked["step_s"] / frozen["step_s"]),
        ("inference memory, 4x frames (target <= 4.5x)", infer4["peak_mib"] / infer["peak_mib"]),
        ("inference time, 4x frames", infer4["step_s"] / infer["step_s"]),
    ]
    for name, value in figures:
        print(f"{name:52} {value:6.2f}x")
    print(f"{'matmul rate (fp32, 2048^2)':52} {rate / 1e9:6.1f} GFLOP/s")
    print(f"{'encoder forward rate':52} {infer['fwd_flops'] / infer['step_s'] / 1e9:6.1f} GFLOP/s")
    print(f"{'MFU, inference forward (target >= 50%)':52} {100 * mfu:6.1f} %")


if __name__ == "__main__":
    main()
