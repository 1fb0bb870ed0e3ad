"""One training step of ``videoprism-distill`` on a fixed batch, for benchmarks (``bench/recipes.py``).

``make_step(config, backend)`` builds the recipe as ``vfeval train`` would (same config, same objective,
same optimizer) and returns a function that runs one optimizer step on one fixed micro-batch of
``optim.batch_size`` clips (random pixels drawn from a fixed seed: a step costs the same whatever the
pixels), plus the number of video tokens that step consumes, so that a caller can report tokens per
second the same way for every recipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vfeval.config import describe, load_raw
from vfeval.errors import UsageError
from vfeval_videofirst.config import num_patch_tokens
from vfeval_videofirst.distill.config import DistillConfig, validate


def load_config(config: str | os.PathLike | dict[str, Any], overrides: tuple[str, ...] = ()) -> DistillConfig:
    """A ``videoprism-distill`` config from a YAML file or a dict, with dotlist ``overrides``, validated by
    the schema as ``vfeval train`` validates it."""
    raw = load_raw(config, overrides) if isinstance(config, (str, Path)) else OmegaConf.merge(
        OmegaConf.create(config), load_raw(None, overrides)
    )
    schema = OmegaConf.structured(DistillConfig)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, raw))
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc, schema)) from exc


def make_step(
    config: str | os.PathLike | dict[str, Any], backend: str, init: bool = False, overrides: tuple[str, ...] = ()
) -> tuple[Callable[[], float], int]:
    """``(step_fn, tokens_per_step)`` for the recipe ``config`` in ``backend`` (``torch`` or ``jax``).

    ``step_fn()`` runs one optimizer step (the teacher's full pass, the student's masked pass, the decoder,
    backward, clipping, AdamW) on the fixed batch, waits for the device, and returns the loss; the first
    call in JAX compiles. ``tokens_per_step`` is ``optim.batch_size`` x the patch tokens of one clip before
    masking. With ``init`` False the student and teacher are the config's own initial weights rather than
    ``stage.init_from`` (which a benchmark need not have trained); True loads that checkpoint.
    """
    cfg = load_config(config, overrides)
    cfg.model.backend = backend
    if not init:
        cfg.stage.init_from = ""
    validate(cfg, need_init=init)
    frames_per_clip = cfg.data.sampling.num_frames
    size = cfg.model.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (cfg.optim.batch_size, frames_per_clip, size, size, 3), dtype=np.uint8)
    if backend == "jax":
        from vfeval_videofirst.distill.jax_train import bench_step
    else:
        from vfeval_videofirst.distill.torch_train import bench_step
    return bench_step(cfg, frames), cfg.optim.batch_size * num_patch_tokens(cfg.model, frames_per_clip)


def main(argv: list[str] | None = None) -> None:
    """``python -m vfeval_videofirst.distill.bench [CONFIG] [key=value ...]``: one step of the recipe in
    torch and in JAX on the same fixed batch, best of 5 after 2 warm-up steps (JAX compiles in those),
    the backends interleaved; prints step time and tokens per second. Pin the CPU threads from outside
    (``OMP_NUM_THREADS``, ``XLA_FLAGS``) to compare like with like on a shared machine."""
    import sys
    import time

    args = list(sys.argv[1:] if argv is None else argv)
    config = args.pop(0) if args and "=" not in args[0] else "configs/train/videoprism_stage2_synthetic.yaml"
    steps = {backend: make_step(config, backend, overrides=tuple(args)) for backend in ("torch", "jax")}
    for step, _ in steps.values():
        step(), step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(5):
        for backend, (step, _) in steps.items():
            began = time.perf_counter()
            step()
            best[backend] = min(best[backend], time.perf_counter() - began)
    print(f"videoprism-distill, {config} {' '.join(args)}")
    print(f"{'backend':8s} {'step ms':>9s} {'tokens/step':>12s} {'tokens/s':>10s}")
    for backend, (_, tokens) in steps.items():
        print(f"{backend:8s} {1000 * best[backend]:9.1f} {tokens:12d} {tokens / best[backend]:10.0f}")


if __name__ == "__main__":
    main()
