"""What the JAX trainer learns and how: trainable parameters, weight decay, the schedule and the optimizer.

Parameters are a flat ``{name: array}`` dict under the backend-neutral checkpoint names
(``video.blocks.1.attn.qkv.weight``, ``logit_scale``, ``bias``), so that every rule here reads like its
torch twin in ``torch/train.py`` (``set_trainable``, ``make_optimizer``, ``lr_at``) and the optimizer
state is saved under the same names whatever the backend.

The optimizer is torch's AdamW, step for step: the global gradient norm clipped as
``torch.nn.utils.clip_grad_norm_`` does (factor ``clip / (norm + 1e-6)``, never above 1), Adam's moments
with bias correction and ``eps`` added to the root, decoupled weight decay on matrices only, and the
learning rate of the step multiplied in last. The learning rate is an argument of each step rather than
part of the optimizer's state: ``lr_at`` (Python floats) is the one place it is computed, for the update
and for ``metrics.jsonl`` alike.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP clamps its learned inverse temperature at 100 to keep training stable."""


def lr_at(step: int, total: int, cfg: Any) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


_VIDEO_BLOCK = re.compile(r"^video\.(blocks|temporal)\.(\d+)\.")


def is_trainable(name: str, depth: int, layers: int, train_text: bool, learn_temperature: bool) -> bool:
    """Whether parameter ``name`` learns: the last ``layers`` video blocks (all if -1) with the video tower's
    final norm and projection, the text tower if ``train_text``, the temperature if ``learn_temperature``,
    and the loss's own parameters (the sigmoid loss's ``bias``)."""
    if name == "logit_scale":
        return learn_temperature
    if name.startswith("text."):
        return train_text
    if not name.startswith("video."):
        return True
    if layers < 0:
        return True
    if name.startswith(("video.ln_post.", "video.head.")):
        return True
    block = _VIDEO_BLOCK.match(name)
    return block is not None and int(block.group(2)) >= depth - layers


def decays(name: str, shape: tuple[int, ...]) -> bool:
    """Weight decay on weight matrices only: not on biases, norms, position or embedding tables, class tokens."""
    table = name.rsplit(".", 1)[-1].startswith("pos") or name.endswith(("cls", "token.weight"))
    return len(shape) >= 2 and not table


def clip_by_global_norm_like_torch(max_norm: float) -> optax.GradientTransformation:
    """Scale gradients by ``min(1, max_norm / (norm + 1e-6))``, ``norm`` their global L2 norm: what
    ``torch.nn.utils.clip_grad_norm_`` does (``optax.clip_by_global_norm`` omits the 1e-6). 0 turns it off."""

    def init(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        del params
        if not max_norm:
            return updates, state
        factor = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + 1e-6))
        return jax.tree.map(lambda g: g * factor, updates), state

    return optax.GradientTransformation(init, update)


def make_optimizer(params: dict[str, jax.Array], cfg: Any) -> optax.GradientTransformation:
    """AdamW (torch's, see the module docstring) over the trainable ``params``, without the learning rate,
    which ``apply`` multiplies in. ``cfg`` is the ``optim`` section of the training config."""
    mask = {name: decays(name, tuple(p.shape)) for name, p in params.items()}
    return optax.chain(
        clip_by_global_norm_like_torch(cfg.clip_grad),
        optax.scale_by_adam(b1=0.9, b2=cfg.beta2, eps=1e-6),
        optax.add_decayed_weights(cfg.weight_decay, mask=mask),
    )


def apply(
    optimizer: optax.GradientTransformation,
    grads: dict[str, jax.Array],
    state: Any,
    params: dict[str, jax.Array],
    lr: jax.Array,
) -> tuple[dict[str, jax.Array], Any]:
    """One optimizer step at learning rate ``lr``; the logit scale is clamped to ``[0, log 100]`` after it."""
    updates, state = optimizer.update(grads, state, params)
    params = {name: p - lr * updates[name] for name, p in params.items()}
    if "logit_scale" in params:
        params["logit_scale"] = jnp.clip(params["logit_scale"], 0.0, MAX_LOGIT_SCALE)
    return params, state


def state_to_arrays(state: Any) -> dict[str, jax.Array]:
    """The optimizer state as ``{path: array}``, paths such as ``1.mu['video.head.weight']`` (for safetensors)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def state_from_arrays(template: Any, arrays: dict[str, Any], source: str) -> Any:
    """Rebuild an optimizer state shaped like ``template`` from ``state_to_arrays``'s output; every path
    and shape must match (``source`` names the file in the error)."""
    from vfeval.errors import UsageError

    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        if key not in arrays or tuple(arrays[key].shape) != tuple(leaf.shape):
            raise UsageError(
                f"{source} was saved for other trainable parameters than this config trains "
                f"(no {key} of shape {tuple(leaf.shape)}; stage.trainable_layers, stage.train_text or "
                "loss.learn_temperature changed?)"
            )
        out.append(jnp.asarray(arrays[key], dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)
