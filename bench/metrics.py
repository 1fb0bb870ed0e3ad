"""What retrieval scoring costs: similarity, ranks and metrics of a 10k x 10k retrieval, on one core.

    python bench/metrics.py                  # 10,000 texts x 10,000 videos, D = 256
    python bench/metrics.py --n 2000 --repeats 1

Random unit embeddings; one caption per video for the square case, as MSR-VTT 1k-A but ten times larger.
BLAS and OpenMP are held to one thread (set before numpy is imported) so the figures are per core.
``ranks_from_embeddings`` (what a retrieval task's scoring runs: float32 tiles of 1 MiB, and only entries within
the float32 error bound of a row's or column's threshold computed exactly; the ranks of the exact matrix) and
``similarity`` (a float64 matmul + exact rounding of the few undecided entries) are timed in the same
interleaved rounds as a plain float32 and a plain float64 matmul of the same shape, and reported as ratios
to both. The float32 matmul is timed twice: into an output allocated beforehand (its arithmetic alone, the
denominator of the target), and as ``t @ v.T`` is, allocating its 400 MB output. The second one's page
faults cost from nothing to 0.4 s from one call to the next on the same machine, so a ratio to it can meet
the target or miss it by luck: the float64 matmul is the floor of a similarity whose every entry is the correctly rounded dot
product (what keeps scores independent of batching), and it costs about twice a float32 one on an AVX2
CPU. Then ``ranks`` (text-to-video, and video-to-text among all captions and among videos),
``retrieval_metrics`` and ``retrieval_metrics_with_ci`` (1000 resamples), best of --repeats.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from harness import best, interleaved, print_figures, ratio, write_json  # noqa: E402

from vfeval.metrics.retrieval import (  # noqa: E402
    ranks_from_embeddings,
    retrieval_metrics,
    retrieval_metrics_with_ci,
    similarity,
    text_to_video,
    video_to_text,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="texts = videos")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, after one warm-up round")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    text = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    video = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    text_video = np.arange(args.n)
    t32, v32 = text, np.ascontiguousarray(video.T)
    t64, v64 = text.astype(np.float64), np.ascontiguousarray(video.T.astype(np.float64))
    sim = similarity(text, video)
    product = np.empty((args.n, args.n), dtype=np.float32)  # a plain matmul's output, allocated once

    # The similarity and its two references, in the same rounds.
    times = interleaved(
        {
            "similarity": lambda: similarity(text, video),
            "ranks": lambda: ranks_from_embeddings(text, video, text_video, "captions"),
            "sgemm": lambda: t32 @ v32,
            "sgemm into": lambda: np.matmul(t32, v32, out=product),
            "dgemm": lambda: t64 @ v64,
        },
        args.repeats,
    )
    stages = interleaved(
        {
            "ranks text-to-video": lambda: text_to_video(sim, text_video),
            "ranks video-to-text (among captions)": lambda: video_to_text(sim, text_video),
            "ranks video-to-text (among videos)": lambda: video_to_text(sim, text_video, among="videos"),
        },
        args.repeats,
    )
    r = text_to_video(sim, text_video)
    metric_times = interleaved({"retrieval_metrics": lambda: retrieval_metrics(r)}, args.repeats)
    ci_times = interleaved({"ci": lambda: retrieval_metrics_with_ci(r, seed=0)}, 1, warmup=0)
    shape = f"{args.n}x{args.dim} @ {args.dim}x{args.n}"
    note = "1 thread, same process, interleaved rounds"
    figures = [
        ratio(f"exact ranks from embeddings, t2v + v2t / float32 matmul into an allocated matrix ({shape})",
              times["ranks"], times["sgemm into"], target="<= 1.5",
              note=note + "; what scoring a retrieval task costs, against the matmul's arithmetic alone"),
        ratio(f"exact ranks / plain float32 matmul, its output allocated by the call ({shape})", times["ranks"],
              times["sgemm"], note=note + "; the allocation's page faults vary from call to call"),
        ratio(f"exact similarity matrix / float32 matmul ({shape})", times["similarity"], times["sgemm"],
              note=note + "; every entry correctly rounded: a float64 matmul at least"),
        ratio(f"similarity / float64 matmul ({shape})", times["similarity"], times["dgemm"], note=note),
        ratio("float64 / float32 matmul (the floor of an exact similarity)", times["dgemm"], times["sgemm"],
              note=note),
        best("similarity [T, V]", times["similarity"], note=note),
        best("float32 matmul", times["sgemm"], note=note),
    ]
    figures += [best(label, t, note=note) for label, t in stages.items()]
    figures += [
        best("retrieval_metrics (text-to-video ranks)", metric_times["retrieval_metrics"], note=note),
        best("retrieval_metrics_with_ci (1000 resamples)", ci_times["ci"], note="1 run"),
    ]
    print_figures(f"retrieval scoring, {args.n} texts x {args.n} videos, D={args.dim}, 1 thread, "
                  f"best of {args.repeats} interleaved rounds", figures)
    write_json(args.json, "metrics", figures)


if __name__ == "__main__":
    main()
