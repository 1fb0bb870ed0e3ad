"""What the student sees and what the decoder must predict, per clip, without a framework.

For each clip of a batch: the kept patch tokens (``keep``, the student's input, drawn by
``vfeval_videofirst.masking`` from the model's ``mask`` and ``mask_ratio``), the masked ones (``masked``,
the positions the decoder predicts, ascending) and the order in which the student's encoded visible tokens
enter the decoder (``order``, a permutation of ``0..N_keep-1``: token shuffling).

Every draw comes from a generator seeded by (run seed, optimizer step, the clip's index in the data set)
alone, never from a process's place in a batch: a clip gets the same mask and shuffle however the global
batch is split over processes or devices, so two processes reach the weights of one with the global batch,
and the torch and the JAX trainer draw the same numbers.
"""

from __future__ import annotations

import numpy as np

from vfeval_videofirst.masking import Grid, draw_keep, mask_rng


def clip_seed(seed: int, step: int, index: int) -> int:
    """The seed of clip ``index``'s draws at optimizer step ``step``."""
    return ((seed * 1_000_003 + step) * 1_000_003 + index) % (2**63 - 1)


def draw(
    mask: str, ratio: float, grid: Grid, seed: int, step: int, index: list[int]
) -> dict[str, np.ndarray]:
    """``{"keep": int64 [B, N_keep], "masked": int64 [B, N - N_keep], "order": int64 [B, N_keep]}`` for the
    clips ``index`` (data set indices) at optimizer step ``step``; token indices are slice-major into the
    ``grid`` (``t * nh * nw + h * nw + w``), as ``masking`` lays them out."""
    n = grid[0] * grid[1] * grid[2]
    keep, masked, order = [], [], []
    for i in index:
        rng = mask_rng(clip_seed(seed, step, i))
        kept = draw_keep(mask, ratio, 1, grid, rng)[0]
        hidden = np.ones(n, dtype=bool)
        hidden[kept] = False
        keep.append(kept)
        masked.append(np.flatnonzero(hidden))
        order.append(rng.permutation(len(kept)))
    return {
        "keep": np.stack(keep).astype(np.int64),
        "masked": np.stack(masked).astype(np.int64),
        "order": np.stack(order).astype(np.int64),
    }
