"""Text-video retrieval metrics: R@K, median rank and mean rank, with tie-robust ranks.

Convention (CLIP4Clip, VideoCLIP, MIL-NCE): the similarity matrix has texts as rows and videos as columns;
``r`` is the 0-based rank of the correct item; R@K = 100 * mean(r < K), MdR = median(r) + 1,
MnR = mean(r) + 1. The reference implementations find ``r`` by sorting a row and looking up where the
correct score landed, which is ambiguous when scores tie. Here a tie always counts against the model:
``r`` = (candidates scoring strictly higher) + (other candidates scoring exactly the same). A degenerate
encoder that gives every pair the same score therefore gets the worst rank, never the best.

Ranks depend only on the similarity matrix, and each entry of ``similarity`` depends only on its two
embeddings, so the metrics cannot change with the batch size used to embed or to score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vfeval.errors import UsageError
from vfeval.metrics.bootstrap import DEFAULT_RESAMPLES, cluster_bootstrap, mean_ci
from vfeval.task import Metric

VERSION = "1"
DEFAULT_KS = (1, 5, 10)
ROW_CHUNK = 256
"""Rows per block: bounds temporary memory to ROW_CHUNK x (number of columns)."""
RANK_TILE = (256, 1024)
"""Rows x columns of float32 scores ``ranks_from_embeddings`` computes at a time: 1 MiB, which stays in cache
while it is compared with the thresholds, and a matmul of this shape runs at the rate of a whole one."""
SIM_BLOCK = (512, 1024)
"""Rows x columns of the similarity matrix computed at a time (4 MiB of float64 per temporary)."""
_NORM_EPS = 1e-12
_EXACT_CHUNK = 2048
_NORM_CHUNK = 1024


def _normalise(emb: np.ndarray, name: str) -> np.ndarray:
    """[N, D] embeddings -> [N, D] float32 unit rows (a zero row stays zero, as torch's F.normalize)."""
    x = np.asarray(emb)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise UsageError(f"{name} must be a numeric 2-D array [N, D], got shape {x.shape} of {x.dtype}")
    x = x.astype(np.float32, copy=False)
    out = np.empty(x.shape, dtype=np.float32)
    # Blocks of rows, so the float64 temporaries stay in cache; each row is computed alone, whatever the block.
    for start in range(0, x.shape[0], _NORM_CHUNK):
        block = x[start : start + _NORM_CHUNK].astype(np.float64)
        # Squares of float32 values are exact in float64 and cannot overflow there: the sum is finite
        # exactly when the row is.
        sq = np.sum(block * block, axis=1)
        if not np.isfinite(sq).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise UsageError(
                f"{name} have NaN or infinite values in {bad.size} rows (first: {bad[:5].tolist()})"
            )
        np.divide(block, np.maximum(np.sqrt(sq), _NORM_EPS)[:, None], out=block)
        out[start : start + block.shape[0]] = block
    return out


def _round_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 of the correctly rounded float64 dot product of each row pair. a, b: float64 [F, D] -> [F]."""
    out = np.empty(a.shape[0], dtype=np.float32)
    for start in range(0, a.shape[0], _EXACT_CHUNK):
        prods = a[start : start + _EXACT_CHUNK] * b[start : start + _EXACT_CHUNK]  # exact: float32 * float32
        approx = prods.sum(axis=1)
        # Any summation order is within D * eps * sum|p| of the exact sum (2x slack): sparse or orthogonal
        # vectors, whose dot products are tiny, are settled here without the slow exact sum.
        bound = 2.0 * prods.shape[1] * np.finfo(np.float64).eps * np.abs(prods).sum(axis=1)
        settled = (approx - bound).astype(np.float32) == (approx + bound).astype(np.float32)
        part = approx.astype(np.float32)
        for i in np.flatnonzero(~settled):
            part[i] = np.float32(math.fsum(prods[i].tolist()))
        out[start : start + part.size] = part
    return out


def similarity(text_emb: np.ndarray, video_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of L2-normalised embeddings.

    text_emb: [T, D], video_emb: [V, D] (any float; rounded to float32 first).
    Returns float32 [T, V], texts as rows: entry [i, j] = float32(fsum(a_i * b_j)), the exactly summed dot
    product of the float32 unit vectors a_i, b_j rounded to float64 and then to float32.

    BLAS sums a dot product in an order that depends on the shape of the call and on where a row sits in
    it, so a plain float32 matmul can change a text's scores in the last bit when it is scored in another
    batch or subset. Here the matmul runs in float64 (products of float32 values are exact there), and the
    few entries whose float32 rounding the float64 error bound cannot decide are summed exactly. Each
    entry is thus a function of its two embeddings alone: identical embeddings give identical metrics.
    """
    t = _normalise(text_emb, "text embeddings").astype(np.float64)
    v = _normalise(video_emb, "video embeddings").astype(np.float64)
    if t.shape[1] != v.shape[1]:
        raise UsageError(f"text and video embeddings differ in width: {t.shape[1]} vs {v.shape[1]}")
    # Unit vectors: |float64 matmul - exact| <= D * eps * |a| |b|, with 2x slack for the float32 norms.
    bound = 2.0 * t.shape[1] * np.finfo(np.float64).eps
    out = np.empty((t.shape[0], v.shape[0]), dtype=np.float32)
    vt = np.ascontiguousarray(v.T)
    # Blocks small enough that the float64 product and the two bounds stay in cache: the float64 matmul is
    # the floor of the cost, and the check of its rounding adds about a tenth to it.
    rows_per, cols_per = SIM_BLOCK
    low = np.empty((rows_per, cols_per))
    high = np.empty((rows_per, cols_per))
    for r0 in range(0, t.shape[0], rows_per):
        for c0 in range(0, v.shape[0], cols_per):
            approx = t[r0 : r0 + rows_per] @ vt[:, c0 : c0 + cols_per]  # [rows, cols] float64
            n_rows, n_cols = approx.shape
            block = out[r0 : r0 + n_rows, c0 : c0 + n_cols]
            block[...] = approx
            lo, hi = low[:n_rows, :n_cols], high[:n_rows, :n_cols]
            np.subtract(approx, bound, out=lo)
            np.add(approx, bound, out=hi)
            rows, cols = np.nonzero(lo.astype(np.float32) != hi.astype(np.float32))
            if rows.size:
                block[rows, cols] = _round_exact(t[r0 + rows], v[c0 + cols])
    return out


def _exact_entries(t: np.ndarray, v: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``similarity``'s entries ``[rows[i], cols[i]]`` alone: float32 of the exactly summed dot product.
    t, v: float32 unit rows. Returns float32 [len(rows)]."""
    out = np.empty(rows.size, dtype=np.float32)
    bound = 2.0 * t.shape[1] * np.finfo(np.float64).eps
    # A chunk of gathered float64 rows at a time, small enough to stay in cache: gathering all of them first
    # costs about three times as much when a retrieval has many entries near its thresholds.
    for start in range(0, rows.size, _EXACT_CHUNK):
        r, c = rows[start : start + _EXACT_CHUNK], cols[start : start + _EXACT_CHUNK]
        a, b = t[r], v[c]
        # Cast to float64 inside the loop, so the products are exact without float64 copies of the rows.
        approx = np.einsum("ij,ij->i", a, b, dtype=np.float64)
        part = approx.astype(np.float32)
        undecided = np.flatnonzero((approx - bound).astype(np.float32) != (approx + bound).astype(np.float32))
        if undecided.size:
            part[undecided] = _round_exact(a[undecided].astype(np.float64), b[undecided].astype(np.float64))
        out[start : start + part.size] = part
    return out


def _float32_bound(dim: int) -> float:
    """How far a float32 matmul entry of two float32 unit vectors can be from ``similarity``'s entry.

    Any order of float32 summation of D products (with or without fused multiply-adds) is within
    gamma_D * sum_k |a_k b_k| of the exact dot product, gamma_D = D u / (1 - D u) (Higham, Accuracy and
    Stability of Numerical Algorithms, 3.1; u = 2^-24). By Cauchy-Schwarz the sum is at most |a| |b|, and
    rows rounded to float32 from exact unit vectors have |a| <= 1 + u, hence the factor (1 + 2u)^2 (with
    slack). ``similarity`` rounds the exact value to float64 and then to float32: at most 2u more."""
    u = 2.0**-24
    return dim * u / (1 - dim * u) * (1 + 2 * u) ** 2 + 2 * u


def ranks_from_embeddings(
    text_emb: np.ndarray, video_emb: np.ndarray, text_video: np.ndarray, v2t: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``text_to_video(similarity(t, v), text_video)`` and, when ``v2t`` is ``"captions"``,
    ``video_to_text(..., among="captions")``: the same ranks, at about the cost of a float32 matmul.

    A rank only compares entries with one threshold per row (or column): the correct item's score. The
    matrix is computed in float32 blocks, whose entries are within ``_float32_bound`` of ``similarity``'s;
    an entry clearly above or below the threshold is counted as it is, and only the few inside the band
    are computed as ``similarity`` computes them. The thresholds themselves are always exact. So the ranks
    are those of the exact matrix, bit for bit, whatever BLAS does; ``among="videos"`` (a max over each
    video's captions) goes through the exact matrix.
    """
    t = _normalise(text_emb, "text embeddings")
    v = _normalise(video_emb, "video embeddings")
    if t.shape[1] != v.shape[1]:
        raise UsageError(f"text and video embeddings differ in width: {t.shape[1]} vs {v.shape[1]}")
    n_texts, n_videos = t.shape[0], v.shape[0]
    tv = _check_index(text_video, n_texts, n_videos, "text_video")
    if v2t not in (None, "captions", "videos"):
        raise UsageError(f"video_to_text: among must be 'captions' or 'videos', got {v2t!r}")
    if v2t == "videos":
        sim = similarity(t, v)
        return text_to_video(sim, tv), video_to_text(sim, tv, among="videos")
    if v2t is not None:
        _videos_without_captions(tv, n_videos)
    delta = _float32_bound(t.shape[1])
    own = _exact_entries(t, v, np.arange(n_texts), tv)  # [T] each caption's score with its own video
    best = np.full(n_videos, -np.inf, dtype=np.float32)
    np.maximum.at(best, tv, own)  # [V] the best score of each video's own captions
    # An entry above ``hi`` is above its threshold whatever its exact value; one below ``lo`` is below it. The
    # float32 band edges are rounded outwards, so the comparisons in float32 are as safe as in exact arithmetic.
    row_lo, row_hi = _band(own, delta)
    if v2t is not None:
        col_lo, col_hi = _band(best, delta)
    above = np.zeros(n_texts, dtype=np.int64)  # t2v: entries of each row clearly above its threshold
    at_least_best = np.zeros(n_videos, dtype=np.int64)  # v2t: entries of each column clearly above its threshold
    band_rows: list[np.ndarray] = []  # entries inside a row's band: their exact values decide
    band_cols: list[np.ndarray] = []
    col_band_rows: list[np.ndarray] = []  # entries inside a column's band
    col_band_cols: list[np.ndarray] = []
    rows_per, cols_per = RANK_TILE
    # Tiles of the transposed video matrix, each contiguous: a tile of scores stays in cache while it is compared.
    v_tiles = [(c0, np.ascontiguousarray(v[c0 : c0 + cols_per].T)) for c0 in range(0, n_videos, cols_per)]
    block_buf = np.empty(rows_per * cols_per, dtype=np.float32)
    clear, inside = np.empty(rows_per * cols_per, dtype=bool), np.empty(rows_per * cols_per, dtype=bool)
    # Per row block, the flags of every column tile added up position by position (at most 255 tiles, so a byte
    # holds the count); one sum along the rows at the end of the block then gives each row's count.
    row_flags = np.zeros(rows_per * cols_per, dtype=np.uint8)
    for r0 in range(0, n_texts, rows_per):
        t_rows = t[r0 : r0 + rows_per]
        lo, hi = row_lo[r0 : r0 + rows_per, None], row_hi[r0 : r0 + rows_per, None]
        # Zero: the buffer starts so, and each flush below zeroes it again.
        flags = row_flags[: t_rows.shape[0] * cols_per].reshape(t_rows.shape[0], cols_per)
        for k, (c0, v_tile) in enumerate(v_tiles):
            shape = (t_rows.shape[0], v_tile.shape[1])
            size = shape[0] * shape[1]  # contiguous views of the buffers, whatever the tile's shape
            block = np.matmul(t_rows, v_tile, out=block_buf[:size].reshape(shape))  # float32, within delta
            gt, band = clear[:size].reshape(shape), inside[:size].reshape(shape)
            # Text to video: per row, entries above the row's band, and those inside it.
            np.greater(block, hi, out=gt)
            np.add(flags[:, : shape[1]], gt.view(np.uint8), out=flags[:, : shape[1]])
            np.greater_equal(block, lo, out=band)
            np.not_equal(band, gt, out=band)  # lo <= entry <= hi (gt implies >= lo)
            if band.any():
                rows, cols = np.divmod(np.flatnonzero(band), shape[1])  # flat: much faster than a 2-D nonzero
                band_rows.append(rows + r0)
                band_cols.append(cols + c0)
            if v2t is not None:  # video to text: per column, entries above the video's best own score's band
                np.greater(block, col_hi[c0 : c0 + shape[1]], out=gt)
                at_least_best[c0 : c0 + shape[1]] += _count_along_columns(gt)
                np.greater_equal(block, col_lo[c0 : c0 + shape[1]], out=band)
                np.not_equal(band, gt, out=band)
                if band.any():
                    rows, cols = np.divmod(np.flatnonzero(band), shape[1])
                    col_band_rows.append(rows + r0)
                    col_band_cols.append(cols + c0)
            if k % 255 == 254 or k == len(v_tiles) - 1:
                above[r0 : r0 + shape[0]] += flags.sum(axis=1, dtype=np.int64)
                flags.fill(0)
        # The band's entries of this row block, exactly (a block at a time bounds memory when all are in it).
        if band_rows:
            rows, cols = np.concatenate(band_rows), np.concatenate(band_cols)
            exact = _exact_entries(t, v, rows, cols)
            above += np.bincount(rows, weights=exact >= own[rows], minlength=n_texts).astype(np.int64)
            band_rows.clear(), band_cols.clear()
        if col_band_rows:
            rows, cols = np.concatenate(col_band_rows), np.concatenate(col_band_cols)
            exact = _exact_entries(t, v, rows, cols)
            at_least_best += np.bincount(cols, weights=exact >= best[cols], minlength=n_videos).astype(np.int64)
            col_band_rows.clear(), col_band_cols.clear()
    t2v = above - 1
    if v2t is None:
        return t2v, None
    own_at_best = np.bincount(tv, weights=(own == best[tv]), minlength=n_videos).astype(np.int64)
    return t2v, at_least_best - own_at_best


def _band(threshold: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(lo, hi)`` with ``lo <= threshold - delta`` and ``hi >= threshold + delta`` exactly: each edge is
    computed in float64 and rounded to float32 away from the threshold."""
    t = threshold.astype(np.float64)
    lo, hi = (t - delta).astype(np.float32), (t + delta).astype(np.float32)
    lo = np.where(lo.astype(np.float64) > t - delta, np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi.astype(np.float64) < t + delta, np.nextafter(hi, np.float32(np.inf)), hi)
    return lo.astype(np.float32), hi.astype(np.float32)


def _count_along_columns(flags: np.ndarray) -> np.ndarray:
    """The number of True entries in each column of a C-contiguous bool [R, C], as int64 [C].

    Rows are added as uint64 words (eight columns each, a byte per column), in runs of at most 255 rows so
    that no byte's count carries into its neighbour's."""
    n_rows, n_cols = flags.shape
    if n_cols % 8:
        return flags.sum(axis=0, dtype=np.int64)
    words = flags.view(np.uint64)  # [R, C / 8]
    counts = np.zeros(n_cols, dtype=np.int64)
    for start in range(0, n_rows, 255):
        counts += words[start : start + 255].sum(axis=0, dtype=np.uint64).view(np.uint8)
    return counts


def _check_matrix(sim: np.ndarray) -> np.ndarray:
    s = np.asarray(sim)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise UsageError(f"the similarity matrix must be 2-D and non-empty, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    return s


def _check_nan(block: np.ndarray, row_ids: np.ndarray | range) -> None:
    """Refuse NaN in a block of rows; row_ids[i] is the matrix row of block[i], for the message."""
    # max() propagates NaN, and is much cheaper than a full isnan() pass.
    if np.isnan(block.max()):
        row = int(row_ids[int(np.flatnonzero(np.isnan(block).any(axis=1))[0])])
        raise UsageError(f"the similarity matrix has NaN values (first in row {row}); check the embeddings")


def _check_index(index: np.ndarray, n_rows: int, n_cols: int, name: str) -> np.ndarray:
    idx = np.asarray(index)
    if idx.shape != (n_rows,):
        raise UsageError(f"{name} must have shape ({n_rows},), one entry per text, got {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise UsageError(f"{name} must hold integer column indices, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_cols):
        raise UsageError(f"{name} has indices outside [0, {n_cols}): min {idx.min()}, max {idx.max()}")
    return idx.astype(np.intp)


def ranks(sim: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pessimistic 0-based rank of the correct column of each row.

    sim: float [Q, C]; gt: int [Q], the correct column of each row. Returns int64 [Q]:
    rank[q] = #{c : sim[q, c] > t} + #{c != gt[q] : sim[q, c] == t}, t = sim[q, gt[q]],
    i.e. #{c : sim[q, c] >= t} - 1. O(Q * C) comparisons, no sort; NaN anywhere is a UsageError.
    """
    s = _check_matrix(sim)
    target_col = _check_index(gt, s.shape[0], s.shape[1], "gt")
    out = np.empty(s.shape[0], dtype=np.int64)
    for start in range(0, s.shape[0], ROW_CHUNK):
        block = s[start : start + ROW_CHUNK]
        _check_nan(block, range(start, start + block.shape[0]))
        target = block[np.arange(block.shape[0]), target_col[start : start + ROW_CHUNK]]
        # The correct column always satisfies >=, so subtracting it leaves greater + other ties.
        out[start : start + block.shape[0]] = np.count_nonzero(block >= target[:, None], axis=1) - 1
    return out


def text_to_video(sim_text_video: np.ndarray, text_video: np.ndarray) -> np.ndarray:
    """Rank of each caption's video among all videos.

    sim_text_video: float [T, V]; text_video: int [T], the video (column) of each caption.
    Returns int64 [T] ranks, one per caption (several captions of a video are separate queries).
    """
    return ranks(sim_text_video, text_video)


def _videos_without_captions(text_video: np.ndarray, n_videos: int) -> None:
    has = np.zeros(n_videos, dtype=bool)
    has[text_video] = True
    if not has.all():
        missing = np.flatnonzero(~has)
        raise UsageError(
            f"video-to-text needs at least one caption per video; {missing.size} videos have none "
            f"(columns {missing[:5].tolist()}); drop them from the similarity matrix"
        )


def _max_over_captions(s: np.ndarray, tv: np.ndarray) -> np.ndarray:
    """[T, V] similarities -> [V, V], row u = max over the captions of video u (every video has one)."""
    n_videos = s.shape[1]
    pooled = np.full((n_videos, n_videos), -np.inf, dtype=s.dtype)
    order = np.argsort(tv, kind="stable")  # captions grouped by video, so each block reduces by segments
    for start in range(0, order.size, ROW_CHUNK):
        rows = order[start : start + ROW_CHUNK]
        block = s[rows]
        _check_nan(block, rows)
        ids = tv[rows]
        first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        # A video whose captions straddle two blocks is merged with the max of both parts.
        pooled[ids[first]] = np.maximum(pooled[ids[first]], np.maximum.reduceat(block, first, axis=0))
    return pooled


def video_to_text(sim_text_video: np.ndarray, text_video: np.ndarray, among: str = "captions") -> np.ndarray:
    """Rank of each video's captions, with several captions per video.

    sim_text_video: float [T, V] (texts as rows, as everywhere); text_video: int [T], the video of each
    caption. Every video must have at least one caption. Returns int64 [V], one rank per video.

    among="captions" (default; the image-to-text convention of COCO/Flickr retrieval, e.g. VSE++): each
    video ranks all T captions; its rank is the best rank of any of its own captions. With b_v the
    highest score of one of v's captions, rank_v = #{captions t of other videos : sim[t, v] >= b_v}:
    ties with other videos' captions count against the model, ties among v's own captions do not (they
    are all correct).

    among="videos" (CLIP4Clip's multi-sentence evaluation): each candidate video u is scored by the max
    similarity over u's captions, and v is ranked among these V scores (pessimistic ties as ``ranks``).

    Both equal ``ranks(sim.T, ...)`` when every video has exactly one caption (MSR-VTT 1k-A). They differ
    when another video has several captions above v's best: the first counts each of them, the second
    counts that video once. Which one a result used is part of its protocol.
    """
    s = _check_matrix(sim_text_video)
    tv = _check_index(text_video, s.shape[0], s.shape[1], "text_video")
    if among not in ("captions", "videos"):
        raise UsageError(f"video_to_text: among must be 'captions' or 'videos', got {among!r}")
    n_texts, n_videos = s.shape
    _videos_without_captions(tv, n_videos)
    if among == "videos":
        return ranks(_max_over_captions(s, tv).T, np.arange(n_videos))
    own = s[np.arange(n_texts), tv]  # [T] score of each caption with its own video; NaN is caught per block
    best = np.full(n_videos, -np.inf, dtype=s.dtype)
    np.maximum.at(best, tv, own)  # [V] b_v
    at_least_best = np.zeros(n_videos, dtype=np.int64)
    for start in range(0, n_texts, ROW_CHUNK):
        block = s[start : start + ROW_CHUNK]
        _check_nan(block, range(start, start + block.shape[0]))
        at_least_best += np.count_nonzero(block >= best[None, :], axis=0)
    # Own captions that reach b_v reach it exactly (b_v is their max): remove them from the count.
    own_at_best = np.bincount(tv, weights=(own == best[tv]), minlength=n_videos).astype(np.int64)
    return at_least_best - own_at_best


def _check_ranks(r: np.ndarray | Sequence[int]) -> np.ndarray:
    x = np.asarray(r)
    if x.ndim != 1 or x.size == 0:
        raise UsageError(f"retrieval metrics need a non-empty 1-D array of ranks, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 0:
        raise UsageError("ranks must be non-negative integers (0 = the correct item came first)")
    return x.astype(np.int64)


def retrieval_metrics(r: np.ndarray | Sequence[int], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """{"R@1", "R@5", "R@10" (percent), "MdR", "MnR" (1-based)} of 0-based ranks r: int [Q]."""
    x = _check_ranks(r)
    out = {f"R@{k}": float(100.0 * np.mean(x < k)) for k in ks}
    out["MdR"] = float(np.median(x)) + 1.0
    out["MnR"] = float(np.mean(x)) + 1.0
    return out


def retrieval_metrics_with_ci(
    r: np.ndarray | Sequence[int],
    groups: Sequence[str] | np.ndarray | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Metric]:
    """The metrics of ``retrieval_metrics`` with 95% clustered-bootstrap intervals.

    r: int [Q]; groups: [Q] cluster of each query (the video id for text-to-video with several captions
    per video, so that a video's captions are resampled together), or None for independent queries.
    The same seed gives the same intervals.
    """
    x = _check_ranks(r)
    g = None if groups is None else [str(v) for v in np.asarray(groups).tolist()]
    if g is not None and len(g) != x.size:
        raise UsageError(f"groups has {len(g)} entries but there are {x.size} ranks")
    out: dict[str, Metric] = {}
    for k in ks:
        value, low, high = mean_ci(100.0 * (x < k), g, resamples=resamples, seed=seed)
        out[f"R@{k}"] = Metric(value, low, high, n=x.size)
    low, high = cluster_bootstrap(lambda rows: float(np.median(x[rows])) + 1.0, x.size, g, resamples, seed)
    out["MdR"] = Metric(float(np.median(x)) + 1.0, low, high, n=x.size, higher_is_better=False)
    value, low, high = mean_ci(x + 1.0, g, resamples=resamples, seed=seed)
    out["MnR"] = Metric(value, low, high, n=x.size, higher_is_better=False)
    return out
