"""Option scoring by log-likelihood: shared-prefix reuse against scoring each full sequence.

    python bench/llm_scoring.py [--prefix 256 1024 1900] [--options 5] [--questions 8] [--repeat 3]
                                [--width 256] [--layers 4] [--arch llama] [--threads 1] [--device cpu]

Builds a tiny causal LM locally (random weights, a byte-level BPE tokenizer trained on a few sentences;
nothing is downloaded) and scores ``--questions`` questions of ``--options`` options (8 to 20 tokens each)
after a prompt of ``--prefix`` tokens, as the ``llm`` aggregator does on EgoSchema: once running the prompt a
single time and sharing its key/value cache among the options (``reuse_prefix=true``, the default), once
running every option's full sequence (``reuse_prefix=false``). It checks that both give the same scores and
prints the best of ``--repeat`` interleaved rounds (both ways in each round, in one process) as questions
per second, and the speed-up: the ratio of the best times, with the range of the per-round ratios.

With K options and a prompt much longer than the options, reuse does about 1/K of the prompt's work, so
the speed-up tends to K as the prompt grows, from below; for short prompts the per-call overhead dominates.
A speed-up above K means the baseline pays for something it should not (it once did: a padding mask that
kept attention off its causal kernel; the padding comes last, so the full sequences need no mask).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import interleaved, ratio, write_json
from vfeval_baselines.causal_lm import CausalLM

from vfeval import testing_models

SENTENCES = [
    "a red circle moves left, then a blue square moves up, then a green triangle moves down",
    "Question: In what order did the shapes' colours appear? Answer: B. red, then blue",
    "the person picks up a knife and cuts the onion on the wooden board",
    "Reply with the letter of the correct option only.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=int, nargs="+", default=[256, 1024, 1900])
    parser.add_argument("--options", type=int, default=5)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--arch", default="llama", choices=["llama", "gpt2"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    context = max(args.prefix) + 64
    with tempfile.TemporaryDirectory() as tmp:
        path = testing_models.build_causal_lm(Path(tmp) / "lm", SENTENCES, arch=args.arch, width=args.width,
                                              layers=args.layers, heads=max(2, args.width // 64), context=context)
        lm = CausalLM.load(str(path), device=args.device)
    rng = np.random.default_rng(0)
    vocab = len(lm.tokenizer)
    print(f"model: {args.arch}, width {args.width}, {args.layers} layers, vocab {vocab}, {lm.dtype}, "
          f"device {lm.device}, torch threads {torch.get_num_threads()}; {args.options} options of 8-20 tokens, "
          f"{args.questions} questions, best of {args.repeat}")
    print(f"{'prefix tokens':>13} {'full seq q/s':>13} {'reuse q/s':>10} {'speed-up':>9} {'(spread)':>14} "
          f"{'max |diff|':>11}")
    figures = []
    for n in args.prefix:
        questions = [(rng.integers(1, vocab, n).tolist(),
                      [rng.integers(1, vocab, int(rng.integers(8, 21))).tolist() for _ in range(args.options)])
                     for _ in range(args.questions)]
        scores: dict[bool, np.ndarray] = {}

        def score(reuse: bool, questions=questions, scores=scores) -> None:
            scores[reuse] = np.array([lm.loglikelihoods(p, c, reuse=reuse) for p, c in questions])

        sync = torch.cuda.synchronize if lm.device.type == "cuda" else None
        times = interleaved({"full": lambda: score(False), "reuse": lambda: score(True)}, args.repeat, sync=sync)
        speedup = ratio(f"prefix reuse speed-up, {n}-token prompt, {args.options} options", times["full"],
                        times["reuse"], target=f"<= {args.options}",
                        note="same process, interleaved rounds; tends to K from below")
        figures.append(speedup)
        diff = float(np.abs(scores[True] - scores[False]).max())
        spread = f"[{speedup.low:.2f}-{speedup.high:.2f}]"
        print(f"{n:>13} {args.questions / min(times['full']):>13.2f} {args.questions / min(times['reuse']):>10.2f} "
              f"{speedup.value:>8.2f}x {spread:>14} {diff:>11.2e}")
    write_json(args.json, "llm_scoring", figures)

if __name__ == "__main__":
    main()
