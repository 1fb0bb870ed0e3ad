"""``vimpac`` in JAX (``vfeval train CONFIG model.backend=jax``): the torch trainer's recipe with Flax NNX and optax.

Option for option as ``torch/train.py``: the same tokenizer arithmetic (``tokenizer.py``), the same masks
and corruption from the same seeds (``vfeval_vimpac/masking.py``), the same losses (``losses.py``), the
videofirst JAX trainer's AdamW, schedule, mesh, checkpoint state and run folder
(``vfeval_videofirst/jax/{optim,sharding,train}.py``, ``run_files.py``). The step (a ``lax.scan`` over
the micro-batches of one optimizer step, then the update) is one ``jax.jit`` program; the batch is sharded
over the devices of every process and the loss is that of the global batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from vfeval_videofirst import run_files
from vfeval_videofirst.data import Schedule
from vfeval_videofirst.jax import optim, sharding
from vfeval_videofirst.jax import train as shared
from vfeval_videofirst.jax.model import load_arrays, state_arrays

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval_vimpac import checkpoint
from vfeval_vimpac.config import VimpacConfig, VimpacTrainConfig, architecture, token_grid, validate
from vfeval_vimpac.data import PairCodes
from vfeval_vimpac.jax.losses import vimpac_loss
from vfeval_vimpac.jax.model import Vimpac
from vfeval_vimpac.jax.tokenizer import Tokenizer
from vfeval_vimpac.masking import corrupt_pairs, describe


def build_model(cfg: VimpacConfig, vocab: int) -> Vimpac:
    """The transformer of ``cfg`` for ``vocab`` codes, its weights drawn from ``cfg.seed`` (numpy)."""
    return Vimpac(**architecture(cfg), vocab=vocab, grid=token_grid(cfg), proj_dim=cfg.proj_dim,
                  rng=np.random.default_rng(cfg.seed))


class Objective(shared.Objective):
    """The model as ``{name: array}`` (checkpoint names) plus VIMPAC's loss of one global micro-batch."""

    def __init__(self, model: Vimpac, loss: Any) -> None:
        super().__init__(model, "vimpac")
        self.loss = loss

    def forward(self, params: dict[str, jax.Array], batch: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        return vimpac_loss(self.model(params), batch["inputs"], batch["codes"], batch["masked"], self.loss)


def make_step(objective: Objective, optimizer: Any, place: sharding.Placement, accum: int) -> Any:
    """The jitted optimizer step ``(params, opt_state, lr, batches) -> (params, opt_state, losses, parts)``,
    ``batches`` the step's micro-batches stacked on a leading axis."""

    def step(params, opt_state, lr, batches):
        grad = jax.value_and_grad(objective.forward, has_aux=True)

        def accumulate(total, mb):
            (loss, parts), g = grad(params, mb)
            return jax.tree.map(lambda a, b: a + b / accum, total, g), (loss, parts)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, (losses, parts) = jax.lax.scan(accumulate, zeros, batches)
        params, opt_state = optim.apply(optimizer, grads, opt_state, params, lr)
        return params, opt_state, losses, parts

    same = place.replicated
    return jax.jit(step, out_shardings=(same, same, same, same), donate_argnums=(0, 1))


def save_weights(path: Path, params: dict[str, Any], tok: Tokenizer, cfg: VimpacConfig, training: dict | None = None) -> None:
    arrays = {k: shared._host(v) for k, v in params.items()}
    checkpoint.save(path, arrays, (tok.kind, tok.arrays), checkpoint.metadata(cfg, tok.kind, tok.vocab), training)


def micro_batch(codes: np.ndarray, index: list[int], draw: int, cfg: VimpacTrainConfig, vocab: int) -> dict[str, np.ndarray]:
    inputs, masked = corrupt_pairs(codes, index, cfg.seed, draw, cfg.masking.blocks, vocab, cfg.masking.corruption)
    return {"inputs": inputs.astype(np.int32), "codes": codes.astype(np.int32), "masked": masked}


def train(cfg: VimpacTrainConfig) -> str:
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    place = sharding.start(cfg.model.device)
    return str(_train(cfg, pairs, place))


def _train(cfg: VimpacTrainConfig, pairs: list, place: sharding.Placement) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final
    place.check_batch(cfg.optim.batch_size, "videos")
    tok = Tokenizer.from_file(cfg.model.tokenizer)
    model = build_model(cfg.model, tok.vocab)
    params = state_arrays(model)
    optimizer = optim.make_optimizer(params, cfg.optim)
    opt_state = jax.device_get(optimizer.init(params))
    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, place.process, place.processes)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        _, weights, _ = checkpoint.read(run_files.weights_path(out, resume_from))
        load_arrays(model, weights, out)
        params = state_arrays(model)
        opt_state, meta = shared.load_state(run_files.state_path(out, resume_from), opt_state, params)
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if place.main:
        print(describe(token_grid(cfg.model), cfg.masking.blocks), flush=True)
        run_files.open_run(out, snapshot, start)
    place.barrier("vimpac-train-start")

    accum = cfg.optim.grad_accum
    step_fn = make_step(Objective(model, cfg.loss), optimizer, place, accum)
    params, opt_state = place.replicate(params), place.replicate(opt_state)
    data = PairCodes(pairs, cfg.data.sampling, lambda f: tok.codes(f, cfg.model.image_size), cfg.data.cache,
                     cfg.data.num_workers, clip=cfg.model.num_frames, mode=cfg.data.clips, seed=cfg.seed)
    batches = data.micro_batches(schedule, start)
    clips_per_step = 2 * cfg.optim.batch_size * accum * place.processes  # two clips per video

    with run_files.training_loop(out, cfg, total, start, elapsed_before, place.main) as loop:
        for step in range(start, total):
            lr = optim.lr_at(step, total, cfg.optim)
            parts = []
            for k in range(accum):
                codes, index = next(batches)
                parts.append(micro_batch(codes, index, step * accum + k, cfg, tok.vocab))
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *parts)
            batch = jax.tree.map(lambda x: place.put(x, axis=1), stacked)
            params, opt_state, losses, aux = step_fn(params, opt_state, jnp.float32(lr), batch)
            losses, aux = shared._host(losses), {k: shared._host(v) for k, v in aux.items()}
            loop.window += [{"loss": float(losses[i]), **{k: float(v[i]) for k, v in aux.items()}} for i in range(accum)]
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum):
                if place.main:
                    save_weights(run_files.weights_path(out, done), params, tok, cfg.model)
                    shared.save_state(run_files.state_path(out, done), opt_state, params, loop.checkpoint_meta(done))
                    loop.prune()
                place.barrier(f"vimpac-train-checkpoint-{done}")

    if place.main:
        save_weights(final, params, tok, cfg.model, checkpoint.summary(cfg, total))
    place.barrier("vimpac-train-end")
    return final
