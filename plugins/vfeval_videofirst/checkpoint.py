"""The videofirst checkpoint: one safetensors layout that the torch and the JAX backend both read and write.

A checkpoint is a ``.safetensors`` file of ``float32`` tensors plus two metadata strings: ``format``
(``"pt"``: the layout conventions below are PyTorch's) and ``config`` (the encoder config as sorted JSON,
without the ``backend`` key). A trainer's final checkpoint has a third, ``training``: how the weights were
made (``training_summary``), which the encoders report so that a result records it (see ``read_training``).
Both backends write it through ``save_arrays`` from the same numpy arrays, so the same weights give the
same bytes, hence the same weights hash, whichever backend saved them; either backend loads a file
written by the other as it is, with no conversion step.

Tensor names (``<i>`` a block index; ``D`` width, ``E`` embed_dim, ``t, h, w`` the tubelet):

===========================================  ===================  ==============================================
name                                         shape                what
===========================================  ===================  ==============================================
``video.embed.proj.weight``                  ``[D, 3, t, h, w]``  tubelet kernel (a Conv3d's, stride = kernel)
``video.cls``, ``video.pos_cls``             ``[D]``              class token and its position embedding
``video.pos_space``                          ``[nh * nw, D]``     spatial position table, row ``h * nw + w``
``video.pos_time``                           ``[nt, D]``          temporal table for ``num_frames`` frames
``video.ln_pre.{weight,bias}``               ``[D]``              LayerNorm before the blocks (eps 1e-5)
``video.blocks.<i>.ln1/ln2.{weight,bias}``   ``[D]``              pre-norms of attention and MLP
``video.blocks.<i>.attn.qkv.weight``         ``[3D, D]``          q, k, v rows stacked in that order
``video.blocks.<i>.attn.qkv.bias``           ``[3D]``
``video.blocks.<i>.attn.proj.{weight,bias}`` ``[D, D]``, ``[D]``  attention output projection
``video.blocks.<i>.mlp.fc1.{weight,bias}``   ``[mlp, D]``, ...
``video.blocks.<i>.mlp.fc2.{weight,bias}``   ``[D, mlp]``, ...
``video.temporal.<i>.*``                     as a block's attn    factorised only: ``ln``, ``attn``, ``alpha`` ``[]``
``video.ln_post.{weight,bias}``              ``[D]``
``video.head.weight``                        ``[E, D]``           projection into the joint space (no bias)
``text.token.weight``                        ``[V, D]``           small tower: 258 byte rows or 8192 word buckets
``text.pos``                                 ``[L, D]``           small tower positions
``text.blocks.<i>.*``, ``text.ln.*``         as the video blocks  small tower
``text.head.weight``                         ``[E, D]``
``text.text_model.*``                        Hugging Face's       CLIP text tower, ``CLIPTextModel``'s own names
``text.projection.weight``                   ``[E, D_text]``      CLIP's text projection
``logit_scale``                              ``[]``               log of the inverse temperature
===========================================  ===================  ==============================================

Every linear weight is ``[out, in]`` (``y = x W^T + b``); images are read channels first in the tubelet
kernel. A JAX module that computes in channels-last does so by contracting the right axes, never by
storing another layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.config import to_dict
from vfeval.errors import UsageError
from vfeval_videofirst.config import ARCHITECTURE_KEYS, VideoFirstConfig

FORMAT = "pt"
NOT_SAVED = ("backend",)
"""Config keys left out of a checkpoint's metadata: the backend that wrote it does not shape the weights,
and leaving it out keeps one set of weights one file (one hash) whichever backend saved it."""


def checkpoint_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"videofirst: checkpoint not found: {path}")
    return path


def save_arrays(arrays: dict[str, np.ndarray], path: str | Path, config: Any = None,
                training: dict[str, Any] | None = None) -> None:
    """Write ``arrays`` (name → float32 array) as safetensors with the encoder config (dict or dataclass) as metadata,
    and ``training`` (a ``training_summary``) when given.

    The bytes are a function of the arrays and the config alone: the header lists the metadata, then the
    tensors in name order, as compact JSON (the safetensors library orders metadata through a hash map,
    whose order changes from process to process, and with it the file's hash)."""
    saved = {k: v for k, v in to_dict(config or {}).items() if k not in NOT_SAVED}
    metadata = {"config": json.dumps(saved, sort_keys=True), "format": FORMAT}
    if training is not None:
        metadata[TRAINING] = json.dumps(training, sort_keys=True)
    tensors = {k: np.array(arrays[k], dtype="<f4", order="C") for k in sorted(arrays)}  # keeps 0-d as 0-d
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to a multiple of 8 bytes
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for a in tensors.values():
            f.write(a.tobytes())


def _unreadable(path: Path, exc: Exception) -> UsageError:
    return UsageError(f"videofirst: {path} is not a readable safetensors file ({str(exc).splitlines()[0]})")


def read_config(path: str | Path) -> dict[str, Any]:
    """The encoder config saved in a checkpoint's metadata (``{}`` when it has none), without reading weights."""
    from safetensors import safe_open

    path = checkpoint_path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata.get("config", "{}"))
    except Exception as exc:
        raise _unreadable(path, exc) from exc


TRAINING = "training"
"""Metadata key of the training summary."""


def read_training(path: str | Path) -> dict[str, Any] | None:
    """The training summary a trainer saved in a checkpoint's metadata (``training_summary``), or None when it
    has none (a converted or hand-made checkpoint)."""
    from safetensors import safe_open

    path = checkpoint_path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata[TRAINING]) if TRAINING in metadata else None
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def training_summary(stage: dict[str, Any], init_from: str = "") -> dict[str, Any]:
    """What a trainer stores under ``training`` in its final checkpoint: ``{"stages": [...]}``, the stages of
    the recipe in order, the earlier ones read from ``init_from``'s own summary (a checkpoint without one
    counts as one stage of unknown training). ``stage`` holds this stage's facts, plain JSON: at least
    ``trainer`` (its registered name), ``objective``, ``masking`` and ``steps``; any of ``frames``,
    ``batch_size``, ``attention`` too. It is a description for the leaderboard, never used to compute."""
    stages: list[dict[str, Any]] = []
    if init_from:
        earlier = read_training(init_from)
        stages = list(earlier["stages"]) if earlier else [{"trainer": "unknown", "checkpoint": Path(init_from).name}]
    return {"stages": [*stages, dict(stage)]}


def masking_label(mask: str, ratio: float) -> str:
    """``"none"`` or e.g. ``"random 75%"``: a training mask as the leaderboard shows it."""
    return "none" if mask == "none" or not ratio else f"{mask} {100 * ratio:g}%"


def contrastive_summary(cfg: Any, steps: int) -> dict[str, Any]:
    """The ``videofirst-contrastive`` trainer's summary for a ``TrainConfig`` that ran ``steps`` steps."""
    objective = f"video-text {cfg.loss.kind}" + (" + order negatives" if cfg.loss.order_negatives else "")
    stage = {"trainer": cfg.trainer, "objective": objective, "masking": masking_label(cfg.model.mask, cfg.model.mask_ratio),
             "steps": int(steps), "frames": int(cfg.data.sampling.num_frames),
             "batch_size": int(cfg.optim.batch_size * cfg.optim.grad_accum), "attention": cfg.model.attention}
    return training_summary(stage, cfg.stage.init_from)


def encoder_training(cfg: VideoFirstConfig) -> dict[str, Any] | None:
    """What the videofirst encoder reports as its training (``Encoder.training``): its checkpoint's summary;
    no stages for random weights (``init=none`` without a checkpoint); None when unknown."""
    if cfg.checkpoint:
        return read_training(cfg.checkpoint)
    return {"stages": []} if cfg.init == "none" else None


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as numpy."""
    from safetensors.numpy import load_file

    path = checkpoint_path(path)
    try:
        return load_file(str(path))
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def check_fits(cfg: VideoFirstConfig, saved: dict[str, Any]) -> None:
    """Refuse a config whose architecture options differ from those the checkpoint was saved with."""
    mine = to_dict(cfg)
    differ = [k for k in ARCHITECTURE_KEYS if k in saved and saved[k] != mine[k]]
    if differ:
        fix = " ".join(f"{k}={json.dumps(saved[k]).replace(' ', '')}" for k in differ)
        raise UsageError(
            f"videofirst: checkpoint {cfg.checkpoint} was saved with other architecture options than "
            f"configured ({', '.join(f'{k}: {mine[k]!r}' for k in differ)}); set {fix}"
        )


def check_tensors(expected: dict[str, tuple[int, ...]], arrays: dict[str, Any], path: Any) -> None:
    """Refuse, with one line naming ``path``, unless ``arrays`` has exactly the names and shapes of ``expected``."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if tuple(arrays[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(repr(k) for k in keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise UsageError(
            f"videofirst: checkpoint {path} does not fit the configured model: {'; '.join(parts)} "
            "(check variant, tubelet, image_size, num_frames, attention and text)"
        )


def time_resampling(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``i0, i1`` and weights ``w`` (``[n_out]``) of linear resampling with half-pixel centres
    (``torch.nn.functional.interpolate(mode="linear", align_corners=False)``): ``out = (1-w) x[i0] + w x[i1]``.
    Both backends resample the temporal table with these."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resample_time(pos: np.ndarray, n: int) -> np.ndarray:
    """A temporal table ``[nt, D]`` → ``[n, D]`` in numpy (a stage initialised from a shorter one's checkpoint)."""
    if pos.shape[0] == n:
        return pos
    i0, i1, w = time_resampling(pos.shape[0], n)
    return (pos[i0] * (1.0 - w[:, None]) + pos[i1] * w[:, None]).astype(np.float32)
