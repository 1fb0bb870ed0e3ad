"""What masking, freezing and frame count cost: memory and time of a videofirst training step, measured.

    python bench/masking.py                                  # everything (tens of minutes on 2 cores)
    python bench/masking.py --regime-frames 16 32 --size 64  # a quick look
    python bench/masking.py --device cuda                    # on a GPU: bf16, and frames that fit the GPU

Two parts:

1. Short clips (``--frames``, default 16 at ``--size`` 224, variant S): dense training, 75% random masking,
   and 75% masking with only the last 4 blocks trainable, then inference at F and 4F frames.
2. The paper's regime: stage 2 on long clips (``--regime-frames``, default 64, 128, 256 at 112 px): dense
   full training against 75% masking (all blocks, then the last 4 only), and the largest frame count whose
   training step fits ``--budget-gib`` (a line fitted to the measured peaks; memory grows linearly in frames).

Memory: every configuration runs in a fresh process (``vfeval_videofirst.profile.measure``), which measures
one step after a warm-up by its allocator (on CPU, the allocator's events under ``torch.profiler``): exact, and
the same from run to run. A training step is reported in all, as a real step
holds it: weights, AdamW's moments, the batch and the step's working memory (activations, gradients,
temporaries); beside it, the working memory of the same step without an optimizer (activations and gradients).
The stage-2 regime steps 2 clips at a time, the fewest with which a contrastive loss has a negative: at one
clip the loss is 0 whatever the weights, and every gradient is 0. In all, a step also holds what no masking
shrinks (weights, AdamW's moments, gradients and the batch: about 375 MiB for S at 128 frames of 112 px), so
masking saves more the more clips a step holds; at 128 frames the memory of 4 clips a step
(``--regime-memory-batches``) is measured too.

Time: all the configurations that a ratio compares are built in one process and stepped in interleaved
rounds (``harness.interleaved``); each ratio is the ratio of the best times of the same rounds, with the range
of the per-round ratios. MFU is the encoder's forward FLOPs per second over the best matmul rate of the
same rounds, of a square matmul and of the encoder's own MLP shape, on the same threads and dtype (fp32 on
CPU, bf16 on CUDA); FLOPs are torch's FlopCounterMode plus attention counted by hand (4 L^2 D per layer).
A forward pass that outran its own matmuls would be a measurement error: ``mfu`` refuses it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

from harness import Figure, best, interleaved, print_figures, ratio, single, write_json
from vfeval_videofirst.profile import attention_flops, measure, videofirst_config

EMBED_DIM = 512
FREEZE = 4  # blocks that learn in stage 2 (as configs/train/stage2_long.yaml)
RATIO = 0.75


class InvalidFigure(ValueError):
    """A figure that breaks an invariant (an MFU above 100%): a measurement error, not a result."""


# ---------------------------------------------------------------------------------------------------
# Pure arithmetic of the report (unit-tested in tests/test_bench_invariants.py)


def mfu(fwd_flops: float, fwd_times: list[float], probes: dict[str, tuple[float, list[float]]],
        target: str = "", unit_note: str = "") -> Figure:
    """Model FLOPs utilisation in percent, from timings of the same rounds.

    fwd_times[i] and every probe's times[i] come from round i; probes: name -> (FLOPs of one call, times).
    The peak of round i is the best rate of any probe in round i, so the forward pass and its reference
    share the machine's state. Best figure: best forward rate over best probe rate; spread: per round.
    Raises ``InvalidFigure`` if any round, or the best, is above 100%."""
    n = len(fwd_times)
    if not n or any(len(t) != n for _, t in probes.values()):
        raise ValueError("mfu: the forward pass and every probe need the same non-empty rounds")
    per_round = []
    for i in range(n):
        peak = max(flops / times[i] for flops, times in probes.values())
        per_round.append(100 * fwd_flops / fwd_times[i] / peak)
    peak_best = max(flops / min(times) for flops, times in probes.values())
    value = 100 * fwd_flops / min(fwd_times) / peak_best
    worst = max(per_round + [value])
    if worst > 100:
        raise InvalidFigure(
            f"MFU of {worst:.1f}% above 100%: the forward pass outran the matmuls it is made of; the reference "
            "probes do not reach this machine's peak (rerun on a quiet machine, or add the encoder's shapes)"
        )
    return Figure("MFU, inference forward" + unit_note, value, min(per_round), max(per_round), "%", target,
                  "forward FLOP/s over the best matmul FLOP/s of the same rounds", n)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: returns (a, b, R^2)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("fit_line needs at least two distinct x")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, 1.0 - ss_res / ss_tot if ss_tot else 1.0


def frames_within(budget_mib: float, frames: list[int], peaks: list[float], step: int) -> tuple[int, float]:
    """The largest frame count (a multiple of ``step``, the tubelet's length) whose fitted peak fits the
    budget, and the fit's R^2. 0 if not even ``step`` frames fit."""
    a, b, r2 = fit_line([float(f) for f in frames], peaks)
    if b <= 0:
        raise ValueError("fitted memory does not grow with frames; measure more frame counts")
    most = math.floor((budget_mib - a) / b / step) * step
    return max(0, most), r2


# ---------------------------------------------------------------------------------------------------
# Building steps in this process


def build(variant: str, size: int, frames: int, ratio_: float, trainable: int, batch: int, device: str,
          kind: str = "train", optimizer: bool = True, bf16: bool = False) -> tuple[Callable[[], None], Any]:
    """One training step (forward, contrastive loss, backward, AdamW) or one inference forward pass of a
    fresh random videofirst video tower, as a callable; and the model."""
    import torch
    from vfeval_videofirst.masking import mask_rng
    from vfeval_videofirst.torch.encoder import build_model, resolve_device
    from vfeval_videofirst.torch.model import contrastive_loss
    from vfeval_videofirst.torch.train import set_trainable

    options = {"variant": variant, "image_size": size, "num_frames": frames, "embed_dim": EMBED_DIM,
               "mask": "random" if ratio_ > 0 else "none"}
    cfg = videofirst_config(options, kind, ratio_)
    dev = resolve_device(device)
    torch.manual_seed(0)
    dual = build_model(cfg)[0]
    model = dual.video.to(dev)
    video = torch.randn(batch, 3, frames, size, size, device=dev)
    generator = mask_rng(0)  # a fresh mask every step, as in training
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
    if kind == "infer":
        model.eval()

        def forward() -> None:
            with torch.inference_mode(), autocast:
                model(video)

        return forward, model
    model.train()
    set_trainable(dual, trainable, train_text=False, learn_temperature=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if optimizer else None
    text = torch.nn.functional.normalize(torch.randn(batch, EMBED_DIM, device=dev), dim=-1)
    scale = torch.tensor(2.0, device=dev)

    def step() -> None:
        with autocast:
            out = model(video, generator=generator)
        contrastive_loss(out.float(), text, scale).backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step, model


def forward_flops(model: Any, frames: int, size: int, batch: int, device: str) -> tuple[float, int]:
    """FLOPs of one inference forward pass (FlopCounterMode does not see the CPU attention kernel), and
    the tokens of its sequence."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    video = torch.randn(batch, 3, frames, size, size, device=next(model.parameters()).device)
    with torch.inference_mode():
        x, _ = model.tokens(video)
        with FlopCounterMode(display=False) as counter:
            model(video)
    return counter.get_total_flops() + attention_flops(model, x.shape[1], batch), x.shape[1]


def matmul_probe(m: int, k: int, n: int, device: str, bf16: bool) -> tuple[float, Callable[[], None]]:
    """(FLOPs, callable) of one ``[m, k] @ [k, n]`` matmul in the dtype the forward pass computes in."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return 2.0 * m * k * n, lambda: a @ b


def _sync(device: str) -> Callable[[], None] | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.synchronize


# ---------------------------------------------------------------------------------------------------
# The two parts


def memory_row(variant: str, size: int, frames: int, ratio_: float, trainable: int, batch: int, device: str,
               optimizer: bool, kind: str = "train") -> float:
    """Peak MiB of a training step (or inference pass) in a fresh process: with ``optimizer``, the whole step
    (its inputs included: weights, AdamW's moments, the batch); without, the working memory above its inputs."""
    options = {"init": "none", "text": "none", "embed_dim": EMBED_DIM, "variant": variant, "image_size": size,
               "num_frames": frames, "device": device}
    if ratio_ > 0:
        options["mask"] = "random"
    args = {"encoder": "videofirst", "options": options, "kind": kind, "frames": frames, "mask_ratio": ratio_,
            "batch": batch, "steps": 1, "optimizer": optimizer, "device": device}
    if kind == "train":
        args["trainable_layers"] = trainable
    got = measure(args)
    # With AdamW: everything the step holds (weights, AdamW's moments, the batch, activations, gradients).
    # Without: the step's working memory alone (activations and gradients).
    return float(got["peak_mib"] + got["args_mib"]) if optimizer else float(got["peak_mib"])


def short_clips(ns: argparse.Namespace) -> list[Figure]:
    v, s, f, b, dev = ns.variant, ns.size, ns.frames, ns.batch, ns.device
    bf16 = dev == "cuda"
    figures: list[Figure] = []
    configs = {"dense": (0.0, -1), "masked": (RATIO, -1), "masked, last 4": (RATIO, FREEZE)}
    mem = {}
    for name, (r, k) in configs.items():
        for opt in (True, False):
            mem[name, opt] = memory_row(v, s, f, r, k, b, dev, opt)
            label = "AdamW step, in all" if opt else "activations and gradients"
            figures.append(single(f"{f} frames: peak MiB, {name} ({label})", mem[name, opt],
                                  note="fresh process"))
    for opt, label in ((True, "with AdamW"), (False, "activations and gradients")):
        figures.append(single(f"{f} frames: memory saving of 75% masking ({label})",
                              mem["dense", opt] / mem["masked", opt], unit="x", note="fresh processes"))
    infer = {n: memory_row(v, s, n, 0.0, -1, 1, dev, False, kind="infer") for n in (f, 4 * f)}
    figures.append(single(f"inference memory, {4 * f} / {f} frames", infer[4 * f] / infer[f], unit="x",
                          target="<= 4.5", note="fresh processes, batch 1"))

    steps = {name: build(v, s, f, r, k, b, dev, bf16=bf16)[0] for name, (r, k) in configs.items()}
    forward, model = build(v, s, f, 0.0, -1, 1, dev, kind="infer", bf16=bf16)
    flops, tokens = forward_flops(model, f, s, 1, dev)
    fc1 = model.blocks[0].mlp.fc1  # the encoder's largest matmul: [tokens, width] @ [width, mlp]
    probes = {"square": matmul_probe(ns.matmul, ns.matmul, ns.matmul, dev, bf16),
              "mlp": matmul_probe(tokens, fc1.in_features, fc1.out_features, dev, bf16)}
    variants = {**steps, "forward": forward, **{f"mm {k}": fn for k, (_, fn) in probes.items()}}
    times = interleaved(variants, ns.rounds, sync=_sync(dev))
    note = "same process, interleaved rounds"
    figures += [
        ratio("step speed-up of 75% masking", times["dense"], times["masked"], note=note),
        ratio("further step speed-up of freezing all but the last 4", times["masked"], times["masked, last 4"],
              note=note),
        best(f"training step, dense, batch {b}", times["dense"], note=note),
        best(f"training step, 75% masked, batch {b}", times["masked"], note=note),
    ]
    try:
        figures.append(mfu(flops, times["forward"], {k: (fl, times[f"mm {k}"]) for k, (fl, _) in probes.items()},
                           target="50-100", unit_note=" (bf16)" if bf16 else " (fp32)"))
    except InvalidFigure as exc:
        print(f"MFU not reported: {exc}")
    figures.append(best("encoder forward rate", [flops / t / 1e9 for t in times["forward"]], unit="GFLOP/s",
                        higher_is_better=True, note=note))
    return figures


def regime(ns: argparse.Namespace) -> list[Figure]:
    v, s, b, dev = ns.variant, ns.regime_size, ns.regime_batch, ns.device
    bf16 = dev == "cuda"
    configs = {"dense": (0.0, -1), "masked": (RATIO, -1), "masked, last 4": (RATIO, FREEZE)}
    figures: list[Figure] = []
    peaks: dict[str, list[float]] = {name: [] for name in configs}
    target_frames = 128 if 128 in ns.regime_frames else max(ns.regime_frames)
    for f in ns.regime_frames:
        mem = {name: memory_row(v, s, f, r, k, b, dev, True) for name, (r, k) in configs.items()}
        for name in configs:
            peaks[name].append(mem[name])
            figures.append(single(f"stage 2, {f} frames: peak MiB, {name} (AdamW step, in all)", mem[name],
                                  note="fresh process"))
        if f == target_frames:
            act = {name: memory_row(v, s, f, r, k, b, dev, False) for name, (r, k) in configs.items()}
            for name in configs:
                figures.append(single(f"stage 2, {f} frames: peak MiB, {name} (activations and gradients)", act[name],
                                      note="fresh process"))
        is_target = f == target_frames
        if is_target:
            # In all, a step holds weights, moments and gradients whatever its tokens: the saving of masking is
            # (dense activations + fixed) / (masked activations + fixed), and it grows with the clips a step holds.
            for more in ns.regime_memory_batches:
                wide = {name: memory_row(v, s, f, r, -1, more, dev, True)
                        for name, (r, k) in configs.items() if k == -1}
                figures += [single(f"stage 2, {f} frames, {more} clips a step: peak MiB, {name} (AdamW step, in all)",
                                   wide[name], note="fresh process") for name in wide]
                figures.append(single(f"stage 2, {f} frames, {more} clips a step: memory saving of 75% masking "
                                      "(AdamW)", wide["dense"] / wide["masked"], unit="x", target=">= 3",
                                      note="fresh processes"))
        figures += [
            single(f"stage 2, {f} frames: memory saving of 75% masking (AdamW)", mem["dense"] / mem["masked"],
                   unit="x", target=">= 3" if is_target else "", note="fresh processes"),
            single(f"stage 2, {f} frames: further saving of last-4-only (AdamW)",
                   mem["masked"] / mem["masked, last 4"], unit="x", target=">= 2" if is_target else "",
                   note="fresh processes"),
        ]
        steps = {name: build(v, s, f, r, k, b, dev, bf16=bf16)[0] for name, (r, k) in configs.items()}
        times = interleaved(steps, ns.regime_rounds, sync=_sync(dev))
        del steps
        note = "same process, interleaved rounds"
        figures += [
            ratio(f"stage 2, {f} frames: step speed-up of 75% masking", times["dense"], times["masked"],
                  target=">= 3" if is_target else "", note=note),
            ratio(f"stage 2, {f} frames: step speed-up, dense full vs 75% + last 4", times["dense"],
                  times["masked, last 4"], note=note),
            best(f"stage 2, {f} frames: step s, 75% + last 4", times["masked, last 4"], note=note),
        ]
    if len(ns.regime_frames) >= 2:
        budget = ns.budget_gib * 1024
        for name in configs:
            try:
                most, r2 = frames_within(budget, ns.regime_frames, peaks[name], 2)
            except ValueError as exc:  # a model so small that its peak does not grow with frames
                print(f"frames that fit, {name}: not reported ({exc})")
                continue
            figures.append(single(f"frames that fit {ns.budget_gib:g} GiB, {name} (AdamW step)", most,
                                  unit="frames", note=f"line fitted to the peaks, R^2 {r2:.4f}"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square reference matmul")
    parser.add_argument("--regime-frames", type=int, nargs="*", default=[64, 128, 256])
    parser.add_argument("--regime-size", type=int, default=112)
    parser.add_argument("--regime-batch", type=int, default=2,
                        help="clips per step; 2 at least, or the contrastive loss has no negative and no gradient")
    parser.add_argument("--regime-memory-batches", type=int, nargs="*", default=[4],
                        help="more clips per step whose memory (not time) is measured at 128 frames")
    parser.add_argument("--regime-rounds", type=int, default=2)
    parser.add_argument("--budget-gib", type=float, default=16.0, help="memory budget for the frames answer")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-short", action="store_true", help="only the stage-2 regime")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    ns = parser.parse_args()
    if ns.device == "cuda":
        import torch

        ns.budget_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    started = time.perf_counter()
    figures = [] if ns.skip_short else short_clips(ns)
    if ns.regime_frames:
        figures += regime(ns)
    dtype = "bf16 autocast" if ns.device == "cuda" else "fp32"
    title = (f"videofirst {ns.variant}, tubelet 2x16x16, {dtype} on {ns.device}: {ns.frames} frames at {ns.size} px "
             f"(batch {ns.batch}); stage 2 at {ns.regime_frames} frames, {ns.regime_size} px (batch "
             f"{ns.regime_batch}); {time.perf_counter() - started:.0f} s in all")
    print_figures(title, figures)
    write_json(ns.json, "masking", figures, {"title": title})


if __name__ == "__main__":
    main()
