"""The three pre-training recipes at one backbone and one frame count: step time, tokens per second, peak memory.

    python bench/recipes.py                          # torch, CPU: the backbone of configs/suites/recipes.yaml
    python bench/recipes.py --rounds 5 --batch 8 --device cuda
    python bench/recipes.py --backend jax             # VIMPAC and VideoPrism stage 2 in JAX (LongViViT: torch only)

Each recipe's step is its trainer's own (objective, backward, gradient clipping, AdamW) on one fixed batch of
the backbone of ``configs/suites/recipes.yaml`` (the ``tiny`` transformer, 32 px, 16 frames per video):

- LongViViT stage 1 / VideoPrism stage 1: ``videofirst-contrastive`` (configs/train/synthetic.yaml, joint
  attention; configs/train/videoprism_stage1_synthetic.yaml, factorised): both towers, InfoNCE with every
  caption of a clip and the order negatives; LongViViT stage 2 is the same with 75% of the tubes dropped.
- VideoPrism stage 2: ``videoprism-distill`` (configs/train/videoprism_stage2_synthetic.yaml): the frozen
  teacher's full pass, the student on 75% masked input, the shuffled decoder, local + global distillation.
- VIMPAC: ``vimpac`` (configs/train/vimpac_synthetic.yaml): two clips of 8 frames per video (16 frames),
  block-masked codes, masked-token cross-entropy + the contrastive loss (the VQ tokenizer is not run: a
  frozen pre-processing step whose codes a real run caches).

Step time: every recipe built in one process and timed in interleaved rounds (``harness.interleaved``),
best of N with the per-round range. Tokens per second: the video tokens a step consumes before masking
(patch tokens of every clip of the batch; VIMPAC's code tokens of both clips) over the best step time.
Peak memory: each recipe in a fresh spawned process: the resident set's high-water mark (``VmHWM``) over
the build and two steps (the first allocates AdamW's state) on CPU, ``torch.cuda.max_memory_allocated``
on CUDA; the peak above the process's footprint before the model was built is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import best, interleaved, print_figures, single, write_json

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "configs" / "train"
RECIPES = {
    "longvivit-stage1": ("contrastive", TRAIN / "synthetic.yaml", ["model.mask=none", "model.mask_ratio=0.0"]),
    "longvivit-stage2": ("contrastive", TRAIN / "synthetic.yaml", ["model.mask=random", "model.mask_ratio=0.75"]),
    "videoprism-stage1": ("contrastive", TRAIN / "videoprism_stage1_synthetic.yaml", []),
    "videoprism-stage2": ("distill", TRAIN / "videoprism_stage2_synthetic.yaml", []),
    "vimpac": ("vimpac", TRAIN / "vimpac_synthetic.yaml", []),
}
CAPTIONS = (
    "a red circle moves left, then a blue square moves up, then a green triangle moves right",
    "the colours appeared in this order: yellow, then cyan, then magenta",
    "the last shape to appear was blue",
    "circles that appeared in the video: two",
)


def contrastive_step(config: Path, overrides: list[str], batch: int, device: str) -> tuple[Callable[[], None], int]:
    """One ``videofirst-contrastive`` optimizer step, as its trainer runs it, on a fixed batch of random pixels
    and captions of the synthetic split's kinds; and the patch tokens the step's clips hold before masking."""
    import numpy as np
    import torch
    from vfeval_videofirst.config import num_patch_tokens
    from vfeval_videofirst.masking import mask_rng
    from vfeval_videofirst.torch import train as t

    from vfeval.config import load_trainer_config
    from vfeval.plugins import get_plugin_manager

    _, cfg = load_trainer_config(config, [*overrides, f"optim.batch_size={batch}", f"model.device={device}",
                                          "data.captions=unused.jsonl"], get_plugin_manager().registry)
    dev = t.resolve_device(cfg.model.device)
    torch.manual_seed(0)
    model, _ = t.build_model(cfg.model)
    objective = t.Objective(model, cfg.loss.kind, cfg.loss.bias, False).to(dev).train()
    optimizer, _ = t.make_optimizer(objective, cfg.optim)
    frames = cfg.data.sampling.num_frames
    pixels = np.random.default_rng(0).integers(0, 256, (batch, frames, cfg.model.image_size, cfg.model.image_size, 3),
                                               dtype=np.uint8)
    video = t.preprocess(pixels, cfg.model.image_size, cfg.model.tubelet[0], dev)
    choices = [tuple(CAPTIONS) for _ in range(batch)]  # every caption of every clip: loss.captions=all
    captions = list(CAPTIONS)
    tokens = {k: v.to(dev) for k, v in model.text.tokenize(captions).items()}
    ids = (t.caption_sets(choices, dev), t.caption_ids(captions, dev))
    extra = t.order_negatives(captions, 0, dev, model.text.tokenize) if cfg.loss.order_negatives else ()
    trainable = [p for p in objective.parameters() if p.requires_grad]
    generator = mask_rng(0)

    def step() -> None:
        loss = objective(video, tokens, generator, *ids, *extra)
        loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return step, batch * num_patch_tokens(cfg.model, frames)


def make(recipe: str, batch: int, device: str, backend: str) -> tuple[Callable[[], Any], int]:
    kind, config, overrides = RECIPES[recipe]
    if kind == "contrastive":
        return contrastive_step(config, overrides, batch, device)
    if kind == "distill":
        from vfeval_videofirst.distill.bench import make_step

        return make_step(config, backend, overrides=(f"optim.batch_size={batch}", f"model.device={device}"))
    from omegaconf import OmegaConf
    from vfeval_vimpac.bench import make_step

    raw = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    raw["optim"]["batch_size"] = batch  # two clips of each video
    raw["model"]["device"] = device
    raw["model"]["tokenizer"] = ""  # a random vocabulary of the VQ-VAE's size: a step costs the same
    raw["model"]["image_size"] = 32  # the frames every other recipe sees (configs/suites/recipes.yaml)
    raw["data"]["sampling"].update(size=32, crop=32)
    return make_step(raw, backend)


def backend_of(recipe: str, backend: str) -> str:
    """The backend a recipe runs in: the one asked for, except LongViViT's and VideoPrism stage 1's
    contrastive step, timed in torch only."""
    return "torch" if RECIPES[recipe][0] == "contrastive" else backend


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_worker(recipe: str, batch: int, device: str, backend: str) -> None:
    """Run in a fresh process: build one recipe, take two steps, print its peak memory as JSON."""
    import torch  # imported before the baseline: the libraries are not the recipe's memory

    if backend_of(recipe, backend) == "jax":
        import jax  # noqa: F401
    before = _rss_mib()
    step, tokens = make(recipe, batch, device, backend)
    step()
    step()
    if device == "cuda":
        out = {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "above_start_mib": None}
    else:
        peak = _hwm_mib()
        out = {"peak_mib": peak, "above_start_mib": peak - before}
    print(json.dumps({**out, "tokens": tokens}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of: " + ", ".join(RECIPES))
    parser.add_argument("--batch", type=int, default=8, help="videos per step (configs/suites/recipes.yaml: 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per recipe per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "jax"))
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    ns = parser.parse_args()
    if ns.memory_worker:
        memory_worker(ns.memory_worker, ns.batch, ns.device, ns.backend)
        return
    names = [n.strip() for n in ns.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.exit(f"unknown recipe {unknown[0]!r}; use any of {', '.join(RECIPES)}")

    steps, tokens = {}, {}
    for name in names:
        step, tokens[name] = make(name, ns.batch, ns.device, ns.backend)
        step()  # compiles (JAX) and allocates the optimizer's state: not timed

        def repeat(step: Callable[[], Any] = step) -> None:
            for _ in range(ns.steps):
                step()

        steps[name] = repeat
    times = interleaved(steps, ns.rounds, warmup=1)
    figures = []
    for name in names:
        per_step = [s / ns.steps for s in times[name]]
        where = f"{backend_of(name, ns.backend)}, {ns.device}, batch {ns.batch}, 16 frames, 32 px"
        figures.append(best(f"{name}: step time", per_step, unit="s", note=where))
        rate = [tokens[name] / s for s in per_step]
        figures.append(best(f"{name}: tokens/s ({tokens[name]} tokens a step)", rate, unit="tok/s",
                            higher_is_better=True, note=where))
    for name in names:
        res = subprocess.run([sys.executable, __file__, "--memory-worker", name, "--batch", str(ns.batch),
                              "--device", ns.device, "--backend", ns.backend], capture_output=True, text=True,
                             check=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        note = "fresh process, build + 2 steps (AdamW state included)"
        figures.append(single(f"{name}: peak memory", got["peak_mib"], note=note))
        if got["above_start_mib"] is not None:
            figures.append(single(f"{name}: peak above the process before the model", got["above_start_mib"],
                                  note=note))
    print_figures(f"recipes: one training step each ({ns.device}, {ns.backend}, batch {ns.batch}, best of "
                  f"{ns.rounds} rounds of {ns.steps} steps)", figures)
    write_json(ns.json, "recipes", figures)


if __name__ == "__main__":
    main()
