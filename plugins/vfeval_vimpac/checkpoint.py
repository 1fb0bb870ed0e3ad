"""The VIMPAC checkpoint, the same file from either backend: the transformer's tensors (names as in
``torch/model.py``), the frozen tokenizer's under ``tokenizer.``, and as metadata (``config``) the
architecture plus the tokenizer's kind and vocabulary. One file is the whole encoder: ``vfeval run`` with
``pipeline.encoder.checkpoint`` alone evaluates it. Written through ``vfeval_videofirst.checkpoint.save_arrays``
(the same arrays give the same bytes, whichever backend saved them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from vfeval_videofirst import checkpoint as shared
from vfeval_videofirst.run_files import atomic

from vfeval.errors import UsageError
from vfeval_vimpac.config import ARCHITECTURE_KEYS, VimpacConfig
from vfeval_vimpac.tokenizer import KINDS, check

PREFIX = "tokenizer."


def metadata(cfg: VimpacConfig, kind: str, vocab: int) -> dict[str, Any]:
    """What a checkpoint records of its model: the architecture keys, the tokenizer's kind and vocabulary."""
    return {**{k: getattr(cfg, k) for k in ARCHITECTURE_KEYS}, "tokenizer": kind, "vocab": vocab}


def save(path: Path, model: dict[str, np.ndarray], tokenizer: tuple[str, dict[str, np.ndarray]], meta: dict[str, Any],
         training: dict[str, Any] | None = None) -> None:
    """Write model and tokenizer arrays into one checkpoint, atomically; ``training`` (``summary``) in a final one."""
    arrays = {**model, **{PREFIX + k: v for k, v in tokenizer[1].items()}}
    atomic(path, lambda tmp: shared.save_arrays(arrays, tmp, meta, training))


def summary(cfg: Any, steps: int) -> dict[str, Any]:
    """The ``vimpac`` trainer's training summary (``vfeval_videofirst.checkpoint.training_summary``) for a
    ``VimpacTrainConfig`` that ran ``steps`` steps: one stage; frames count both clips of a video."""
    loss = cfg.loss
    stage = {
        "trainer": cfg.trainer,
        "objective": f"masked-token cross-entropy (x{loss.mlm_weight:g}) + clip contrastive (x{loss.nce_weight:g})",
        "masking": f"block ({cfg.masking.blocks} cuboids, 80/10/10 per {cfg.masking.corruption})",
        "steps": int(steps),
        "frames": int(cfg.data.sampling.num_frames),  # read per video, its two clips cut from them
        "batch_size": int(cfg.optim.batch_size * getattr(cfg.optim, "grad_accum", 1)),
    }
    return shared.training_summary(stage)


def encoder_training(cfg: VimpacConfig) -> dict[str, Any] | None:
    """What the vimpac encoder reports as its training (``Encoder.training``): its checkpoint's summary, no
    stages for random weights."""
    if cfg.checkpoint:
        return shared.read_training(cfg.checkpoint)
    return {"stages": []} if cfg.init == "random" else None


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple[str, dict[str, np.ndarray]]]:
    """``(metadata, model arrays, (tokenizer kind, tokenizer arrays))`` of a checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"vimpac: checkpoint not found: {path}")
    meta = shared.read_config(path)
    if meta.get("tokenizer") not in KINDS or any(k not in meta for k in (*ARCHITECTURE_KEYS, "vocab")):
        raise UsageError(f"vimpac: {path} is not a VIMPAC checkpoint (its metadata lacks the architecture or tokenizer)")
    arrays = shared.read_arrays(path)
    tokenizer = {k[len(PREFIX):]: v for k, v in arrays.items() if k.startswith(PREFIX)}
    check(meta["tokenizer"], tokenizer, path)
    return meta, {k: v for k, v in arrays.items() if not k.startswith(PREFIX)}, (meta["tokenizer"], tokenizer)


def configured(cfg: VimpacConfig, meta: dict[str, Any]) -> VimpacConfig:
    """``cfg`` with the architecture a checkpoint was saved with (the weights' own truth)."""
    import dataclasses

    return dataclasses.replace(cfg, **{k: meta[k] for k in ARCHITECTURE_KEYS})
