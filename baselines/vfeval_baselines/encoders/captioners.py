"""Segment captioners: encoders with the ``describe`` capability, one caption per clip (segment).

- ``retrieval``: for each segment, the caption of a bank file whose text embedding is nearest (cosine) to
  the segment's video embedding under any registered dual encoder (``pixel``, ``videofirst``, ...), the first
  in the bank on ties. Works offline with the encoders vfeval trains and the captions of their training set.
- ``hf-image-captioner``: a Hugging Face image-to-text model (BLIP, GIT, a ViT + GPT-2
  ``VisionEncoderDecoderModel``, ...) captions ``frames`` frames of each segment, at the centres of equal
  spans of its sampled frames (one: the middle frame); several captions of a segment are joined with "; ".

With ``pipeline.sampling.segments=L`` every L seconds of the window becomes one caption, which the ``llm``
aggregator reads with its time span.

This module is imported when the baselines are registered: torch and transformers only inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vfeval.config import EncoderConfig, to_dict
from vfeval.errors import UsageError
from vfeval.pipeline import Encoder, _normalise
from vfeval_baselines.caption_bank import embed_bank, load_bank


# -- retrieval --------------------------------------------------------------------------------------------
@dataclass
class RetrievalCaptionerConfig(EncoderConfig):
    name: str = "retrieval"
    bank: str = ""
    """The caption bank: ``.jsonl``, ``.csv`` or text (the formats of ``nearest-caption``)."""
    split: str = ""
    """If set, each bank caption is cut at this separator into several, e.g. ``", then "`` for captions
    that list a video's events in order, so that a segment gets the phrase of one event."""
    encoder: Any = field(default_factory=lambda: {"name": "pixel"})
    """The dual encoder that embeds segments and bank captions: ``{name: ..., <its options>}``."""


class RetrievalCaptioner(Encoder):
    def __init__(self, inner: Encoder, inner_identity: dict[str, Any], captions: list[str], digest: str,
                 split: str) -> None:
        self.inner = inner
        self.inner_identity = inner_identity
        self.captions = captions
        self.digest = digest
        self.split = split
        self._bank: np.ndarray | None = None

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": {"bank_sha256": self.digest, "bank_size": len(self.captions), "split": self.split,
                            "encoder": self.inner_identity}}

    def bank_embeddings(self) -> np.ndarray:
        """``float32 [B, D]`` unit rows; computed once, in fixed chunks."""
        if self._bank is None:
            self._bank = embed_bank(self.inner.embed_text, self.captions)
        return self._bank

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        return self.inner.embed_video(clips)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_text(texts)

    def describe(self, clips: list[np.ndarray]) -> list[str]:
        if not clips:
            return []
        video = _normalise(np.asarray(self.inner.embed_video(clips), dtype=np.float32))  # [N, D]
        best = (video @ self.bank_embeddings().T).argmax(axis=1)  # argmax: the first of equal scores
        return [self.captions[int(i)] for i in best]


def build_encoder(sub: Any, key: str) -> tuple[Encoder, dict[str, Any], Any]:
    """A registered encoder from a ``{name, ...options}`` sub-config validated against its schema.

    Returns (encoder, identity as recorded in results, spec)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from vfeval.errors import suggest
    from vfeval.plugins import get_plugin_manager

    sub = OmegaConf.to_container(sub) if OmegaConf.is_config(sub) else dict(sub or {})
    if not isinstance(sub, dict) or not sub.get("name"):
        raise UsageError(f"config: missing value for '{key}.name'; name a registered encoder (`vfeval ls encoders`)")
    registry = get_plugin_manager().registry
    spec = registry.get("encoders", str(sub["name"]))
    if spec.config is not None:
        schema = OmegaConf.structured(spec.config())
        unknown = [k for k in sub if k not in schema]
        if unknown:
            raise UsageError(f"config: unknown key '{key}.{unknown[0]}'{suggest(str(unknown[0]), schema.keys())}")
        try:
            cfg = OmegaConf.to_object(OmegaConf.merge(schema, sub))
        except OmegaConfBaseException as exc:
            raise UsageError(f"config: bad value under {key!r}: {str(exc).splitlines()[0]}") from exc
    else:
        cfg = OmegaConf.create(sub)
    encoder = spec.load()(cfg)
    identity = {"name": spec.name, "config": to_dict(cfg), **encoder.fingerprint()}
    return encoder, identity, spec


def make_retrieval(config: RetrievalCaptionerConfig) -> RetrievalCaptioner:
    captions, digest = load_bank(config.bank, "pipeline.encoder.bank", split=config.split, distinct=True)
    inner, identity, spec = build_encoder(config.encoder, "pipeline.encoder.encoder")
    missing = [c for c in ("embed_video", "embed_text") if c not in spec.capabilities]
    if missing:
        raise UsageError(f"config: 'pipeline.encoder.encoder.name': encoder {spec.name!r} cannot "
                         f"{', '.join(missing)}; the retrieval captioner needs a dual (video-text) encoder")
    return RetrievalCaptioner(inner, identity, captions, digest, config.split)


# -- image-to-text models ---------------------------------------------------------------------------------
@dataclass
class HFImageCaptionerConfig(EncoderConfig):
    name: str = "hf-image-captioner"
    model: str = ""
    """A local directory holding a saved image-to-text model with its processor, or a hub name."""
    frames: int = 1
    """Frames captioned per segment (1: the middle frame)."""
    prompt: str = ""
    """Text the caption starts from, for conditional captioners (BLIP: ``"a picture of"``); removed from
    the caption."""
    max_new_tokens: int = 30
    batch_size: int = 16
    """Images per ``generate`` call."""
    device: str = "auto"
    dtype: str = "auto"


def frame_indices(num_frames: int, k: int) -> list[int]:
    """``k`` of ``num_frames`` frames at the centres of ``k`` equal spans: ``floor((i + 0.5) * T / k)``
    (all frames if there are no more than ``k``)."""
    k = min(k, num_frames)
    return [int((i + 0.5) * num_frames / k) for i in range(k)]


class HFImageCaptioner(Encoder):
    def __init__(self, config: HFImageCaptionerConfig, model: Any, image_processor: Any, tokenizer: Any,
                 weights: str, device: Any) -> None:
        self.config = config
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.weights = weights
        self.device = device
        self.dtype = next(model.parameters()).dtype

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights, "dtype": str(self.dtype).removeprefix("torch.")}

    def describe(self, clips: list[np.ndarray]) -> list[str]:
        images, owner = [], []
        for i, clip in enumerate(clips):
            if clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0:
                raise UsageError(f"hf-image-captioner: a clip must be uint8 [T, H, W, 3], got {tuple(clip.shape)}")
            for j in frame_indices(len(clip), self.config.frames):
                images.append(clip[j])
                owner.append(i)
        texts: list[str] = []
        for start in range(0, len(images), self.config.batch_size):
            texts.extend(self._caption(images[start : start + self.config.batch_size]))
        out: list[list[str]] = [[] for _ in clips]
        for i, text in zip(owner, texts):
            out[i].append(text)
        return ["; ".join(parts) for parts in out]

    def _caption(self, images: list[np.ndarray]) -> list[str]:
        import torch

        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        inputs: dict[str, Any] = {"pixel_values": pixels.to(self.device, self.dtype)}
        if self.config.prompt:
            tokens = self.tokenizer([self.config.prompt] * len(images), return_tensors="pt", padding=True)
            inputs.update({k: v.to(self.device) for k, v in tokens.items()})
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.config.max_new_tokens)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        prompt = self.config.prompt.strip()
        return [(t.strip()[len(prompt):] if prompt and t.strip().startswith(prompt) else t).strip() for t in texts]


def make_hf_image_captioner(config: HFImageCaptionerConfig) -> HFImageCaptioner:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageTextToText,
        AutoTokenizer,
        VisionEncoderDecoderModel,
    )

    from vfeval_baselines import hf

    if config.frames < 1 or config.batch_size < 1 or config.max_new_tokens < 1:
        raise UsageError("config: 'pipeline.encoder.frames', 'batch_size' and 'max_new_tokens' must be >= 1")
    key = "pipeline.encoder.model"
    dev = hf.device(config.device)
    dtype = hf.dtype(config.dtype, dev)
    model_config = hf.load(AutoConfig.from_pretrained, config.model, key, "image-to-text model")
    cls = VisionEncoderDecoderModel if model_config.model_type == "vision-encoder-decoder" \
        else AutoModelForImageTextToText
    model = hf.load(lambda s: cls.from_pretrained(s, dtype=dtype), config.model, key, "image-to-text model")
    image_processor = hf.load(AutoImageProcessor.from_pretrained, config.model, key, "image processor")
    tokenizer = hf.load(AutoTokenizer.from_pretrained, config.model, key, "tokenizer")
    return HFImageCaptioner(config, model.to(dev), image_processor, tokenizer,
                            hf.weights_id(config.model, model_config), dev)
