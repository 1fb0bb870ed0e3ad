"""``videoprism-distill`` in JAX (``model.backend: jax``): ``torch_train.py``'s recipe with Flax NNX and optax.

The objective, the decoder, the masks and shuffles (``masks.py``) and the choices where the paper is silent
are those of ``torch_train.py`` (read its docstring); the loss of a batch is the same number in both backends
for the same weights (a test holds them to 1e-4 relative). The machinery is the contrastive JAX trainer's
(``vfeval_videofirst/jax/train.py``): its jitted step (a ``lax.scan`` over the micro-batches, then the
update), AdamW as torch's (``optim.py``), one data-parallel mesh (``sharding.py``), the shared run folder.

Parameters are one flat ``{name: array}`` dict: the student under the checkpoint's names (``video.*``,
``text.*``, ``logit_scale``), the decoder under ``decoder.*`` and the teacher under ``teacher.*``. The
teacher, the text tower and the temperature are frozen (never differentiated); the weights file of a
checkpoint holds the student's checkpoint names only, the state file the optimizer and ``extra/decoder.*``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval.errors import UsageError
from vfeval_videofirst import checkpoint, run_files
from vfeval_videofirst.config import architecture, token_grid
from vfeval_videofirst.data import ClipReader, Schedule
from vfeval_videofirst.distill import masks
from vfeval_videofirst.distill.config import DistillConfig, summary, validate
from vfeval_videofirst.jax import optim, sharding
from vfeval_videofirst.jax import train as contrastive
from vfeval_videofirst.jax.encoder import build_model, preprocess
from vfeval_videofirst.jax.model import (
    Block,
    DualEncoder,
    LayerNorm,
    Linear,
    _trunc_normal,
    load_arrays,
    state_arrays,
)

TEACHER = "teacher."
DECODER = "decoder."
STUDENT = ("video.", "text.", "logit_scale")
"""Prefixes of the names a videofirst checkpoint holds: what the output of the recipe is."""


class ShuffledDecoder(nnx.Module):
    """The twin of ``torch_train.ShuffledDecoder`` (same names and layouts): visible tokens without
    positions, mask tokens with the positions of the masked places, pre-LN blocks, predictions."""

    def __init__(
        self, *, width: int, depth: int, heads: int, mlp: int, positions: int, out_dim: int, rng: np.random.Generator
    ) -> None:
        self.embed = Linear(width, width, rng=rng)
        self.mask_token = nnx.Param(_trunc_normal(rng, (width,)))
        self.pos = nnx.Param(_trunc_normal(rng, (positions, width)))
        self.blocks = nnx.List([Block(width, heads, mlp, "gelu", rng=rng) for _ in range(depth)])
        self.ln = LayerNorm(width)
        self.head = Linear(width, out_dim, rng=rng)

    def __call__(self, visible: jax.Array, masked: jax.Array) -> jax.Array:
        """visible ``[B, K, D]`` (encoded, in any order), masked ``[B, M]`` position indices → ``[B, M, out_dim]``."""
        queries = self.mask_token[...] + jnp.take(self.pos[...], masked, axis=0)
        x = jnp.concatenate([self.embed(visible), queries], axis=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, visible.shape[1] :]))


class Student(nnx.Module):
    """The dual encoder's parts under their checkpoint names, plus the decoder."""

    def __init__(self, model: DualEncoder, decoder: ShuffledDecoder) -> None:
        self.video = model.video
        self.text = model.text
        self.logit_scale = model.logit_scale
        self.decoder = decoder


def normalised_l2(a: jax.Array, b: jax.Array) -> jax.Array:
    """``|a/|a| - b/|b||^2`` along the last axis, normalising as ``torch.nn.functional.normalize`` does."""

    def unit(x: jax.Array) -> jax.Array:
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    return jnp.sum(jnp.square(unit(a) - unit(b)), axis=-1)


class Objective(contrastive.Objective):
    """The student, its decoder and the teacher as flat arrays; ``forward(params, batch)`` is the loss of one
    micro-batch (a pure function, which ``contrastive.make_step`` differentiates and jits)."""

    def __init__(self, student: Student, local_weight: float, global_weight: float) -> None:
        super().__init__(student, kind="distill")
        self.teacher_graph, state = nnx.split(student.video)
        self.teacher_flat = list(nnx.to_flat_state(state))
        self.teacher_names = [TEACHER + ".".join(str(p) for p in path) for path, _ in self.teacher_flat]
        self.local_weight, self.global_weight = local_weight, global_weight

    def teacher(self, params: dict[str, jax.Array]) -> Any:
        items = [(path, var.replace(params[name])) for name, (path, var) in zip(self.teacher_names, self.teacher_flat)]
        return nnx.merge(self.teacher_graph, nnx.from_flat_state(items))

    def forward(self, params: dict[str, jax.Array], batch: dict[str, Any]) -> jax.Array:
        student, teacher = self.model(params), self.teacher(params)
        x, nt = teacher.encode(batch["video"])
        target_tokens = jax.lax.stop_gradient(teacher.patch_tokens(x, nt))
        target = jax.lax.stop_gradient(teacher.embedding(x, nt))
        x, nt = student.video.encode(batch["video"], batch["keep"])
        embedding = student.video.embedding(x, nt)
        visible = student.video.patch_tokens(x, nt)
        shuffled = jnp.take_along_axis(visible, batch["order"][:, :, None], axis=1)
        predicted = student.decoder(shuffled, batch["masked"])
        wanted = jnp.take_along_axis(target_tokens, batch["masked"][:, :, None], axis=1)
        local = normalised_l2(predicted, wanted).mean()
        glob = normalised_l2(embedding, target).mean()
        return self.local_weight * local + self.global_weight * glob


def build(cfg: DistillConfig) -> tuple[Objective, DualEncoder, dict[str, np.ndarray]]:
    """The objective, the student's dual encoder and every starting array (student from ``stage.init_from``
    or the config's own weights, decoder drawn from ``seed``, teacher a copy of the student's start)."""
    model, _ = build_model(cfg.model)
    if cfg.stage.init_from:
        contrastive.load_init(model, cfg.stage.init_from)
    arch = architecture(cfg.model)
    nt, nh, nw = token_grid(cfg.model, cfg.data.sampling.num_frames)
    decoder = ShuffledDecoder(
        width=arch["width"], depth=cfg.decoder.depth, heads=arch["heads"], mlp=arch["mlp"],
        positions=nt * nh * nw, out_dim=arch["width"], rng=np.random.default_rng(cfg.seed),
    )
    objective = Objective(Student(model, decoder), cfg.loss.local_weight, cfg.loss.global_weight)
    params = state_arrays(model)
    params.update({DECODER + k: v for k, v in state_arrays(decoder).items()})
    params.update({TEACHER + k[len("video.") :]: v for k, v in params.items() if k.startswith("video.")})
    return objective, model, params


def learns(name: str, cfg: DistillConfig) -> bool:
    """Whether parameter ``name`` is trained: the student's video tower (its last ``stage.trainable_layers``
    blocks) and the decoder; never the teacher, the text tower or the temperature."""
    if name.startswith(TEACHER):
        return False
    depth = architecture(cfg.model)["depth"]
    return optim.is_trainable(name, depth, cfg.stage.trainable_layers, train_text=False, learn_temperature=False)


def micro_batch(cfg: DistillConfig, frames: np.ndarray, index: list[int], step: int) -> dict[str, np.ndarray]:
    """One process's share of a forward pass as numpy: the normalised clips and their masks and shuffles."""
    grid = token_grid(cfg.model, frames.shape[1])
    drawn = masks.draw(cfg.model.mask, cfg.model.mask_ratio, grid, cfg.seed, step, index)
    video = np.asarray(preprocess(frames, cfg.model.image_size, cfg.model.tubelet[0]))
    return {"video": video, **{k: v.astype(np.int32) for k, v in drawn.items()}}


def student_arrays(trainable: dict[str, Any], frozen: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of the output checkpoint: the student's, under the checkpoint's names."""
    return {k: contrastive._host(v) for k, v in {**frozen, **trainable}.items() if k.startswith(STUDENT)}


def save_state(path: Path, opt_state: Any, trainable: dict[str, Any], meta: dict[str, Any]) -> None:
    """The optimizer state (``optim/<path>``), the decoder (``extra/decoder.*``) and ``meta``."""
    from safetensors.numpy import save_file

    tensors = {f"optim/{k}": contrastive._host(v) for k, v in optim.state_to_arrays(opt_state).items()}
    tensors.update({f"extra/{k}": contrastive._host(v) for k, v in trainable.items() if k.startswith(DECODER)})
    metadata = {"format": "jax", "state": json.dumps({**meta, "param_names": sorted(trainable)}, sort_keys=True)}
    run_files.atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(path: Path, template: Any, trainable: dict[str, np.ndarray]) -> tuple[Any, dict[str, Any]]:
    """Restore what ``save_state`` wrote: the optimizer state shaped like ``template``, the decoder into
    ``trainable`` (in place). Returns the state and the saved ``meta``."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != "jax":
        raise UsageError(f"{path} is not a JAX trainer's checkpoint state; resume it with model.backend=torch")
    meta = json.loads(metadata["state"])
    if meta.pop("param_names") != sorted(trainable):
        raise UsageError(
            f"{path} was saved for other trainable parameters than this config trains "
            "(stage.trainable_layers or decoder.depth changed?)"
        )
    for name in trainable:
        if name.startswith(DECODER):
            trainable[name] = tensors[f"extra/{name}"]
    arrays = {k.partition("/")[2]: v for k, v in tensors.items() if k.startswith("optim/")}
    return optim.state_from_arrays(template, arrays, str(path)), meta


# ---------------------------------------------------------------------------------------------------
# Training


def train(cfg: DistillConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (a videofirst checkpoint)."""
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    place = sharding.start(cfg.model.device)
    return str(_train(cfg, pairs, place))


def _train(cfg: DistillConfig, pairs: list, place: sharding.Placement) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final
    place.check_batch(cfg.optim.batch_size, "clips")

    objective, model, params = build(cfg)
    trainable = {k: v for k, v in params.items() if learns(k, cfg)}
    frozen = {k: v for k, v in params.items() if not learns(k, cfg)}
    optimizer = optim.make_optimizer(trainable, cfg.optim)
    opt_state = jax.device_get(optimizer.init(trainable))

    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, place.process, place.processes)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        load_arrays(model, checkpoint.read_arrays(run_files.weights_path(out, resume_from)), out)
        weights = state_arrays(model)
        trainable = {k: weights.get(k, v) for k, v in trainable.items()}
        frozen = {k: weights.get(k, v) for k, v in frozen.items()}
        opt_state, meta = load_state(run_files.state_path(out, resume_from), opt_state, trainable)
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if place.main:
        run_files.open_run(out, snapshot, start)
    place.barrier("vfeval-distill-start")

    accum = cfg.optim.grad_accum
    step_fn = contrastive.make_step(objective, optimizer, place, accum)
    trainable, frozen, opt_state = (place.replicate(x) for x in (trainable, frozen, opt_state))
    reader = ClipReader(pairs, cfg.data.sampling, cfg.data.cache, cfg.data.num_workers)
    batches = reader.micro_batches(schedule, start)
    clips_per_step = cfg.optim.batch_size * accum * place.processes

    with run_files.training_loop(out, cfg, total, start, elapsed_before, place.main) as loop:
        for step in range(start, total):
            lr = optim.lr_at(step, total, cfg.optim)
            parts = []
            for _ in range(accum):
                frames, _, index = next(batches)  # video-only: the captions are not read
                parts.append(micro_batch(cfg, frames, index, step))
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *parts)
            batch = jax.tree.map(lambda x: place.put(x, axis=1), stacked)
            trainable, opt_state, losses = step_fn(trainable, frozen, opt_state, jnp.float32(lr), batch)
            loop.window.extend(float(x) for x in contrastive._host(losses))
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum):
                if place.main:
                    path = run_files.weights_path(out, done)
                    contrastive.save_weights(path, student_arrays(trainable, frozen), cfg.model)
                    save_state(run_files.state_path(out, done), opt_state, trainable, loop.checkpoint_meta(done))
                    loop.prune()
                place.barrier(f"vfeval-distill-checkpoint-{done}")

    if place.main:
        contrastive.save_weights(final, student_arrays(trainable, frozen), cfg.model, summary(cfg, total))
    place.barrier("vfeval-distill-end")
    return final


# ---------------------------------------------------------------------------------------------------
# One step on a fixed batch, for benchmarks


def bench_step(cfg: DistillConfig, frames: np.ndarray) -> Any:
    """``step()``: one jitted optimizer step on ``frames`` ``uint8 [B, T, H, W, 3]``, finished on the device
    before it returns the loss (the first call compiles)."""
    place = sharding.start(cfg.model.device)
    objective, _, params = build(cfg)
    trainable = {k: v for k, v in params.items() if learns(k, cfg)}
    frozen = {k: v for k, v in params.items() if not learns(k, cfg)}
    optimizer = optim.make_optimizer(trainable, cfg.optim)
    opt_state = jax.device_get(optimizer.init(trainable))
    step_fn = contrastive.make_step(objective, optimizer, place, 1)
    trainable, frozen, opt_state = (place.replicate(x) for x in (trainable, frozen, opt_state))
    stacked = jax.tree.map(lambda x: x[None], micro_batch(cfg, frames, list(range(len(frames))), 0))
    batch = jax.tree.map(lambda x: place.put(x, axis=1), stacked)
    held = {"trainable": trainable, "opt_state": opt_state}

    def step() -> float:
        held["trainable"], held["opt_state"], losses = step_fn(
            held["trainable"], frozen, held["opt_state"], jnp.float32(cfg.optim.lr), batch
        )
        return float(jax.block_until_ready(losses)[0])

    return step
