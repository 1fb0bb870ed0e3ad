"""Which input tokens the encoder sees while training: MAE random masks, tube masks and VIMPAC block masks.

Backend-neutral (numpy): the torch and the JAX encoder take the same kept indices from the same seed, so a
masked forward pass, and the trainers' masked steps, can be compared between them.

Every function returns the indices of the *kept* patch tokens, ``int64 [B, N_keep]`` sorted ascending,
into the token grid flattened slice-major (index ``t * nh * nw + h * nw + w``). Masks are drawn per sample
from the ``numpy.random.Generator`` passed in (``mask_rng(seed)``), so a seed reproduces them. The number
of kept tokens comes from ``num_kept`` alone, so every mask of a batch has the same length and the batch
stays rectangular.

- random (MAE, He et al. 2022): any token may go.
- tube (VideoMAE, Tong et al. 2022): one spatial mask repeated in every temporal slice, so a moving
  object cannot be recovered from the next frame; it also keeps a rectangular [nt, S_keep] grid, which
  factorised attention needs.
- block (VIMPAC, Tan et al. 2021): the union of random space-time cuboids, which hides whole regions
  for a while rather than scattered tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Grid = tuple[int, int, int]


def mask_rng(seed: int) -> np.random.Generator:
    """The generator masks are drawn from: PCG64 seeded with ``seed`` (the same on every machine)."""
    return np.random.default_rng(seed)


def num_kept(n_tokens: int, ratio: float) -> int:
    """How many of ``n_tokens`` survive masking ``ratio`` of them (at least one). The only place this is computed."""
    # The epsilon keeps 10 * (1 - 0.7) = 2.9999999999999996 from flooring to 2.
    return max(1, int(n_tokens * (1.0 - ratio) + 1e-9))


def random_masking(batch: int, grid: Grid, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Keep a uniformly random subset of tokens per sample. Returns ``[B, num_kept(N, ratio)]``."""
    n = grid[0] * grid[1] * grid[2]
    # Ranking i.i.d. noise gives a uniform random subset (MAE's trick): the smallest scores are kept.
    keep = np.argsort(rng.random((batch, n)), axis=1, kind="stable")[:, : num_kept(n, ratio)]
    return np.sort(keep, axis=1).astype(np.int64)


def tube_masking(batch: int, grid: Grid, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Keep the same spatial positions in every temporal slice. Returns ``[B, nt * num_kept(nh * nw, ratio)]``."""
    nt, nh, nw = grid
    space = random_masking(batch, (1, nh, nw), ratio, rng)  # [B, S_keep]
    offsets = np.arange(nt, dtype=np.int64)[:, None] * (nh * nw)  # [nt, 1]
    # Slice-major and ascending: reshaping the result to [B, nt, S_keep] gives each slice's tokens.
    return (offsets[None] + space[:, None, :]).reshape(batch, -1)


def block_masking(batch: int, grid: Grid, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Mask random cuboids until ``ratio`` of the tokens are covered. Returns ``[B, num_kept(N, ratio)]``.

    Each cuboid spans 1..nt slices and up to half the frame's height and width, at a random place. The
    union overshoots the ratio by part of a cuboid, so the kept set is padded back to the exact count with
    random masked tokens (and would be trimmed at random if it were ever too large).
    """
    nt, nh, nw = grid
    n = nt * nh * nw
    n_keep = num_kept(n, ratio)

    def randint(low: int, high: int) -> int:  # inclusive bounds
        return int(rng.integers(low, high + 1))

    rows = []
    for _ in range(batch):
        masked = np.zeros((nt, nh, nw), dtype=bool)
        while n - int(masked.sum()) > n_keep:
            dt, dh, dw = randint(1, nt), randint(1, max(1, nh // 2)), randint(1, max(1, nw // 2))
            t0, h0, w0 = randint(0, nt - dt), randint(0, nh - dh), randint(0, nw - dw)
            masked[t0 : t0 + dt, h0 : h0 + dh, w0 : w0 + dw] = True
        # Unmasked tokens rank above every masked one; the noise breaks ties at random within each group.
        priority = (~masked).reshape(-1) + 0.5 * rng.random(n)
        rows.append(np.sort(np.argsort(-priority, kind="stable")[:n_keep]))
    return np.stack(rows).astype(np.int64)


MASKS: dict[str, Callable[[int, Grid, float, np.random.Generator], np.ndarray]] = {
    "random": random_masking,
    "tube": tube_masking,
    "block": block_masking,
}


def masking_on(mask: str, ratio: float, training: bool, at_eval: bool) -> bool:
    """Whether a forward pass drops tokens: a mask kind and a ratio above 0, while training or ``at_eval``."""
    return mask != "none" and ratio > 0 and (training or at_eval)


def draw_keep(
    mask: str, ratio: float, batch: int, grid: Grid, rng: np.random.Generator
) -> np.ndarray:
    """Kept indices ``int64 [B, N_keep]`` of ``mask`` kind at ``ratio`` for clips of token grid ``grid``."""
    return MASKS[mask](batch, grid, ratio, rng)
