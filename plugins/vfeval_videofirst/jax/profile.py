"""``vfeval profile ... backend=jax``: what a training step and inference cost in the JAX backend.

The twin of the torch measurement in ``vfeval_videofirst/profile.py``, run in the same fresh worker process.
Memory is not sampled from the process: it is read from the program XLA compiled for the step
(``jax.jit(f).lower(...).compile().memory_analysis()``), so it is exact for that program and does not
depend on what else the process holds. ``peak_mib`` is the memory the program needs beyond its inputs:
temporaries plus outputs not aliased to (donated) inputs. The inputs (weights, optimizer state, the
batch) are reported apart as ``args_mib``. Time is the median of the timed steps after one warm-up step.

A training step is the video tower's forward pass over the (masked) tokens, the contrastive loss against
fixed text embeddings, the gradient of the trainable parameters (the last K blocks, the final norm and the
projection when freezing; every video parameter otherwise) and, unless turned off, an AdamW update of them
(``optax.adamw``). Frozen parameters get no gradient, so XLA keeps none of the activations below them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from vfeval_videofirst.config import architecture, token_grid


def trainable_names(names: list[str], depth: int, layers: int, factorised: bool) -> list[str]:
    """The video parameters that learn when the last ``layers`` blocks do (-1: all of them), as in the torch
    trainer's ``set_trainable``."""
    if layers < 0:
        return [n for n in names if n.startswith("video.")]
    parts = ["video.ln_post.", "video.head."]
    parts += [f"video.blocks.{i}." for i in range(depth - layers, depth)]
    if factorised:
        parts += [f"video.temporal.{i}." for i in range(depth - layers, depth)]
    return [n for n in names if n.startswith(tuple(parts))]


def memory(compiled: Any) -> dict[str, float]:
    """``peak_mib`` (temporaries + outputs not aliased to inputs) and ``args_mib`` of a compiled program."""
    m = compiled.memory_analysis()
    mib = 2.0**20
    peak = m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return {"peak_mib": peak / mib, "args_mib": m.argument_size_in_bytes / mib}


def forward_flops(compiled: Any) -> float | None:
    """XLA's count of the floating-point operations of a compiled program (attention included)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX returns one dict per device
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops else None


def _timed(run: Any, steps: int) -> float:
    import jax

    times = []
    for _ in range(steps + 1):  # the first call warms up and is not timed
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure(args: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """One measurement of the JAX videofirst video tower (``cfg.backend == "jax"``); see the module docstring."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from vfeval_videofirst.jax.encoder import build_model
    from vfeval_videofirst.jax.model import state_arrays
    from vfeval_videofirst.masking import mask_rng

    kind, batch, frames = args["kind"], args["batch"], args["frames"]
    if args.get("device", "cpu") == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
        from vfeval.errors import UsageError

        raise UsageError("profile: device is 'cuda' but JAX sees no GPU; set --device cpu or auto")
    dual = build_model(cfg)[0]
    model = dual.video
    graphdef, state = nnx.split(model)
    flat = list(nnx.to_flat_state(state))
    names = ["video." + ".".join(str(p) for p in path) for path, _ in flat]
    params = {n: jnp.asarray(a) for n, a in state_arrays(dual).items() if n.startswith("video.")}

    def apply(p: dict[str, jax.Array], video: jax.Array, keep: jax.Array | None) -> jax.Array:
        items = [(path, var.replace(p[name])) for name, (path, var) in zip(names, flat)]
        return nnx.merge(graphdef, nnx.from_flat_state(items))(video, keep)

    size = cfg.image_size
    nt = -(-frames // cfg.tubelet[0])
    video = jax.random.normal(jax.random.key(0), (batch, nt * cfg.tubelet[0], size, size, 3), jnp.float32)
    keep_np = model.draw_keep(batch, (nt, *token_grid(cfg)[1:]), mask_rng(0), training=kind == "train")
    keep = None if keep_np is None else jnp.asarray(keep_np)
    n_patches = nt * token_grid(cfg)[1] * token_grid(cfg)[2]
    tokens = nt + (n_patches if keep_np is None else keep_np.shape[1])

    if kind == "train":
        arch = architecture(cfg)
        learn = trainable_names(names, arch["depth"], args.get("trainable_layers", -1), cfg.attention == "factorised")
        trainable = {n: params[n] for n in learn}
        frozen = {n: a for n, a in params.items() if n not in trainable}
        text = jax.random.normal(jax.random.key(1), (batch, cfg.embed_dim), jnp.float32)
        text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
        optimizer = optax.adamw(1e-4) if args.get("optimizer", True) else None
        opt_state = optimizer.init(trainable) if optimizer is not None else ()

        def loss_fn(tr: dict[str, jax.Array], frozen: dict[str, jax.Array], video: jax.Array,
                    keep: jax.Array | None) -> jax.Array:
            v = apply({**frozen, **tr}, video, keep)
            v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
            logits = 2.0 * v @ text.T
            target = jnp.arange(batch)
            rows = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
            cols = optax.softmax_cross_entropy_with_integer_labels(logits.T, target).mean()
            return (rows + cols) / 2

        def step(tr: dict[str, jax.Array], opt: Any, frozen: dict[str, jax.Array], video: jax.Array,
                 keep: jax.Array | None) -> Any:
            loss, grads = jax.value_and_grad(loss_fn)(tr, frozen, video, keep)
            if optimizer is None:
                return grads, opt, loss
            updates, opt = optimizer.update(grads, opt, tr)
            return optax.apply_updates(tr, updates), opt, loss

        # Weights and optimizer state are donated, as a training loop does: updated in place, not copied. The
        # frozen weights are an argument too (not constants of the program), so ``args_mib`` counts every weight.
        donate = (0, 1) if optimizer is not None else ()
        compiled = jax.jit(step, donate_argnums=donate).lower(trainable, opt_state, frozen, video, keep).compile()
        state_now = {"tr": trainable, "opt": opt_state}

        def run() -> Any:
            if optimizer is None:
                return compiled(state_now["tr"], state_now["opt"], frozen, video, keep)
            state_now["tr"], state_now["opt"], loss = compiled(state_now["tr"], state_now["opt"], frozen, video, keep)
            return loss

        step_s = _timed(run, args["steps"])
    else:
        compiled = jax.jit(apply).lower(params, video, keep).compile()
        step_s = _timed(lambda: compiled(params, video, keep), args["steps"])

    platform = jax.devices()[0].platform
    result = {
        **memory(compiled),
        "step_s": step_s,
        "tokens": int(tokens),
        "device": "cpu" if platform == "cpu" else f"{platform} ({jax.devices()[0].device_kind})",
        "memory_source": "xla",
    }
    if args.get("flops"):
        fwd = jax.jit(apply).lower(params, video, None).compile()
        result["fwd_flops"] = forward_flops(fwd)
    return result


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    """fp32 FLOP/s of a square matmul in JAX on its default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    for _ in range(2):
        mm(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        mm(a, b).block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def throughput(cfg: Any, batch: int, frames: int, steps: int) -> float:
    """Forward clips/s of the jitted video tower at ``cfg`` (no masking), for benchmarks."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vfeval_videofirst.jax.encoder import build_model

    model = build_model(cfg)[0].video
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
    video = jnp.asarray(np.random.default_rng(0).standard_normal((batch, frames, cfg.image_size, cfg.image_size, 3)), jnp.float32)
    return batch / _timed(lambda: fwd(state, video), steps)
