"""A non-learned pixel encoder: how much of each basic colour a video shows, and which colours a text names.

Video: every frame's saturated pixels are assigned to the nearest colour prototype; the embedding is the
share of each colour, averaged over frames. Text: the count of each colour word. The two live in the same
space (one axis per colour term), so the pipeline can score a question's options by cosine like any dual
encoder. It answers "which colours appear" well and questions about order or counting at chance: the floor
that a learned video encoder must clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from vfeval.config import EncoderConfig
from vfeval.pipeline import Encoder

# Basic colour terms (Berlin & Kay) with sRGB prototypes; greys are excluded by the saturation gate.
COLOUR_TERMS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (235, 225, 30),
    "green": (30, 180, 50),
    "cyan": (30, 210, 220),
    "blue": (30, 60, 220),
    "purple": (130, 40, 180),
    "magenta": (220, 40, 200),
    "pink": (245, 160, 190),
    "brown": (130, 80, 30),
}
_SYNONYMS = {"violet": "purple", "teal": "cyan", "turquoise": "cyan", "grey": None, "gray": None}
_WORD = re.compile(r"[a-z]+")


@dataclass
class PixelConfig(EncoderConfig):
    name: str = "pixel"
    min_saturation: float = 0.35
    """Pixels less saturated than this (max-min over max) are background and not counted."""


class PixelColourEncoder(Encoder):
    def __init__(self, min_saturation: float = 0.35) -> None:
        self.min_saturation = min_saturation
        self.names = list(COLOUR_TERMS)
        self.prototypes = np.asarray(list(COLOUR_TERMS.values()), dtype=np.float32)  # [C, 3]

    def fingerprint(self) -> dict:
        return {"weights": "pixel-colour-terms-1", "min_saturation": self.min_saturation}

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        return np.stack([self._embed_clip(c) for c in clips]).astype(np.float32)

    def _embed_clip(self, frames: np.ndarray) -> np.ndarray:
        """frames: uint8 [T, H, W, 3] → float32 [C], the mean over frames of each colour's pixel share."""
        px = frames.reshape(frames.shape[0], -1, 3).astype(np.float32)  # [T, P, 3]
        mx, mn = px.max(-1), px.min(-1)
        saturated = (mx - mn) / np.maximum(mx, 1.0) >= self.min_saturation  # [T, P]
        dist = ((px[:, :, None, :] - self.prototypes[None, None]) ** 2).sum(-1)  # [T, P, C]
        nearest = dist.argmin(-1)
        onehot = np.eye(len(self.names), dtype=np.float32)[nearest] * saturated[..., None]
        return onehot.mean(axis=(0, 1))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.names)), dtype=np.float32)
        index = {n: i for i, n in enumerate(self.names)}
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                term = _SYNONYMS.get(word, word)
                if term in index:
                    out[i, index[term]] += 1.0
        return out


def make_encoder(config: PixelConfig) -> PixelColourEncoder:
    return PixelColourEncoder(config.min_saturation)
