"""What the video-to-text captioner costs: generation speed with and without the KV cache, and the memory of a
training step with 0% and 30% of the video input masked.

    python bench/captioner.py                        # CPU defaults: a minute or two on 2 cores
    python bench/captioner.py --device cuda --frames 64 --lm-width 512 --lm-layers 8
    python bench/captioner.py --lm /path/to/causal-lm --video-options variant=B image_size=224 init=none

The model is built locally with random weights (nothing is downloaded): a videofirst encoder (``--video-options``,
default the quickstart's tiny one at ``--frames`` frames), a GPT-2 (``--lm-width``, ``--lm-layers``; or a saved
LM given with ``--lm``), and the bridge of ``videofirst-captioner`` (64 latents, a gated block before every LM
layer). Weights do not change speed or memory, so random ones measure the same thing as trained ones.

Generation: greedy decoding of ``--new-tokens`` tokens (no end token stops it) for ``--batch`` clips; both
variants built once, timed in interleaved rounds (``harness.interleaved``); tokens/s is the best round's,
the speed-up the ratio of the best times with the range of the per-round ratios.

Training memory: one process per masking ratio (so that one's peak never hides in another's), a warm-up
step then measured steps (forward, backward, AdamW) of ``--train-batch`` clips with captions of 32 tokens.
Two figures: the tensors autograd saves for the backward pass (exact: each storage once, weights left out;
the encoder runs without gradients, so masking saves there only in the resampler's and the encoder's
transient memory), and the step's working memory: the most bytes its own allocations hold at once, above its
inputs (the frozen weights, the optimizer's state), from the allocator itself (CPU: its events under
``torch.profiler``; CUDA: its peak), as ``vfeval_videofirst.profile`` measures a step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import best, interleaved, print_figures, ratio, single, write_json

TINY_VIDEO = ["variant=tiny", "tubelet=[2,16,16]", "image_size=64", "init=none", "text=none", "embed_dim=64"]


def build(args: dict[str, Any], folder: Path) -> tuple[Any, Any, Any]:
    """(captioner, tokenizer, its config) with random weights, as ``args`` describe."""
    import torch
    from omegaconf import OmegaConf
    from vfeval_captioner.config import CaptionerConfig
    from vfeval_captioner.encoder import build_captioner

    from vfeval.testing_models import build_causal_lm

    lm = args["lm"]
    if not lm:
        texts = [f"a {c} {s} moves {d}" for c in ("red", "blue", "green") for s in ("circle", "square")
                 for d in ("left", "right", "up", "down")]
        lm = str(build_causal_lm(folder / "lm", texts, width=args["lm_width"], layers=args["lm_layers"],
                                 heads=args["lm_heads"], context=1024))
    video = OmegaConf.to_container(OmegaConf.from_dotlist([*args["video_options"], f"num_frames={args['frames']}"]))
    cfg = OmegaConf.to_object(OmegaConf.merge(
        OmegaConf.structured(CaptionerConfig),
        {"video": video, "lm": lm, "num_latents": 64, "heads": args["heads"], "device": args["device"]}))
    torch.manual_seed(0)
    model, tokenizer, _ = build_captioner(cfg)
    return model, tokenizer, cfg


def clips(model: Any, cfg: Any, batch: int) -> Any:
    """Random normalised clips ``[B, 3, frames, S, S]`` on the model's device."""
    import torch

    size, device = cfg.video.image_size, next(model.bridge.parameters()).device
    shape = (batch, 3, cfg.video.num_frames, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


def generation(args: argparse.Namespace) -> list[Any]:
    import torch
    from vfeval_captioner.decoding import greedy, prefix_ids
    from vfeval_videofirst.profile import _sync

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, cfg = build(vars(args), Path(tmp))
    model.eval()
    device = next(model.bridge.parameters()).device
    with torch.inference_mode():
        media = model.media(clips(model, cfg, args.batch))
    prefix = prefix_ids(tokenizer, "")
    n = args.new_tokens

    def run(cache: bool) -> None:
        greedy(model, media, prefix, n, eos=-1, kv_cache=cache)

    times = interleaved({"cache": lambda: run(True), "no cache": lambda: run(False)}, rounds=args.rounds,
                        sync=lambda: _sync(device))
    tokens = n * args.batch
    rate = {k: [tokens / t for t in v] for k, v in times.items()}
    note = f"greedy, {args.batch} clips x {n} new tokens, best of {args.rounds} interleaved rounds"
    return [
        best("generation tokens/s, KV cache", rate["cache"], unit="tok/s", note=note, higher_is_better=True),
        best("generation tokens/s, no cache", rate["no cache"], unit="tok/s", note=note, higher_is_better=True),
        ratio("KV cache speed-up (time without / time with)", times["no cache"], times["cache"], target=">= 1",
              note="same rounds"),
    ]


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """One training-step measurement in this (fresh) process."""
    import torch
    from vfeval_captioner.train import caption_tokens
    from vfeval_videofirst.config import token_grid
    from vfeval_videofirst.masking import draw_keep, mask_rng
    from vfeval_videofirst.profile import _sync, _working_memory_mib
    from vfeval_videofirst.torch.train import make_optimizer

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, cfg = build(args, Path(tmp))
    model.train()
    device = next(model.bridge.parameters()).device
    optim_cfg = argparse.Namespace(lr=1e-4, beta2=0.98, weight_decay=0.0)
    optimizer, _ = make_optimizer(model, optim_cfg)
    video = clips(model, cfg, args["train_batch"])
    text = "a red circle moves left, then a blue square moves up, then a green circle moves right"
    ids, labels = caption_tokens(tokenizer, [tokenizer.eos_token_id], [text] * args["train_batch"], 32,
                                 tokenizer.eos_token_id, device)
    grid = token_grid(cfg.video)

    def keep_at(i: int) -> Any:
        if not args["mask_ratio"]:
            return None
        return torch.from_numpy(draw_keep("random", args["mask_ratio"], args["train_batch"], grid,
                                          mask_rng(i))).to(device)

    def step(i: int) -> None:
        loss = model(video, keep_at(i), ids, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up: AdamW's state exists before the peak is reset
    activations = saved_for_backward(model, lambda: model(video, keep_at(1), ids, labels))
    start = time.perf_counter()
    for i in range(1, args["steps"] + 1):
        step(i)
    _sync(device)
    seconds = (time.perf_counter() - start) / args["steps"]
    peak = _working_memory_mib(lambda: step(args["steps"] + 1), device)  # one more step, under the profiler
    return {"peak_mib": peak, "step_s": seconds, "activations_mib": activations,
            "kept_tokens": grid[0] * grid[1] * grid[2] if not args["mask_ratio"] else
            int(draw_keep("random", args["mask_ratio"], 1, grid, mask_rng(0)).shape[1])}


def saved_for_backward(model: Any, forward: Any) -> float:
    """MiB of the tensors autograd keeps from one forward pass for the backward pass, each storage once and
    weights left out: the activation memory of a training step, exact and independent of the allocator."""
    import torch

    weights = {p.data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    del loss
    return sum(storages.values()) / 2**20


def training_memory(args: argparse.Namespace) -> list[Any]:
    figures, results = [], {}
    for ratio_ in (0.0, 0.3):
        job = {**vars(args), "mask_ratio": ratio_}
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"worker (mask {ratio_}) failed: {out.stderr.strip().splitlines()[-1:]}")
        results[ratio_] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[ratio_]
        note = f"{args.train_batch} clips x {args.frames} frames, {r['kept_tokens']} patch tokens kept, fresh process"
        figures.append(single(f"training step activations saved for backward, {ratio_:.0%} masked",
                              r["activations_mib"], note=note))
        figures.append(single(f"training step working memory, {ratio_:.0%} masked", r["peak_mib"],
                              note="the allocator's peak above the step's inputs, one step after the timed ones"))
        figures.append(single(f"training step time, {ratio_:.0%} masked", r["step_s"], unit="s",
                              note=f"mean of {args.steps} steps after a warm-up"))
    figures.append(single("training step activations, 30% / 0% masked",
                          results[0.3]["activations_mib"] / results[0.0]["activations_mib"], unit="x", target="<= 1"))
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--video-options", nargs="*", default=TINY_VIDEO)
    p.add_argument("--lm", default="", help="a saved causal LM (default: a random GPT-2 built here)")
    p.add_argument("--lm-width", type=int, default=256)
    p.add_argument("--lm-layers", type=int, default=4)
    p.add_argument("--lm-heads", type=int, default=4)
    p.add_argument("--heads", type=int, default=4, help="heads of the resampler and the cross-attention")
    p.add_argument("--batch", type=int, default=4, help="clips decoded together")
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", default=None, help="write the figures here (bench/run_all.py)")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    figures = generation(args) + training_memory(args)
    print_figures("captioner: generation with and without a KV cache; training-step memory vs masking", figures)
    write_json(args.json, "captioner", figures)


if __name__ == "__main__":
    main()
