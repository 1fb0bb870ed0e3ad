"""The ``metrics.jsonl`` record of the VIMPAC and VQ-VAE trainers (both backends): the videofirst trainers'
record (``run_files.loss_record``) plus the mean of each part of the loss since the last one."""

from __future__ import annotations

from typing import Any

import numpy as np
from vfeval_videofirst import run_files


def window_record(
    step: int, window: list[dict[str, float]], lr: float, clips_per_step: int, accum: int, seconds: float, elapsed: float
) -> dict[str, Any]:
    """``window``: one dict per forward pass since the last record (``loss`` and its parts)."""
    record = run_files.loss_record(step, [r["loss"] for r in window], lr, clips_per_step, accum, seconds, elapsed)
    record.update({k: float(np.mean([r[k] for r in window])) for k in window[0] if k != "loss"})
    return record
