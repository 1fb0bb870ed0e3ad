"""``videofirst-contrastive`` in JAX (``vfeval train CONFIG model.backend=jax``): the torch trainer's recipe
with Flax NNX and optax.

The same recipe as ``torch/train.py``, option for option: multi-positive InfoNCE or the sigmoid loss
(``losses.py``), order negatives, masked input, training only the last K blocks, warm-up and cosine
schedule, clipping of the global gradient norm, AdamW (``optim.py``), gradient accumulation, a stage
initialised from another's checkpoint, the same ``metrics.jsonl`` and the same run folder
(``run_files.py``). Checkpoints are the shared safetensors layout, so a JAX-trained model runs in either
backend's ``vfeval run``.

Devices and processes (``sharding.py``): one mesh axis over every device; each micro-batch is sharded
along it, parameters and optimizer state are replicated, and the step (a ``lax.scan`` over the micro-
batches of one optimizer step, then the update) is one ``jax.jit`` program compiled once. The loss is
that of the global batch, so one device with batch B and two devices with B/2 each reach the same
weights. ``optim.batch_size`` clips per process; several hosts join with ``jax.distributed``.

Fixed shapes: texts are padded to a fixed count (``batch_size`` x the most captions a clip has, with
``loss.captions=all``) and a fixed length (the text tower's), order negatives to the same count, with
masks saying which rows are real; so the step never recompiles.

Reproducibility: the data order is a function of (seed, epoch), each forward pass's masks, dropped words
and order negatives of (seed, process, pass index); no random state is carried from step to step, so a
run resumed from a checkpoint (weights, optimizer state, step) ends with the weights an uninterrupted
run reaches, bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
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
from vfeval_videofirst.batching import batch_texts, caption_ids, drop_words, reorder
from vfeval_videofirst.config import architecture, token_grid
from vfeval_videofirst.data import ClipReader, Schedule
from vfeval_videofirst.jax import optim, sharding
from vfeval_videofirst.jax.encoder import build_model, preprocess
from vfeval_videofirst.jax.losses import infonce, sigmoid_loss
from vfeval_videofirst.jax.model import DualEncoder, state_arrays
from vfeval_videofirst.masking import mask_rng
from vfeval_videofirst.tokenizers import shifted_positions
from vfeval_videofirst.train_config import TrainConfig, validate

SIGMOID_TEMPERATURE = 0.1
"""SigLIP's initial temperature (its logit scale starts at log 10), with the bias at -10."""


def draw_seed(seed: int, process: int, index: int) -> int:
    """The seed of forward pass ``index`` in process ``process`` (its masks, dropped words, order negatives)."""
    return ((seed * 1_000_003 + process) * 1_000_003 + index) % (2**63 - 1)


def _id_pairs(ids: list[int]) -> np.ndarray:
    """56-bit caption ids (``caption_ids``) as ``int32 [n, 2]`` halves: JAX computes in 32-bit integers."""
    a = np.asarray(ids, dtype=np.int64).reshape(-1)
    return np.stack([a >> 28, a & ((1 << 28) - 1)], axis=-1).astype(np.int32)


def _matches(clip_ids: jax.Array, text_ids: jax.Array) -> jax.Array:
    """clip_ids ``[B, C, 2]`` (-1 padded), text_ids ``[K, 2]`` → ``[B, K]``: text k is a caption of clip b."""
    same = jnp.all(clip_ids[:, :, None, :] == text_ids[None, None, :, :], axis=-1)  # [B, C, K]
    return jnp.any(same & (clip_ids[:, :, None, 0] >= 0), axis=1)


def _first_copies(text_ids: jax.Array, real: jax.Array) -> jax.Array:
    """``bool [K]``: the real texts whose id no earlier real text has. Processes build their texts apart,
    so a caption that clips on two of them share comes once from each: it counts once, as in one process."""
    same = jnp.all(text_ids[:, None, :] == text_ids[None, :, :], axis=-1) & real[None, :]
    return real & ~jnp.any(jnp.tril(same, k=-1), axis=1)


# ---------------------------------------------------------------------------------------------------
# The batch on the host: fixed shapes, numpy


@dataclass(frozen=True)
class Layout:
    """Rows of one micro-batch in one process (all fixed for the run)."""

    clips: int
    texts: int
    captions: int
    length: int
    negatives: bool

    @staticmethod
    def of(cfg: TrainConfig, pairs: list, length: int, devices: int) -> Layout:
        most = max(len(p.captions) for p in pairs)
        texts = cfg.optim.batch_size * (most if cfg.loss.captions == "all" else 1)
        return Layout(
            clips=cfg.optim.batch_size,
            texts=-(-texts // devices) * devices,
            captions=most,
            length=length,
            negatives=cfg.loss.order_negatives,
        )


def _pad_tokens(tokens: dict[str, np.ndarray], rows: int, length: int) -> dict[str, np.ndarray]:
    """Tokens ``[k, l]`` → ``[rows, length]``: columns padded with 0 (masked), rows with copies of row 0
    (so that every row is a text the tower can embed; the caller marks them as not real)."""
    out = {}
    for key, value in tokens.items():
        value = np.asarray(value)[:, :length]
        value = np.pad(value, ((0, 0), (0, length - value.shape[1])))
        out[key] = np.concatenate([value, np.repeat(value[:1], rows - len(value), axis=0)])
    return out


def micro_batch(
    cfg: TrainConfig, model: DualEncoder, layout: Layout, frames: np.ndarray, choices: list, index: list, seed: int,
    key: str,
) -> dict[str, Any]:
    """One process's share of a forward pass, as numpy arrays of ``layout``'s shapes."""
    captions = batch_texts(choices, index, cfg.loss.captions, key)
    rng = random.Random(seed)
    draws = mask_rng(seed)
    clip_ids = np.full((len(choices), layout.captions, 2), -1, dtype=np.int32)
    for i, options in enumerate(choices):
        clip_ids[i, : len(options)] = _id_pairs(caption_ids(list(options)))
    text_ids = np.full((layout.texts, 2), -1, dtype=np.int32)
    text_ids[: len(captions)] = _id_pairs(caption_ids(captions))
    if cfg.data.word_dropout:
        captions = [drop_words(c, cfg.data.word_dropout, rng) for c in captions]
    tokens = model.text.tokenize(captions)
    batch: dict[str, Any] = {
        "video": np.asarray(preprocess(frames, cfg.model.image_size, cfg.model.tubelet[0])),
        "clip_ids": clip_ids,
        "text_ids": text_ids,
        "real": np.arange(layout.texts) < len(captions),
    }
    if cfg.data.shift_text_positions:
        shift = shifted_positions(tokens["mask"], layout.length, draws)
        batch["shift"] = np.concatenate([shift, np.zeros(layout.texts - len(shift), dtype=np.int64)])
    batch["tokens"] = _pad_tokens(tokens, layout.texts, layout.length)
    nt = -(-frames.shape[1] // cfg.model.tubelet[0])
    keep = model.video.draw_keep(len(frames), (nt, *token_grid(cfg.model)[1:]), draws, training=True)
    if keep is not None:
        batch["keep"] = keep.astype(np.int32)
    if layout.negatives:
        order_rng = random.Random(seed)
        rewrites = [r for r in (reorder(c, order_rng) for c in captions) if r is not None]
        texts = rewrites or captions[:1]
        batch["negatives"] = _pad_tokens(model.text.tokenize(texts), layout.texts, layout.length)
        batch["negative_ids"] = np.full((layout.texts, 2), -1, dtype=np.int32)
        batch["negative_ids"][: len(texts)] = _id_pairs(caption_ids(texts))
        batch["valid"] = np.arange(layout.texts) < len(rewrites)
    return batch


# ---------------------------------------------------------------------------------------------------
# The model as flat arrays, and the step


class Objective:
    """The dual encoder as ``{name: array}`` (checkpoint names, ``optim.py``'s convention) plus the loss.

    ``forward(params, batch)`` rebuilds the NNX model from the arrays (a pure function, so ``jax.grad``
    differentiates through it) and returns the loss of one global micro-batch.
    """

    def __init__(self, model: DualEncoder, kind: str) -> None:
        self.graphdef, state = nnx.split(model)
        self.flat = list(nnx.to_flat_state(state))
        self.names = [".".join(str(p) for p in path) for path, _ in self.flat]
        self.kind = kind

    def model(self, params: dict[str, jax.Array]) -> DualEncoder:
        items = [(path, var.replace(params[name])) for name, (path, var) in zip(self.names, self.flat)]
        return nnx.merge(self.graphdef, nnx.from_flat_state(items))

    def forward(self, params: dict[str, jax.Array], batch: dict[str, Any]) -> jax.Array:
        model = self.model(params)
        v = model.video(batch["video"], batch.get("keep"))
        shift = {"shift": batch["shift"]} if "shift" in batch else {}
        t = model.text(**batch["tokens"], **shift)
        positives = _matches(batch["clip_ids"], batch["text_ids"])
        n = valid = None
        if "negatives" in batch:  # a rewrite that happens to be a caption of some clip is no negative for it
            n = model.text(**batch["negatives"])
            valid = batch["valid"][None, :] & ~_matches(batch["clip_ids"], batch["negative_ids"])
        real = _first_copies(batch["text_ids"], batch["real"])
        if self.kind == "sigmoid":
            return sigmoid_loss(v, t, params["logit_scale"], params["bias"], positives, n, valid, real)
        return infonce(v, t, params["logit_scale"], positives, n, valid, real)


def make_step(objective: Objective, optimizer: Any, place: sharding.Placement, accum: int) -> Any:
    """The jitted optimizer step: ``(trainable, frozen, opt_state, lr, batches) -> (trainable, opt_state,
    losses [accum])``, ``batches`` the step's micro-batches stacked on a leading axis."""

    def step(trainable, frozen, opt_state, lr, batches):
        grad = jax.value_and_grad(lambda tr, mb: objective.forward({**frozen, **tr}, mb))

        def accumulate(total, mb):
            loss, g = grad(trainable, mb)
            return jax.tree.map(lambda a, b: a + b / accum, total, g), loss

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        grads, losses = jax.lax.scan(accumulate, zeros, batches)
        trainable, opt_state = optim.apply(optimizer, grads, opt_state, trainable, lr)
        return trainable, opt_state, losses

    same = place.replicated
    return jax.jit(step, out_shardings=(same, same, same), donate_argnums=(0, 2))


def _host(x: jax.Array) -> np.ndarray:
    """This process's copy of a replicated array."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def load_init(model: DualEncoder, path: str) -> None:
    """Start from an earlier stage's weights (written by either backend); its temporal position table is
    resampled to this model's length."""
    from vfeval_videofirst.jax.model import load_arrays

    arrays = checkpoint.read_arrays(path)
    own = state_arrays(model)
    key = "video.pos_time"
    if key in arrays and key in own and arrays[key].shape[1:] == own[key].shape[1:]:
        arrays[key] = checkpoint.resample_time(arrays[key], own[key].shape[0])
    load_arrays(model, arrays, checkpoint.checkpoint_path(path))


def initial_params(cfg: TrainConfig) -> tuple[DualEncoder, dict[str, np.ndarray]]:
    """The model and its starting weights (plus the sigmoid loss's bias) as numpy, by checkpoint name."""
    model, _ = build_model(cfg.model)
    if cfg.stage.init_from:
        load_init(model, cfg.stage.init_from)
    params = state_arrays(model)
    if cfg.stage.time_embedding_std:
        table = params["video.pos_time"]
        draws = np.random.default_rng(cfg.model.seed).normal(0.0, cfg.stage.time_embedding_std, table.shape)
        params["video.pos_time"] = draws.astype(np.float32)
    temperature = cfg.loss.temperature or (SIGMOID_TEMPERATURE if cfg.loss.kind == "sigmoid" else None)
    if temperature is not None:
        params["logit_scale"] = np.asarray(math.log(1 / temperature), dtype=np.float32)
    if cfg.loss.kind == "sigmoid":
        params["bias"] = np.asarray(cfg.loss.bias, dtype=np.float32)
    return model, params


def save_state(path: Path, opt_state: Any, trainable: dict[str, Any], meta: dict[str, Any]) -> None:
    """The optimizer state (``optim/<path>``), the loss's own parameters (``extra/<name>``) and ``meta``."""
    from safetensors.numpy import save_file

    tensors = {f"optim/{k}": _host(v) for k, v in optim.state_to_arrays(opt_state).items()}
    if "bias" in trainable:
        tensors["extra/bias"] = _host(trainable["bias"])
    metadata = {"format": "jax", "state": json.dumps({**meta, "param_names": sorted(trainable)}, sort_keys=True)}
    run_files.atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(path: Path, template: Any, trainable: dict[str, np.ndarray]) -> tuple[Any, dict[str, Any]]:
    """Restore what ``save_state`` wrote: the optimizer state shaped like ``template``; the saved bias goes
    into ``trainable`` (in place). Returns the state and the saved ``meta``."""
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
            "(stage.trainable_layers, stage.train_text or loss.learn_temperature changed?)"
        )
    arrays = {k.partition("/")[2]: v for k, v in tensors.items() if k.startswith("optim/")}
    if "bias" in trainable:
        trainable["bias"] = tensors["extra/bias"]
    return optim.state_from_arrays(template, arrays, str(path)), meta


def save_weights(path: Path, arrays: dict[str, np.ndarray], config: Any, training: dict[str, Any] | None = None) -> None:
    """``checkpoint.save_arrays``, atomically."""
    run_files.atomic(path, lambda tmp: checkpoint.save_arrays(arrays, tmp, config, training))


def _weights(trainable: dict[str, Any], frozen: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: _host(v) for k, v in {**frozen, **trainable}.items() if k != "bias"}


# ---------------------------------------------------------------------------------------------------
# Training


def train(cfg: TrainConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (weights + encoder config in its metadata)."""
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    place = sharding.start(cfg.model.device)
    return str(_train(cfg, pairs, place))


def _train(cfg: TrainConfig, pairs: list, place: sharding.Placement) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final
    place.check_batch(cfg.optim.batch_size, "clips")

    model, params = initial_params(cfg)
    depth = architecture(cfg.model)["depth"]
    learns = {
        name: optim.is_trainable(
            name, depth, cfg.stage.trainable_layers, cfg.stage.train_text, cfg.loss.learn_temperature
        )
        for name in params
    }
    trainable = {k: v for k, v in params.items() if learns[k]}
    frozen = {k: v for k, v in params.items() if not learns[k]}
    optimizer = optim.make_optimizer(trainable, cfg.optim)
    opt_state = jax.device_get(optimizer.init(trainable))

    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, place.process, place.processes)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        from vfeval_videofirst.jax.model import load_arrays

        load_arrays(model, checkpoint.read_arrays(run_files.weights_path(out, resume_from)), out)
        weights = state_arrays(model)
        trainable = {k: weights.get(k, v) for k, v in trainable.items()}
        frozen = {k: weights[k] for k in frozen}
        opt_state, meta = load_state(run_files.state_path(out, resume_from), opt_state, trainable)
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if place.main:
        kinds = sorted({d.platform for d in place.mesh.devices.flat})
        print(f"train {cfg.name}: jax on {place.mesh.devices.size} {'/'.join(kinds)} devices in {place.processes} processes")
        run_files.open_run(out, snapshot, start)
    place.barrier("vfeval-train-start")

    objective = Objective(model, cfg.loss.kind)
    accum = cfg.optim.grad_accum
    step_fn = make_step(objective, optimizer, place, accum)
    trainable, frozen, opt_state = (place.replicate(x) for x in (trainable, frozen, opt_state))
    layout = Layout.of(cfg, pairs, model.text.length, place.local_devices)
    reader = ClipReader(pairs, cfg.data.sampling, cfg.data.cache, cfg.data.num_workers)
    batches = reader.micro_batches(schedule, start)
    clips_per_step = cfg.optim.batch_size * accum * place.processes

    with run_files.training_loop(out, cfg, total, start, elapsed_before, place.main) as loop:
        for step in range(start, total):
            lr = optim.lr_at(step, total, cfg.optim)
            parts = []
            for micro in range(accum):
                frames, choices, index = next(batches)
                seed = draw_seed(cfg.seed, place.process, step * accum + micro)
                parts.append(micro_batch(cfg, model, layout, frames, choices, index, seed, f"{cfg.seed}:{step}"))
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *parts)
            batch = jax.tree.map(lambda x: place.put(x, axis=1), stacked)
            trainable, opt_state, losses = step_fn(trainable, frozen, opt_state, jnp.float32(lr), batch)
            loop.window.extend(float(x) for x in _host(losses))
            done = step + 1
            scale = trainable["logit_scale"] if "logit_scale" in trainable else frozen["logit_scale"]
            if loop.step_done(done, lr, clips_per_step, accum, temperature=float(np.exp(-_host(scale)))):
                if place.main:
                    save_weights(run_files.weights_path(out, done), _weights(trainable, frozen), cfg.model)
                    save_state(run_files.state_path(out, done), opt_state, trainable, loop.checkpoint_meta(done))
                    loop.prune()
                place.barrier(f"vfeval-train-checkpoint-{done}")

    if place.main:
        save_weights(final, _weights(trainable, frozen), cfg.model, checkpoint.contrastive_summary(cfg, total))
    place.barrier("vfeval-train-end")
    return final
