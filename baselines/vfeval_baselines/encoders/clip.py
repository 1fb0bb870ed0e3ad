"""``hf-clip``: an image-first dual encoder from any Hugging Face ``CLIPModel``.

A clip's embedding is the mean of its frames' L2-normalised image embeddings (frames as independent
images: what an image-text model sees of a video); texts get CLIP's text embedding. Frames go through the
model's own image processor (CLIP: short side to the model's size, centre crop, its mean and std), so
``pipeline.sampling.size/crop`` only decide what is decoded. With ``pipeline.sampling.segments`` and the
``mean`` aggregator, segments are pooled in turn; with ``attention``, a learned pooler weighs them.

This module is imported when the baselines are registered: torch and transformers only inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vfeval.config import EncoderConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Encoder


@dataclass
class HFClipConfig(EncoderConfig):
    name: str = "hf-clip"
    model: str = ""
    """A local directory holding a saved CLIPModel with its processor, or a hub name
    (e.g. ``openai/clip-vit-base-patch32``)."""
    batch_size: int = 64
    """Frames (or texts) per forward pass."""
    device: str = "auto"
    dtype: str = "auto"
    """``auto``: bfloat16 on a GPU, float32 on the CPU."""


def _features(out: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return out if hasattr(out, "shape") else out.pooler_output


class HFClipEncoder(Encoder):
    def __init__(self, config: HFClipConfig, model: Any, processor: Any, weights: str, device: Any) -> None:
        self.config = config
        self.model = model.eval()
        self.processor = processor
        self.weights = weights
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.text_length = model.config.text_config.max_position_embeddings

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights, "dtype": str(self.dtype).removeprefix("torch.")}

    def embed_frames(self, frames: list[np.ndarray]) -> np.ndarray:
        """``uint8 [H, W, 3]`` images → ``float32 [N, E]`` unit rows."""
        import torch

        out = []
        for i in range(0, len(frames), self.config.batch_size):
            pixels = self.processor(images=list(frames[i : i + self.config.batch_size]),
                                    return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                emb = _features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` → ``float32 [len(clips), E]``, the mean of unit frame embeddings."""
        for clip in clips:
            if clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0:
                raise UsageError(f"hf-clip: a clip must be uint8 [T, H, W, 3], got shape {tuple(clip.shape)}")
        frames = [f for clip in clips for f in clip]
        emb = self.embed_frames(frames)
        bounds = np.cumsum([0] + [len(c) for c in clips])
        return np.stack([emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]).astype(np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.model.config.projection_dim), dtype=np.float32)
        out = []
        for i in range(0, len(texts), self.config.batch_size):
            tokens = self.processor.tokenizer(list(texts[i : i + self.config.batch_size]), padding=True,
                                              truncation=True, max_length=self.text_length, return_tensors="pt")
            with torch.inference_mode():
                emb = _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def make_hf_clip(config: HFClipConfig) -> HFClipEncoder:
    from transformers import AutoProcessor, CLIPModel

    from vfeval_baselines import hf

    if config.batch_size < 1:
        raise UsageError("config: bad value for 'pipeline.encoder.batch_size': it must be >= 1")
    key = "pipeline.encoder.model"
    dev = hf.device(config.device)
    dtype = hf.dtype(config.dtype, dev)
    model = hf.load(lambda s: CLIPModel.from_pretrained(s, dtype=dtype), config.model, key, "CLIPModel")
    processor = hf.load(AutoProcessor.from_pretrained, config.model, key, "CLIP processor")
    return HFClipEncoder(config, model.to(dev), processor, hf.weights_id(config.model, model.config), dev)
