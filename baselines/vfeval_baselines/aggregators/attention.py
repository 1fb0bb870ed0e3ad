"""``attention``: a small attention pooler over segment embeddings, learned on a train split.

The image-first comparison of LongViViT ("ImageViT" with a learned temporal pooler): any encoder embeds
each segment (for ``hf-clip``, one clip = its frames' mean), and the video embedding is

    pooled = W · sum_s softmax_s(q · e_s / tau_a) e_s        (e_s the L2-normalised segment embeddings)

with a query ``q`` and a square map ``W``. At ``q = 0, W = I`` this is exactly ``mean`` (late fusion), which
is where training starts. Training is contrastive (symmetric InfoNCE, fixed temperature) against the
encoder's own, frozen, text embeddings of the captions in ``pipeline.aggregator.train`` (a captions file:
JSONL or CSV of video, caption, start, end, see ``vfeval.captions``), decoded with the pipeline's
sampling. The encoder never changes; only ``q`` and ``W`` learn.

Training happens once, when the first answer is asked for, and is deterministic (seeded, CPU float32):
the aggregator's fingerprint names the train file by its SHA-256 together with every training option,
so cached answers are reused exactly when the same pooler would be learned again. ``save`` writes the
learned ``q``/``W`` to a ``.safetensors`` file; ``load`` uses such a file instead of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.aggregators import EmbeddingAggregatorConfig
from vfeval.config import SamplingConfig
from vfeval.errors import DataError, UsageError
from vfeval.hashing import sha256_file
from vfeval.pipeline import EmbeddingAggregator, Encoder, _normalise
from vfeval.requests import VideoWindow


@dataclass
class AttentionPoolConfig(EmbeddingAggregatorConfig):
    train: str = ""
    """Captions file of the train split the pooler learns from (JSONL/CSV: video, caption, start, end)."""
    load: str = ""
    """A ``.safetensors`` pooler written by ``save``: used as it is, nothing is trained."""
    save: str = ""
    """Where to write the learned pooler (``.safetensors``), to ``load`` it later."""
    steps: int = 300
    batch_size: int = 64
    lr: float = 1.0e-2
    weight_decay: float = 1.0e-3
    """Pulls ``W`` towards the identity (not towards zero), ``q`` towards zero: towards ``mean``."""
    temperature: float = 0.05
    """Of the contrastive loss (fixed)."""
    attention_temperature: float = 0.1
    """tau_a: how sharply the query can pick segments."""
    seed: int = 0


class AttentionPoolAggregator(EmbeddingAggregator):
    """``mean`` with a learned query and output map; see the module docstring."""

    def __init__(self, config: AttentionPoolConfig) -> None:
        super().__init__(config.template)
        if bool(config.train) == bool(config.load):
            raise UsageError(
                "aggregator 'attention' learns from a train split: set exactly one of pipeline.aggregator.train "
                "(a captions file, e.g. DIR/train/captions.jsonl from `vfeval data synthetic`) or "
                "pipeline.aggregator.load (a pooler it saved)"
            )
        for key in ("train", "load"):
            path = getattr(config, key)
            if path and not Path(path).expanduser().is_file():
                raise UsageError(f"pipeline.aggregator.{key}: {path} does not exist")
        if config.load and not config.load.endswith(".safetensors"):
            raise UsageError(f"pipeline.aggregator.load: {config.load} must be a .safetensors file")
        if config.steps < 1 or config.batch_size < 2 or config.lr <= 0:
            raise UsageError("aggregator 'attention': steps must be >= 1, batch_size >= 2 and lr > 0")
        self.config = config
        # The file the pooler comes from, hashed once: the fingerprint is asked for more than once per run.
        self.source_sha256 = sha256_file(config.load or config.train).hexdigest()
        self.query: np.ndarray | None = None
        self.weight: np.ndarray | None = None
        self.sampling: SamplingConfig | None = None

    def bind(self, encoder: Encoder, sampling: SamplingConfig | None = None) -> None:
        super().bind(encoder, sampling)
        self.sampling = sampling

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        source = {"load": self.source_sha256} if c.load else {
            "train": self.source_sha256, "steps": c.steps, "batch_size": c.batch_size, "lr": c.lr,
            "weight_decay": c.weight_decay, "temperature": c.temperature, "seed": c.seed,
        }
        return {**super().fingerprint(), "attention_temperature": c.attention_temperature, **source}

    # -- pooling ----------------------------------------------------------------------------------
    def pool(self, embeddings: np.ndarray) -> np.ndarray:
        if self.query is None:
            self._prepare()
        e = _normalise(embeddings)
        scores = e @ self.query / self.config.attention_temperature
        w = np.exp(scores - scores.max())
        return (self.weight @ ((w / w.sum()) @ e)).astype(np.float32)

    def _prepare(self) -> None:
        if self.config.load:
            try:
                from safetensors.numpy import load_file
            except ImportError as exc:
                raise UsageError("pipeline.aggregator.load needs safetensors: pip install 'vfeval[torch]'") from exc

            tensors = load_file(str(Path(self.config.load).expanduser()))
            self.query, self.weight = tensors["query"], tensors["weight"]
        else:
            self.query, self.weight = self._learn()
            if self.config.save:
                from safetensors.numpy import save_file

                Path(self.config.save).expanduser().parent.mkdir(parents=True, exist_ok=True)
                save_file({"query": self.query, "weight": self.weight}, str(Path(self.config.save).expanduser()),
                          metadata={"train_sha256": self.source_sha256})

    def _learn(self) -> tuple[np.ndarray, np.ndarray]:
        from vfeval.captions import read_captions
        from vfeval.video import read_window

        if self.sampling is None:
            raise UsageError("aggregator 'attention' must be bound to a pipeline (its sampling) before use")
        clips = read_captions(self.config.train, key="pipeline.aggregator.train")
        segments, captions = [], []
        for i, clip in enumerate(clips):
            try:
                decoded = read_window(VideoWindow(str(i), clip.video, clip.start, clip.end), self.sampling)
            except DataError as exc:
                raise UsageError(f"pipeline.aggregator.train: training video {clip.video} cannot be read: {exc}") from exc
            segments.append(_normalise(self.encoder.embed_video([c.frames for c in decoded])))
            captions.append(list(clip.captions))
        texts = sorted({c for cs in captions for c in cs})
        index = {t: k for k, t in enumerate(texts)}
        text_emb = _normalise(self.encoder.embed_text(texts))
        return train_pooler(segments, [[index[c] for c in cs] for cs in captions], text_emb, self.config)


def train_pooler(
    segments: list[np.ndarray], caption_ids: list[list[int]], text_emb: np.ndarray, config: AttentionPoolConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Learn ``q`` ``[D]`` and ``W`` ``[D, D]`` from per-video normalised segment embeddings ``[S_i, D]``,
    each video's caption indices into ``text_emb`` ``[K, D]`` (normalised), with the loss of the module
    docstring; one caption per video is drawn per step. Deterministic for a given ``config.seed``."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        raise UsageError("aggregator 'attention' trains with PyTorch: pip install 'vfeval[torch]'") from exc

    if len(segments) < 2:
        raise UsageError(f"pipeline.aggregator.train lists {len(segments)} clip; the pooler needs at least 2")
    d = text_emb.shape[1]
    g = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_max = max(len(s) for s in segments)
    e = torch.zeros(len(segments), n_max, d)
    real = torch.zeros(len(segments), n_max, dtype=torch.bool)
    for i, s in enumerate(segments):
        e[i, : len(s)], real[i, : len(s)] = torch.from_numpy(s), True
    texts = torch.from_numpy(np.asarray(text_emb, dtype=np.float32))
    query = torch.zeros(d, requires_grad=True)
    weight = torch.eye(d, requires_grad=True)
    opt = torch.optim.Adam([query, weight], lr=config.lr)
    eye = torch.eye(d)
    batch = min(config.batch_size, len(segments))
    for _ in range(config.steps):
        idx = torch.randperm(len(segments), generator=g)[:batch]
        chosen = torch.tensor([int(rng.choice(caption_ids[i])) for i in idx.tolist()])
        scores = (e[idx] @ query / config.attention_temperature).masked_fill(~real[idx], float("-inf"))
        pooled = (scores.softmax(-1)[:, :, None] * e[idx]).sum(1) @ weight.T
        logits = F.normalize(pooled, dim=-1) @ texts[chosen].T / config.temperature
        # Two videos drawn with the same caption are both right for it: neither is the other's negative.
        same = chosen[:, None] == chosen[None, :]
        logits = logits.masked_fill(same & ~torch.eye(batch, dtype=torch.bool), float("-inf"))
        target = torch.arange(batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss = loss + config.weight_decay * ((weight - eye).square().sum() + query.square().sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return query.detach().numpy().copy(), weight.detach().numpy().copy()


def make_attention(config: AttentionPoolConfig) -> AttentionPoolAggregator:
    return AttentionPoolAggregator(config)
