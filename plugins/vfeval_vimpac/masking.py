"""VIMPAC's block masking of a clip's token map and the BERT-style corruption of the masked tokens.

Backend-neutral (numpy): the torch and the JAX trainer corrupt the same tokens from the same seed, so
their losses can be compared for the same batch, weights and masks.

The rule is the reference code's (Tan et al. 2021, ``vimpac/masking.py``, ``mask_3d``): for each sample,
``blocks`` cuboids are drawn one after another, each with

- a temporal length uniform in ``1 .. T * 2 // 3`` (5 → 3, 10 → 6 time steps),
- a height uniform in ``1 .. H // 2`` and a width uniform in ``1 .. W // 2`` (16 → 8),
- a corner uniform over the places where the cuboid fits whole,

and the sample's mask is their union. The number of blocks is fixed; the masking ratio is whatever the
union covers, on average ``expected_ratio`` (5 time steps, a 16 x 16 map and 5 blocks: 14.5%, the
paper's table). Every masked token is a prediction target.

Corruption of the masked tokens (BERT, Devlin et al. 2019): 80% become the [MASK] token, 10% a code
drawn uniformly from the codebook, 10% stay as they are (``mode="token"``, a draw per token). The
reference's ``mask_3d_rand_replace`` draws once per *block* instead, later blocks overwriting earlier
ones (``mode="block"``); with overlapping blocks that shifts the shares (a token stays unchanged only
if every block over it chose to keep it), so the per-token draw is the default.
"""

from __future__ import annotations

import numpy as np

from vfeval.errors import UsageError

Grid = tuple[int, int, int]
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
"""BERT's shares of masked tokens replaced by [MASK] and by a random code (the rest stay unchanged)."""
MODES = ("token", "block")


def sample_rng(seed: int, step: int, index: int, clip: int) -> np.random.Generator:
    """The generator of one clip's mask and corruption: a function of the run's seed, the optimizer step,
    the clip's index in the data set and which of its video's two clips it is. Nothing depends on the
    batch a clip lands in, so a global batch split over any number of processes draws the same masks."""
    return np.random.default_rng([seed, step, index, clip])


def max_extent(grid: Grid) -> Grid:
    """Largest block along (time, height, width): ``T * 2 // 3``, ``H // 2``, ``W // 2``, as in the reference."""
    nt, nh, nw = grid
    return nt * 2 // 3, nh // 2, nw // 2


def check_grid(grid: Grid) -> None:
    """A token map the reference's rule can draw blocks in: at least 2 steps in time and 2 x 2 in space."""
    if min(max_extent(grid)) < 1:
        raise UsageError(
            f"vimpac: block masking needs a token map of at least 2 x 2 x 2 (time x height x width), got "
            f"{'x'.join(map(str, grid))}; use more frames or a larger image_size"
        )


def sample_blocks(grid: Grid, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """``int64 [blocks, 6]``: each block's ``(t0, h0, w0, t1, h1, w1)``, ends exclusive."""
    check_grid(grid)
    size = np.asarray(grid)
    top = np.asarray(max_extent(grid))
    length = rng.integers(1, top + 1, size=(blocks, 3))
    start = rng.integers(0, size - length + 1, size=(blocks, 3))
    return np.concatenate([start, start + length], axis=1).astype(np.int64)


def block_cover(grid: Grid, boxes: np.ndarray) -> np.ndarray:
    """``bool [k, T, H, W]``: which tokens each of the ``k`` blocks ``boxes`` covers."""
    axes = [np.arange(n) for n in grid]
    inside = [(boxes[:, i, None] <= axes[i]) & (axes[i] < boxes[:, i + 3, None]) for i in range(3)]
    return inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :]


def block_mask(grid: Grid, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """``bool [T, H, W]``: the union of ``blocks`` random cuboids (the reference's ``mask_3d``)."""
    return block_cover(grid, sample_blocks(grid, blocks, rng)).any(0)


def _axis_cover(n: int, top: int) -> np.ndarray:
    """``[n]``: the probability that one block covers position i along an axis of n, its length uniform
    in ``1..top`` and its start uniform over the ``n - L + 1`` places it fits."""
    i = np.arange(n)
    p = np.zeros(n)
    for length in range(1, top + 1):
        starts = np.minimum(i, n - length) - np.maximum(0, i - length + 1) + 1
        p += np.clip(starts, 0, None) / (n - length + 1)
    return p / top


def expected_ratio(grid: Grid, blocks: int) -> float:
    """The mean fraction of tokens the union of ``blocks`` blocks masks, computed exactly: the axes of a
    block are drawn independently, so one block covers token (t, h, w) with probability
    ``p_t(t) p_h(h) p_w(w)``, and the blocks are independent of each other."""
    check_grid(grid)
    pt, ph, pw = (_axis_cover(n, top) for n, top in zip(grid, max_extent(grid)))
    one = pt[:, None, None] * ph[None, :, None] * pw[None, None, :]
    return float(np.mean(1.0 - (1.0 - one) ** blocks))


def describe(grid: Grid, blocks: int) -> str:
    """The line a trainer prints at the start: the block settings and the masking ratio they induce."""
    t, h, w = max_extent(grid)
    return (
        f"vimpac masking: {blocks} blocks of up to {t}x{h}x{w} tokens in a {'x'.join(map(str, grid))} token map "
        f"(time x height x width) mask {100 * expected_ratio(grid, blocks):.1f}% of the tokens on average"
    )


def corrupt(
    codes: np.ndarray, blocks: int, vocab: int, rng: np.random.Generator, mode: str = "token"
) -> tuple[np.ndarray, np.ndarray]:
    """One clip's codes ``int [T, H, W]`` → ``(inputs int32 [T, H, W], targets bool [T, H, W])``.

    ``targets`` is the block mask; ``inputs`` are the codes with the masked ones corrupted: the [MASK]
    token is id ``vocab`` (one past the last code), a random code is uniform in ``0 .. vocab - 1``.
    The draws per clip are a fixed number whatever the mask looks like, in a fixed order (blocks, then
    the per-token choices, then the random codes)."""
    if mode not in MODES:
        raise UsageError(f"vimpac: bad value for 'masking.corruption': {mode!r}; use one of {', '.join(MODES)}")
    grid = tuple(int(n) for n in codes.shape)
    boxes = sample_blocks(grid, blocks, rng)
    cover = block_cover(grid, boxes)
    masked = cover.any(0)
    inputs = codes.astype(np.int32, copy=True)
    if mode == "token":
        choice = rng.random(grid)
        replacement = rng.integers(0, vocab, size=grid)
        inputs = np.where(masked & (choice < MASK_SHARE), vocab, inputs)
        random_ = masked & (choice >= MASK_SHARE) & (choice < MASK_SHARE + RANDOM_SHARE)
        inputs = np.where(random_, replacement, inputs).astype(np.int32)
    else:  # the reference's mask_3d_rand_replace: one choice per block, later blocks drawn over earlier ones
        choice = rng.random(blocks)
        replacement = rng.integers(0, vocab, size=(blocks, *grid))
        for k in range(blocks):
            if choice[k] < MASK_SHARE:
                inputs[cover[k]] = vocab
            elif choice[k] < MASK_SHARE + RANDOM_SHARE:
                inputs[cover[k]] = replacement[k][cover[k]]
    return inputs, masked


def corrupt_batch(
    codes: np.ndarray, rngs: list[np.random.Generator], blocks: int, vocab: int, mode: str = "token"
) -> tuple[np.ndarray, np.ndarray]:
    """``corrupt`` for each clip of ``codes`` ``[B, T, H, W]``, clip b drawn from ``rngs[b]``."""
    pairs = [corrupt(c, blocks, vocab, rng, mode) for c, rng in zip(codes, rngs, strict=True)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def corrupt_pairs(
    codes: np.ndarray, index: list[int], seed: int, draw: int, blocks: int, vocab: int, mode: str = "token"
) -> tuple[np.ndarray, np.ndarray]:
    """A micro-batch of videos' two clips, ``codes`` ``[B, 2, T, H, W]`` → ``(inputs, targets)`` of that shape.

    Clip k of video ``index[b]`` is drawn from ``sample_rng(seed, draw, index[b], k)``, ``draw`` the number
    of the forward pass in the run (the same in every process)."""
    b = codes.shape[0]
    rngs = [sample_rng(seed, draw, i, k) for i in index for k in (0, 1)]
    inputs, targets = corrupt_batch(codes.reshape(2 * b, *codes.shape[2:]), rngs, blocks, vocab, mode)
    return inputs.reshape(codes.shape), targets.reshape(codes.shape)
