"""The tokenizers of ``vfeval_vimpac/tokenizer.py`` in torch: frames → codes, from the arrays of a tokenizer file.

Plain functions of a ``{name: tensor}`` dict (no modules): the tokenizer is frozen while VIMPAC trains
and evaluates, and ``jax/tokenizer.py`` computes the same codes from the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vfeval_vimpac import tokenizer as files
from vfeval_vimpac.tokenizer import DVAE_EPS, VQVAE_LAYERS


class Tokenizer:
    """A tokenizer file's encoder on ``device``: ``codes(frames)``."""

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], device: torch.device) -> None:
        self.kind, self.arrays, self.device = kind, arrays, device
        self.vocab = files.vocab_size(kind, arrays)
        self.tensors = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in arrays.items()}

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device) -> Tokenizer:
        kind, arrays, _ = files.load(path)
        return cls(kind, arrays, device)

    @torch.no_grad()
    def codes(self, frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
        """``uint8 [..., H, W, 3]`` frames → ``int64 [..., S/8, S/8]`` codes, frames resized to ``S = image_size``."""
        x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        lead = x.shape[:-3]
        x = x.to(self.device).reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        x = resize(x, image_size)
        fn = vqvae_codes if self.kind == "vqvae" else dvae_codes
        out = fn(self.tensors, x)
        return out.reshape(*lead, *out.shape[-2:])


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, H, W]`` in [0, 1] → ``[N, 3, size, size]`` (bilinear, antialiased; unchanged at that size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def vqvae_latents(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, S, S]`` in [0, 1] → the encoder's output ``[N, d, S/8, S/8]`` before quantisation."""
    h = x - 0.5
    for i in range(VQVAE_LAYERS - 1):
        h = F.relu(F.conv2d(h, t[f"enc.{i}.weight"], t[f"enc.{i}.bias"], stride=2, padding=1))
    last = VQVAE_LAYERS - 1
    return F.conv2d(h, t[f"enc.{last}.weight"], t[f"enc.{last}.bias"])


def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``[N, d, h, w]`` → ``int64 [N, h, w]``: index of the nearest codebook row (the first of equals)."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    distance = (codebook * codebook).sum(1)[None, :] - 2 * flat @ codebook.T  # ||z||^2 is the same for every code
    return distance.argmin(1).reshape(z.shape[0], *z.shape[2:])


def vqvae_codes(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return nearest(vqvae_latents(t, x), t["codebook"])


def _conv(t: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    w = t[name + ".w"]
    return F.conv2d(x, w, t[name + ".b"], padding=(w.shape[-1] - 1) // 2)


def dvae_codes(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DALL-E's dVAE encoder: ``[N, 3, S, S]`` in [0, 1] → ``int64 [N, S/8, S/8]`` (argmax of its logits)."""
    h = _conv(t, "blocks.input", (1 - 2 * DVAE_EPS) * x + DVAE_EPS)
    groups = files.dvae_groups(t)
    gain = files.dvae_post_gain(t)
    for g, blocks in enumerate(groups):
        for prefix in blocks:
            skip = _conv(t, prefix + "id_path", h) if prefix + "id_path.w" in t else h
            r = h
            for n in range(1, 5):
                r = _conv(t, f"{prefix}res_path.conv_{n}", F.relu(r))
            h = skip + gain * r
        if g < len(groups) - 1:
            h = F.max_pool2d(h, 2)
    return _conv(t, "blocks.output.conv", F.relu(h)).argmax(1)
