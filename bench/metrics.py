"""What retrieval scoring costs: similarity, ranks and metrics of a 10k x 10k retrieval, on one core.

    python bench/metrics.py                  # 10,000 texts x 10,000 videos, D = 256
    python bench/metrics.py --n 2000 --repeats 1

Random unit embeddings; one caption per video for the square case, as MSR-VTT 1k-A but ten times larger.
BLAS and OpenMP are held to one thread (set before numpy is imported) so the figures are per core. Each
stage is timed on its own, best of --repeats: ``similarity`` (float64 matmul + exact rounding of the
undecided entries), ``ranks`` (text-to-video, and video-to-text among all captions and among videos),
then ``retrieval_metrics`` and ``retrieval_metrics_with_ci`` (1000 resamples).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from vfeval.metrics.retrieval import (  # noqa: E402
    retrieval_metrics,
    retrieval_metrics_with_ci,
    similarity,
    text_to_video,
    video_to_text,
)


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="texts = videos")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    text = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    video = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    text_video = np.arange(args.n)

    t_sim, sim = best_of(args.repeats, lambda: similarity(text, video))
    rows = [("similarity [T, V]", t_sim)]
    for label, fn in [
        ("ranks text-to-video", lambda: text_to_video(sim, text_video)),
        ("ranks video-to-text (among captions)", lambda: video_to_text(sim, text_video)),
        ("ranks video-to-text (among videos)", lambda: video_to_text(sim, text_video, among="videos")),
    ]:
        t_rank, r = best_of(args.repeats, fn)
        t_metrics, _ = best_of(args.repeats, lambda r=r: retrieval_metrics(r))
        t_ci, _ = best_of(1, lambda r=r: retrieval_metrics_with_ci(r, seed=0))
        rows += [
            (label, t_rank),
            ("  + retrieval_metrics", t_metrics),
            ("  + metrics with CI (1000 resamples)", t_ci),
        ]

    print(
        f"retrieval scoring, {args.n} texts x {args.n} videos, D={args.dim}, 1 thread, best of {args.repeats}"
    )
    print(f"{'stage':<40} {'seconds':>9}")
    for label, seconds in rows:
        print(f"{label:<40} {seconds:>9.3f}")


if __name__ == "__main__":
    main()
