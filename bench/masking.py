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
import time

from vfeval_videofirst.profile import matmul_rate, measure

# The configuration every row shares: random weights, no text tower, 512-d embeddings, random masks.
OPTIONS = {"init": "none", "text": "none", "mask": "random", "embed_dim": 512, "device": "cpu"}


def run(args: dict) -> dict:
    """One measurement in a fresh process (``vfeval_videofirst.profile.measure``), without optimizer state."""
    options = {**OPTIONS, "variant": args["variant"], "image_size": args["size"], "num_frames": args["frames"]}
    return measure(
        {
            "encoder": "videofirst",
            "options": options,
            "kind": args["kind"],
            "frames": args["frames"],
            "mask_ratio": args.get("ratio", 0.0),
            "trainable_layers": args.get("freeze") or -1,
            "batch": args["batch"],
            "steps": args["steps"],
            "optimizer": False,
            "flops": args.get("flops", False),
            "device": "cpu",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ns = parser.parse_args()

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
