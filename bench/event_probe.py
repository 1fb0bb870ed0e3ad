"""What a frozen encoder's features say about each event of a synthetic clip: its colour, shape and motion.

    python bench/event_probe.py                        # the quickstart's stage-1 encoder, 1000 training videos
    python bench/event_probe.py --checkpoint runs/train-NAME/final.safetensors --videos 400
    python bench/event_probe.py --samples runs/captioner/msrvtt_captioning/videofirst-captioner/samples.jsonl
    python bench/event_probe.py --tokenizer runs/train-recipes-vqvae/final.safetensors --videos 600

A synthetic video shows its events one after another, each in its own slot of the clip, and its training
caption lists each event's colour, shape and direction ("a red circle moves left, then ..."). Each event
is probed with a ridge classifier on the first 60% of the videos, its penalty chosen on the next 20% and
its accuracy read on the last 20%, from:

- the clip's pixels in the event's slot (what every encoder starts from);
- the encoder's final tokens there, in place (a readout that weighs each position on its own);
- their mean, and the mean of each time slice (what a pooled summary can reach: an attention-weighted sum
  of tokens sees where in the frame a token sits only if the token's own features say so);
- the clip's pooled embedding, with the event's index.

Reading an attribute in place but not from a mean locates it in the arrangement of the tokens, not in
any token. With ``--tokenizer`` (a ``vfeval_vimpac`` VQ tokenizer) the features are instead the share of each
code in the event's frames, with how many codes the frames use: what VIMPAC's transformer can start from. With ``--samples`` (a captioning run on the synthetic MSR-VTT, whose first reference is the event
list) the predictions are parsed as event lists: each attribute's accuracy, and CIDEr recomputed with
one attribute replaced by the truth, or drawn at random: what reading that attribute is worth.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np
from harness import Figure, print_figures, single, write_json

EVENT = re.compile(r"a (\w+) (\w+) moves (\w+)")
ATTRIBUTES = ("colour", "shape", "direction")
PENALTIES = (1.0, 30.0, 1000.0, 30000.0)


def ridge_accuracy(x: np.ndarray, y: np.ndarray, parts: tuple[float, float] = (0.6, 0.8)) -> float:
    """Test accuracy of a one-vs-all ridge classifier: fit on the first ``parts[0]`` of the rows, the penalty
    chosen on the rows up to ``parts[1]``, scored on the rest (rows in video order: no video in two parts)."""
    n = len(y)
    fit, val = int(parts[0] * n), int(parts[1] * n)
    mean, std = x[:fit].mean(0), x[:fit].std(0) + 1e-6
    x = (x - mean) / std
    classes = np.unique(y[:fit])
    targets = (y[:fit, None] == classes[None]).astype(np.float64)
    a = x[:fit]
    gram = a @ a.T if a.shape[1] > a.shape[0] else a.T @ a  # the smaller of the two systems

    def weights(penalty: float) -> np.ndarray:
        if a.shape[1] > a.shape[0]:
            return a.T @ np.linalg.solve(gram + penalty * np.eye(len(gram)), targets)
        return np.linalg.solve(gram + penalty * np.eye(len(gram)), a.T @ targets)

    def accuracy(w: np.ndarray, rows: slice) -> float:
        return float((classes[(x[rows] @ w).argmax(1)] == y[rows]).mean())

    best = max(PENALTIES, key=lambda p: accuracy(weights(p), slice(fit, val)))
    return accuracy(weights(best), slice(val, n))


def synthetic_events(captions: str, videos: int, frames: int, size: int):
    """``(uint8 [T, S, S, 3] clip, [(colour, shape, direction), ...])`` of each of the first ``videos`` videos
    whose captions include an event list, ``frames`` sampled uniformly at ``size`` px."""
    from vfeval_videofirst.torch.data import CaptionedVideos

    from vfeval.captions import read_captions
    from vfeval.config import SamplingConfig

    pairs = [p for p in read_captions(captions) if any(EVENT.search(c) for c in p.captions)][:videos]
    clips = CaptionedVideos(pairs, SamplingConfig(mode="uniform", num_frames=frames, size=size, crop=size))
    for i in range(len(clips)):
        clip, texts, _ = clips[i]
        yield clip, next(EVENT.findall(c) for c in texts if EVENT.search(c))


def slot(k: int, events: int, n: int) -> slice:
    """The share of ``n`` time steps (frames, slices) that event ``k`` of ``events`` occupies."""
    return slice(k * n // events, (k + 1) * n // events)


def event_features(checkpoint: str, captions: str, videos: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per event of the first ``videos`` training videos: each feature set ``[events, F]`` and the labels
    ``[events, 3]`` (colour, shape, direction)."""
    import torch
    from vfeval_videofirst.checkpoint import read_config
    from vfeval_videofirst.config import VideoFirstConfig
    from vfeval_videofirst.torch.encoder import build_model, preprocess

    cfg = VideoFirstConfig(**{**read_config(checkpoint), "checkpoint": checkpoint, "device": "cpu"})
    model = build_model(cfg)[0].video.eval()
    t, size = cfg.tubelet[0], cfg.image_size
    feats: dict[str, list[np.ndarray]] = {k: [] for k in ("pixels", "tokens in place", "token mean",
                                                          "token mean per time slice", "pooled embedding")}
    labels = []
    with torch.no_grad():
        for frames, events in synthetic_events(captions, videos, cfg.num_frames, size):
            video = preprocess(frames[None], size, t, torch.device("cpu"))
            x, nt = model.encode(video)
            tokens = model.ln_post(x)[0, nt:].reshape(nt, -1, x.shape[-1]).numpy()  # [slices, patches, D]
            pooled = model(video)[0].numpy()
            pixels = frames.astype(np.float32) / 255
            for k, event in enumerate(events):
                mine = tokens[slot(k, len(events), nt)]
                feats["pixels"].append(pixels[slot(k, len(events), nt * t)].ravel())
                feats["tokens in place"].append(mine.ravel())
                feats["token mean"].append(mine.mean((0, 1)))
                feats["token mean per time slice"].append(mine.mean(1).ravel())
                feats["pooled embedding"].append(np.concatenate([pooled, np.eye(len(events))[k]]))
                labels.append(event)
    return {k: np.stack(v).astype(np.float64) for k, v in feats.items()}, np.array(labels)


def code_features(tokenizer: str, captions: str, videos: int, frames: int = 16,
                  size: int = 32) -> tuple[dict[str, np.ndarray], np.ndarray, list[Figure]]:
    """A VQ tokenizer's codes (``vfeval_vimpac``) per event: the share of each code in the event's frames, and
    the labels; with figures of the codebook's use over all the frames (codes used, perplexity)."""
    import torch
    from vfeval_vimpac.torch.tokenizer import Tokenizer

    tok = Tokenizer.from_file(tokenizer, torch.device("cpu"))
    shares, labels, counts = [], [], np.zeros(tok.vocab)
    for clip, events in synthetic_events(captions, videos, frames, size):
        codes = tok.codes(clip, size).numpy().reshape(len(clip), -1)  # [T, codes of a frame]
        counts += np.bincount(codes.ravel(), minlength=tok.vocab)
        one_hot = np.eye(tok.vocab)[codes]
        for k, event in enumerate(events):
            shares.append(one_hot[slot(k, len(events), len(clip))].mean((0, 1)))
            labels.append(event)
    p = counts[counts > 0] / counts.sum()
    figures = [single("codes in use", float((counts > 0).sum()), unit="codes", note=f"of {tok.vocab}"),
               single("perplexity of the codes", float(np.exp(-(p * np.log(p)).sum())), unit="")]
    return {"the share of each code": np.stack(shares)}, np.array(labels), figures


def probes(feats: dict[str, np.ndarray], labels: np.ndarray) -> list[Figure]:
    figures = []
    for j, attribute in enumerate(ATTRIBUTES):
        test = labels[int(0.8 * len(labels)):, j]
        values, counts = np.unique(test, return_counts=True)
        figures.append(single(f"{attribute}: the most frequent value", 100 * counts.max() / counts.sum(), unit="%",
                              note=f"{len(values)} values"))
        for name, x in feats.items():
            figures.append(single(f"{attribute} from {name}", 100 * ridge_accuracy(x, labels[:, j]), unit="%",
                                  note=f"{x.shape[1]} features, {len(labels)} events"))
    return figures


def caption_figures(samples_path: str, seed: int = 0) -> list[Figure]:
    """Each attribute's accuracy in a captioning run's event lists, and CIDEr with one attribute made true or
    drawn at random (uniformly from the values the references use)."""
    from vfeval.metrics.captioning import caption_scores

    samples = [json.loads(line) for line in Path(samples_path).read_text().splitlines() if line.strip()]
    refs = {s["id"]: s["target"] for s in samples}
    parsed = [(EVENT.findall(s["prediction"]), EVENT.findall(s["target"][0])) for s in samples]
    values = [sorted({e[j] for _, truth in parsed for e in truth}) for j in range(3)]
    rng = random.Random(seed)

    def cider(choose) -> float:
        preds = {}
        for s, (pred, truth) in zip(samples, parsed):
            if len(pred) != len(truth):  # not an event list of the right length: left as it is
                preds[s["id"]] = s["prediction"]
                continue
            preds[s["id"]] = ", then ".join("a {} {} moves {}".format(*[choose(j, p, q) for j in range(3)])
                                            for p, q in zip(pred, truth))
        return caption_scores(refs, preds, metrics=["CIDEr"])["CIDEr"]

    figures = [single("CIDEr as predicted", cider(lambda j, p, q: p[j]), unit="")]
    for j, attribute in enumerate(ATTRIBUTES):
        pairs = [(p[j], q[j]) for pred, truth in parsed for p, q in zip(pred, truth)]
        figures.append(single(f"{attribute}: accuracy of the predicted events",
                              100 * np.mean([p == q for p, q in pairs]), unit="%", note=f"{len(pairs)} events"))
        figures.append(single(f"CIDEr with every {attribute} true",
                              cider(lambda i, p, q, j=j: q[i] if i == j else p[i]), unit=""))
        figures.append(single(f"CIDEr with every {attribute} drawn at random",
                              cider(lambda i, p, q, j=j: rng.choice(values[i]) if i == j else p[i]), unit=""))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/train-quickstart-stage1/final.safetensors")
    parser.add_argument("--captions", default="data/synthetic/train/captions.jsonl")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--samples", help="a captioning run's samples.jsonl on the synthetic MSR-VTT")
    parser.add_argument("--tokenizer", help="probe a VQ tokenizer's codes (16 frames of 32 px) instead of an encoder")
    parser.add_argument("--json", help="also write the figures to this JSON file (for bench/run_all.py)")
    ns = parser.parse_args()
    split = "ridge probes, test accuracy (60/20/20 split by video)"
    if ns.tokenizer:
        feats, labels, figures = code_features(ns.tokenizer, ns.captions, ns.videos)
        figures += probes(feats, labels)
        print_figures(f"events of {ns.videos} synthetic training videos in the codes of {ns.tokenizer}: {split}",
                      figures)
    else:
        figures = probes(*event_features(ns.checkpoint, ns.captions, ns.videos))
        print_figures(f"events of {ns.videos} synthetic training videos through {ns.checkpoint}: {split}", figures)
    if ns.samples:
        more = caption_figures(ns.samples)
        print_figures(f"event lists of {ns.samples}", more)
        figures += more
    write_json(ns.json, "event_probe", figures)


if __name__ == "__main__":
    main()
