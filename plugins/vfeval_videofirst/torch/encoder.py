"""The videofirst encoder behind vfeval's ``Encoder`` interface: build or load the model, embed clips and texts.

Where the weights come from, in order:
1. ``checkpoint``: a .safetensors file from ``save_checkpoint``; every key must match the model built from
   the config. The architecture of CLIP towers comes from ``clip_model``'s config (no CLIP weights are read).
   The config is never taken from the checkpoint: the run config states every architecture option (so the
   result records it), and a checkpoint saved with other values (``ARCHITECTURE_KEYS``, from its metadata)
   is refused with the overrides that would make it fit.
2. ``init=clip``: CLIP's vision tower inflated (``inflate.py``); with ``text=clip`` its text tower too.
3. ``init=none``: random weights drawn from ``seed`` (training from scratch). The fingerprint says so.

Clips of a frame count that is not a multiple of the tubelet's t are padded by repeating their last frame;
frames are resized to ``image_size`` square (bilinear, antialiased) and normalised with CLIP's statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval.pipeline import Encoder
from vfeval_videofirst import checkpoint
from vfeval_videofirst import inflate as shared
from vfeval_videofirst.config import BYTE_TEXT_DEPTH, VideoFirstConfig, token_grid
from vfeval_videofirst.inflate import CLIP_MEAN, CLIP_STD
from vfeval_videofirst.masking import mask_rng
from vfeval_videofirst.torch import inflate
from vfeval_videofirst.torch.model import DualEncoder, SmallTextTower, VideoTransformer


def build_model(cfg: VideoFirstConfig) -> tuple[DualEncoder, str]:
    """The dual encoder the config describes, with its weights, and the string that identifies those weights."""
    arch, uses_clip, clip_config = shared.prepare(cfg)
    clip = inflate.load_clip(cfg.clip_model) if uses_clip and not cfg.checkpoint else None

    with torch.random.fork_rng(devices=[]):  # the seed decides the weights without touching global state
        torch.manual_seed(cfg.seed)
        video = VideoTransformer(
            **arch,
            tubelet=tuple(cfg.tubelet),
            grid=token_grid(cfg),
            embed_dim=cfg.embed_dim,
            attention=cfg.attention,
            pool=cfg.pool,
            act=clip_config.vision_config.hidden_act if cfg.init == "clip" else "gelu",
            mask=cfg.mask,
            mask_ratio=cfg.mask_ratio,
            mask_at_eval=cfg.mask_at_eval,
        )
        if cfg.text == "clip":
            text = inflate.clip_text_tower(clip_config, inflate.load_tokenizer(cfg.clip_model), clip)
        elif cfg.text in ("bytes", "words"):
            text = SmallTextTower(
                width=arch["width"],
                depth=BYTE_TEXT_DEPTH,
                heads=arch["heads"],
                mlp=arch["mlp"],
                embed_dim=cfg.embed_dim,
                length=cfg.text_length,
                tokens=cfg.text,
            )
        else:
            text = None
    model = DualEncoder(video, text)

    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint)
        return model, f"sha256:{sha256_file(Path(cfg.checkpoint)).hexdigest()}"
    if cfg.init == "clip":
        inflate.inflate_video(model.video, clip, cfg.inflation)
    if clip is not None:
        with torch.no_grad():
            model.logit_scale.copy_(clip.logit_scale)
    return model, shared.init_id(cfg, clip_config)


def save_checkpoint(model: torch.nn.Module, path: str | Path, config: Any = None,
                    training: dict[str, Any] | None = None) -> None:
    """Write the model's weights in the layout both backends share (``vfeval_videofirst/checkpoint.py``), with
    the encoder config (a dict or dataclass, as JSON) and the training summary in the metadata: the JAX backend
    writes the same bytes."""
    checkpoint.save_arrays({k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}, path,
                           config, training)


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load safetensors weights into ``model``: every key and shape must match. Returns the saved config."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = checkpoint.checkpoint_path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise UsageError(
            f"videofirst: {path} is not a readable safetensors file ({str(exc).splitlines()[0]})"
        ) from exc
    load_tensors(model, tensors, path)
    return json.loads(metadata.get("config", "{}"))


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(tensors)``, refusing with one line (naming ``path``) unless every key and shape fits."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(repr(k) for k in keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise UsageError(
            f"videofirst: checkpoint {path} does not fit the configured model: {'; '.join(parts)} "
            "(check variant, tubelet, image_size, num_frames, attention and text)"
        )
    model.load_state_dict(tensors, strict=True)


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``device`` option (``auto``: CUDA where torch sees it, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("videofirst: device is 'cuda' but torch sees no CUDA device; set device=cpu or auto")
    return torch.device(name)


def preprocess(clips: np.ndarray, image_size: int, t: int, device: torch.device) -> torch.Tensor:
    """``uint8 [B, T, H, W, 3]`` → normalised ``float32 [B, 3, T', S, S]``, T' the next multiple of t."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    pad = -x.shape[1] % t
    if pad:  # repeat the last frame rather than drop frames the sampler chose
        x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
    b, n, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b * n, 3, h, w).float() / 255.0
    if (h, w) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    mean = torch.tensor(CLIP_MEAN, device=device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=device)[:, None, None]
    x = (x - mean) / std
    return x.reshape(b, n, 3, image_size, image_size).transpose(1, 2).contiguous()


class VideoFirstEncoder(Encoder):
    """Embeds clips with the video tower and texts with the text tower, in eval mode."""

    def __init__(self, cfg: VideoFirstConfig, model: DualEncoder, weights: str) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device).eval()
        self.weights = weights

    def num_parameters(self) -> int:
        """Both towers (the text tower scores every option, so it is part of what answers)."""
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def training(self) -> dict[str, Any] | None:
        return checkpoint.encoder_training(self.cfg)

    @torch.inference_mode()
    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` → ``float32 [len(clips), embed_dim]``.

        Clips of the same shape run as one batch. With ``mask_at_eval`` every clip gets the same mask,
        drawn from ``seed``, so an embedding never depends on which other clips share its batch.
        """
        out = np.zeros((len(clips), self.cfg.embed_dim), dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(clips):
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise UsageError(
                    f"videofirst: a clip must be uint8 [T, H, W, 3], got shape {tuple(clip.shape)}"
                )
            groups.setdefault(tuple(clip.shape), []).append(i)
        for shape, idx in groups.items():
            x = preprocess(
                np.stack([clips[i] for i in idx]), self.cfg.image_size, self.cfg.tubelet[0], self.device
            )
            keep = self.model.video.draw_keep(1, token_grid(self.cfg, shape[0]), mask_rng(self.cfg.seed))
            keep = None if keep is None else keep.expand(len(idx), -1)
            out[idx] = self.model.video(x, keep=keep).float().cpu().numpy()
        return out

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """texts → ``float32 [len(texts), embed_dim]``, in the space of ``embed_video``."""
        if self.model.text is None:
            raise UsageError("videofirst: text='none' has no text tower; set text=clip or text=bytes")
        if not texts:
            return np.zeros((0, self.cfg.embed_dim), dtype=np.float32)
        return self.model.encode_text(list(texts)).float().cpu().numpy()


def make_encoder(config: VideoFirstConfig) -> VideoFirstEncoder:
    """The factory named by the ``videofirst`` EncoderSpec."""
    model, weights = build_model(config)
    return VideoFirstEncoder(config, model, weights)
