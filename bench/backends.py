"""The videofirst encoder in torch and in JAX, side by side at one config: throughput, MFU and memory.

    python bench/backends.py                          # S at 16 frames of 224 px, and tiny (a few minutes on 2 cores)
    python bench/backends.py --variants tiny --size 64 # a quick look
    python bench/backends.py --json bench-backends.json

For each variant (``--variants``, default S and tiny, each at ``--frames`` 16 and ``--size`` 224):

- forward clips/s of each backend's video tower (no masking, batch ``--batch``): torch's
  ``VideoTransformer`` under ``inference_mode``, JAX's jitted ``VideoTransformer``; and JAX's throughput
  over torch's (target: at least 0.8 on CPU);
- where each forward's time goes: the same forward with every attention layer skipped (returning its
  values), and the difference, the attention layers' share;
- MFU of each: the forward pass's model FLOPs (counted by ``model_flops``, the same count for both, attention
  included) per second, over the fp32 matmul rate of the same backend (a square matmul) in the same rounds;
- memory of a training step (forward, contrastive loss, backward, AdamW) at 0% and at 75% random masking
  in each backend, counted alike: the working memory above the step's inputs (activations, gradients,
  temporaries; masking's saving of it, target at least 3x in both), the inputs (every weight, AdamW's
  moments, the batch) and the step in all. torch: the allocator's peak over one step after a warm-up, from
  its own events (``vfeval_videofirst.profile.measure``, a fresh process); JAX: XLA's memory analysis of the
  compiled step (temporaries and outputs not aliased to its inputs), also in a fresh process. Both exact.

Timing: every variant a ratio compares is built in this one process and run in interleaved rounds
(``harness.interleaved``); a figure is the best of the rounds, with their range. Memory does not vary with
load and is measured once. Each row of the table comes from a function in ``MEASUREMENTS`` (a setup in,
figures out); another measurement (training steps/s of the two trainers) is one more function there.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, best, interleaved, print_figures, ratio, single, write_json  # noqa: E402
from vfeval_videofirst.config import VideoFirstConfig, architecture, token_grid  # noqa: E402
from vfeval_videofirst.masking import num_kept  # noqa: E402
from vfeval_videofirst.profile import measure  # noqa: E402

EMBED_DIM = 512
MASKED = 0.75


@dataclass
class Setup:
    """One variant at one config, as both backends build it (weights do not matter to cost: random)."""

    variant: str
    frames: int
    size: int
    batch: int
    rounds: int

    def options(self) -> dict[str, Any]:
        patch = 16 if self.size % 16 == 0 else 8
        return dict(variant=self.variant, image_size=self.size, tubelet=[2, patch, patch], num_frames=self.frames,
                    embed_dim=EMBED_DIM, init="none", text="none", device="cpu")

    def config(self, backend: str) -> VideoFirstConfig:
        opts = self.options()
        return VideoFirstConfig(**{**opts, "tubelet": tuple(opts["tubelet"]), "backend": backend})

    @property
    def label(self) -> str:
        return f"{self.variant} {self.frames}f {self.size}px"


def model_flops(cfg: VideoFirstConfig, frames: int, ratio: float = 0.0) -> float:
    """Forward FLOPs of one clip through the video tower (2 per multiply-add), attention included.

    The same count serves both backends, so their MFUs compare the same work."""
    a = architecture(cfg)
    d, depth, mlp = a["width"], a["depth"], a["mlp"]
    nt, nh, nw = token_grid(cfg, frames)
    t, h, w = cfg.tubelet
    patches = nt * nh * nw
    kept = patches if ratio == 0 else num_kept(patches, ratio)
    n = nt + kept
    linear = 2 * n * (3 * d * d + d * d + 2 * d * mlp)  # qkv, output projection, MLP
    if cfg.attention == "factorised":
        per_slice = n // nt
        attention = 4 * nt * per_slice**2 * d + 4 * per_slice * nt**2 * d + 2 * n * 4 * d * d  # space, time, gate
    else:
        attention = 4 * n * n * d
    embed = 2 * patches * d * 3 * t * h * w
    return float(embed + depth * (linear + attention) + 2 * d * cfg.embed_dim)


# ---------------------------------------------------------------------------------------------------
# The backends' forward passes and matmuls


def torch_forward(setup: Setup, attention: bool = True) -> Callable[[], object]:
    """The torch video tower's forward pass; ``attention=False``: every attention layer returns its values
    instead (a diagnostic of where the time goes, not a model)."""
    from unittest import mock

    import torch
    from vfeval_videofirst.torch.encoder import build_model

    model = build_model(setup.config("torch"))[0].video.eval()
    video = torch.randn(setup.batch, 3, setup.frames, setup.size, setup.size)
    skip = mock.patch.object(torch.nn.functional, "scaled_dot_product_attention",
                             lambda q, k, v, attn_mask=None: v)

    def run() -> object:
        with torch.inference_mode(), (skip if not attention else contextlib.nullcontext()):
            return model(video)

    return run


def jax_forward(setup: Setup, attention: bool = True) -> Callable[[], object]:
    """The JAX video tower's jitted forward pass; ``attention=False`` as in ``torch_forward``."""
    from unittest import mock

    import jax
    import jax.numpy as jnp
    from flax import nnx
    from vfeval_videofirst.jax import model as jax_model
    from vfeval_videofirst.jax.encoder import build_model

    model = build_model(setup.config("jax"))[0].video
    graphdef, state = nnx.split(model)
    video = jnp.asarray(
        np.random.default_rng(0).standard_normal((setup.batch, setup.frames, setup.size, setup.size, 3)), jnp.float32
    )
    skip = mock.patch.object(jax_model, "attention", lambda q, k, v, key_mask=None: v)
    with skip if not attention else contextlib.nullcontext():  # the function is traced here, once
        fwd = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, video).compile()
    return lambda: fwd(state, video).block_until_ready()


MATMUL = 2048  # big enough that the rate is the BLAS kernel's, not the call overhead's


def torch_matmul() -> Callable[[], object]:
    import torch

    a, b = torch.randn(MATMUL, MATMUL), torch.randn(MATMUL, MATMUL)
    return lambda: a @ b


def jax_matmul() -> Callable[[], object]:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (MATMUL, MATMUL), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (MATMUL, MATMUL), jnp.float32)
    mm = jax.jit(jnp.matmul)
    return lambda: mm(a, b).block_until_ready()


# ---------------------------------------------------------------------------------------------------
# Measurements: each takes a setup and returns figures


def forward_throughput(setup: Setup) -> list[Figure]:
    """Forward clips/s of each backend, JAX over torch, and each backend's MFU, from the same rounds."""
    variants = {
        "torch": torch_forward(setup),
        "jax": jax_forward(setup),
        "torch matmul": torch_matmul(),
        "jax matmul": jax_matmul(),
        "torch without attention": torch_forward(setup, attention=False),
        "jax without attention": jax_forward(setup, attention=False),
    }
    times = interleaved(variants, rounds=setup.rounds)
    flops = model_flops(setup.config("torch"), setup.frames) * setup.batch
    mm = 2.0 * MATMUL**3
    label = setup.label
    figures = [
        best(f"{label}: torch forward", [setup.batch / s for s in times["torch"]], unit="clips/s", higher_is_better=True),
        best(f"{label}: jax forward", [setup.batch / s for s in times["jax"]], unit="clips/s", higher_is_better=True),
        ratio(f"{label}: jax / torch forward throughput", times["torch"], times["jax"], target=">= 0.8",
              note="clips/s of JAX over torch, same rounds"),
    ]
    for backend in ("torch", "jax"):
        # MFU = (model FLOPs / best forward time) / (matmul FLOPs / best matmul time); the spread is per round.
        fwd, mat = times[backend], times[f"{backend} matmul"]
        per_round = [(flops / f) / (mm / m) for f, m in zip(fwd, mat, strict=True)]
        value = (flops / min(fwd)) / (mm / min(mat))
        figures.append(Figure(f"{label}: {backend} forward MFU (fp32 matmul rate of the same rounds)",
                              value, min(per_round), max(per_round), "frac", "", "", len(per_round)))
    for backend in ("torch", "jax"):
        rate = [mm / m / 1e9 for m in times[f"{backend} matmul"]]
        figures.append(best(f"{label}: {backend} fp32 matmul rate ({MATMUL}^2)", rate, unit="GFLOP/s",
                            higher_is_better=True))
    # Where the forward's time goes: the same forward with every attention layer skipped, in the same rounds.
    for backend in ("torch", "jax"):
        rest = times[f"{backend} without attention"]
        attn = [f - r for f, r in zip(times[backend], rest, strict=True)]
        figures += [best(f"{label}: {backend} forward, attention layers", attn, unit="s",
                         note="forward less the same forward with attention skipped, per round"),
                    best(f"{label}: {backend} forward, all but attention", rest, unit="s",
                         note="the forward with every attention layer returning its values")]
    return figures


def training_memory(setup: Setup) -> list[Figure]:
    """Memory of a training step at 0% and 75% masking in each backend, each in a fresh process: the working
    memory above the step's inputs (what masking changes), and the step in all (inputs included)."""
    figures = []
    for backend in ("torch", "jax"):
        got = {}
        for mask_ratio in (0.0, MASKED):
            args = {
                "encoder": "videofirst",
                "options": {**setup.options(), "backend": backend},
                "kind": "train",
                "frames": setup.frames,
                "mask_ratio": mask_ratio,
                "trainable_layers": -1,
                "batch": setup.batch,
                "steps": 1,
                "device": "cpu",
                "optimizer": True,
            }
            got[mask_ratio] = measure(args)
            how = ("the allocator's peak over one step, fresh process" if backend == "torch"
                   else "XLA compiled memory analysis")
            figures.append(single(f"{setup.label}: {backend} train step working memory, {mask_ratio:.0%} masked",
                                  got[mask_ratio]["peak_mib"], note=how))
        figures.append(single(f"{setup.label}: {backend} train step inputs (weights, AdamW moments, batch)",
                              got[0.0]["args_mib"], note="the same at any masking"))
        saving = got[0.0]["peak_mib"] / max(got[MASKED]["peak_mib"], 1e-9)
        figures.append(single(f"{setup.label}: {backend} memory saving of {MASKED:.0%} masking (working memory)",
                              saving, unit="x", target=">= 3"))
        total = {r: g["peak_mib"] + g["args_mib"] for r, g in got.items()}
        figures.append(single(f"{setup.label}: {backend} memory saving of {MASKED:.0%} masking (step in all)",
                              total[0.0] / max(total[MASKED], 1e-9), unit="x"))
    return figures


# ---------------------------------------------------------------------------------------------------
# Training steps/s: one optimizer step of each backend's trainer, on random clips (nothing decoded)

TRAIN_TEXTS = ("a red circle moves left, then a blue square moves up", "a green triangle turns", "two shapes meet")


def _train_config(setup: Setup, backend: str) -> Any:
    """The recipe both trainers run here: 75% random masking, a word text tower, InfoNCE, AdamW."""
    from vfeval_videofirst.train_config import DataConfig, LossConfig, OptimConfig, TrainConfig

    opts = {**setup.options(), "tubelet": tuple(setup.options()["tubelet"]), "backend": backend}
    model = VideoFirstConfig(**{**opts, "text": "words", "text_length": 32, "mask": "random", "mask_ratio": MASKED})
    optim = OptimConfig(steps=1000, batch_size=setup.batch, bf16=False)
    return TrainConfig(model=model, data=DataConfig(captions="-"), optim=optim, loss=LossConfig(kind="infonce"))


def _texts(batch: int) -> list[str]:
    return [f"{TRAIN_TEXTS[i % len(TRAIN_TEXTS)]} {i}" for i in range(batch)]


def torch_train_step(setup: Setup) -> Callable[[], object]:
    """``torch/train.py``'s step: forward of both towers with masks, loss, backward, clipping, AdamW."""
    import torch
    from vfeval_videofirst.masking import mask_rng
    from vfeval_videofirst.torch.encoder import build_model
    from vfeval_videofirst.torch.train import Objective, make_optimizer

    cfg = _train_config(setup, "torch")
    model = build_model(cfg.model)[0]
    objective = Objective(model, "infonce", 0.0, distributed=False).train()
    optimizer, _ = make_optimizer(objective, cfg.optim)
    video = torch.randn(setup.batch, 3, setup.frames, setup.size, setup.size)
    tokens = model.text.tokenize(_texts(setup.batch))
    ids = torch.arange(setup.batch)
    count = iter(range(1 << 30))

    def run() -> object:
        loss = objective(video, tokens, mask_rng(next(count)), ids[:, None], ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return run


def jax_train_step(setup: Setup) -> Callable[[], object]:
    """``jax/train.py``'s compiled step (the same recipe), its batch built as the trainer builds it."""
    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import optim, sharding
    from vfeval_videofirst.jax.train import Layout, Objective, initial_params, make_step, micro_batch

    from vfeval.captions import CaptionedClip

    cfg = _train_config(setup, "jax")
    place = sharding.start("cpu")
    model, params = initial_params(cfg)
    optimizer = optim.make_optimizer(params, cfg.optim)
    step = make_step(Objective(model, "infonce"), optimizer, place, 1)
    choices = [(t,) for t in _texts(setup.batch)]
    layout = Layout.of(cfg, [CaptionedClip("-", c) for c in choices], model.text.length, place.local_devices)
    frames = np.random.default_rng(0).integers(0, 256, (setup.batch, setup.frames, setup.size, setup.size, 3), np.uint8)
    batch = micro_batch(cfg, model, layout, frames, choices, list(range(setup.batch)), 0, "bench")
    batch = jax.tree.map(lambda x: place.put(x[None], axis=1), batch)
    state = {"params": place.replicate(params), "opt": place.replicate(jax.device_get(optimizer.init(params)))}

    def run() -> object:
        state["params"], state["opt"], losses = step(state["params"], {}, state["opt"], jnp.float32(1e-4), batch)
        return losses.block_until_ready()

    return run


def training_steps(setup: Setup) -> list[Figure]:
    """Optimizer steps/s of the torch and the JAX trainer at 75% masking, from the same rounds."""
    times = interleaved({"torch": torch_train_step(setup), "jax": jax_train_step(setup)}, rounds=setup.rounds)
    label = f"{setup.label} batch {setup.batch}, {MASKED:.0%} masked"
    return [
        best(f"{label}: torch train steps/s", [1 / s for s in times["torch"]], unit="steps/s", higher_is_better=True),
        best(f"{label}: jax train steps/s", [1 / s for s in times["jax"]], unit="steps/s", higher_is_better=True),
        ratio(f"{label}: jax / torch training throughput", times["torch"], times["jax"],
              note="steps/s of JAX over torch, same rounds; JAX compiled in the warm-up round"),
    ]


MEASUREMENTS: list[Callable[[Setup], list[Figure]]] = [forward_throughput, training_memory, training_steps]
"""Every row group of the table; a new measurement of both backends is one more function here."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["S", "tiny"])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", nargs="+", default=[m.__name__ for m in MEASUREMENTS],
                        choices=[m.__name__ for m in MEASUREMENTS], help="which measurements (default: all)")
    parser.add_argument("--json", default=None, help="also write the figures as JSON (for bench/run_all.py)")
    ns = parser.parse_args()
    figures: list[Figure] = []
    started = time.perf_counter()
    for variant in ns.variants:
        setup = Setup(variant, ns.frames, ns.size, ns.batch, ns.rounds)
        for measurement in MEASUREMENTS:
            if measurement.__name__ in ns.measure:
                figures += measurement(setup)
    print_figures(f"videofirst: torch and JAX at the same config ({time.perf_counter() - started:.0f} s)", figures)
    write_json(ns.json, "backends", figures)


if __name__ == "__main__":
    main()
