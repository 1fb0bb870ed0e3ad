"""The ``vimpac`` encoder in torch: a clip → its codes (the checkpoint's own tokenizer) → the transformer's
final [CLS] feature (or the mean of its token features): the frozen features a probe reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from vfeval_videofirst.torch.encoder import load_tensors, resolve_device

from vfeval.pipeline import Encoder
from vfeval_vimpac import weights
from vfeval_vimpac.config import VimpacConfig
from vfeval_vimpac.torch.tokenizer import Tokenizer
from vfeval_vimpac.torch.train import build_model


class VimpacEncoder(Encoder):
    def __init__(self, cfg: VimpacConfig) -> None:
        cfg, arrays, (kind, tok_arrays), self.weights = weights.resolve(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.tokenizer = Tokenizer(kind, tok_arrays, self.device)
        self.model = build_model(cfg, self.tokenizer.vocab)
        if arrays is not None:
            load_tensors(self.model, {k: torch.from_numpy(v) for k, v in arrays.items()}, cfg.checkpoint)
        self.model = self.model.to(self.device).eval()

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights, "pool": self.cfg.pool}

    def training(self) -> dict[str, Any] | None:
        from vfeval_vimpac.checkpoint import encoder_training

        return encoder_training(self.cfg)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` → ``float32 [len(clips), width]``; clips of one shape run as a batch."""
        width = self.model.cls.shape[0]
        out = np.zeros((len(clips), width), dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(clips):
            weights.check_clip(clip)
            groups.setdefault(tuple(clip.shape), []).append(i)
        for idx in groups.values():
            codes = self.tokenizer.codes(np.stack([clips[i] for i in idx]), self.cfg.image_size)
            out[idx] = self.model.embed(codes, self.cfg.pool).float().cpu().numpy()
        return out


def make_encoder(config: VimpacConfig) -> VimpacEncoder:
    return VimpacEncoder(config)
