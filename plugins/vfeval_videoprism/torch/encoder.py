"""``videoprism`` on PyTorch: the Hugging Face transformers port (``VideoPrismClipModel`` for video-text
checkpoints, ``VideoPrismVisionModel`` for video-only ones), loaded from an hf folder or, through the key map,
from an official ``.npz``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vfeval.errors import UsageError
from vfeval_videoprism import checkpoint
from vfeval_videoprism.base import VideoPrismEncoder
from vfeval_videoprism.config import VideoPrismConfig
from vfeval_videoprism.inputs import Source, locate


def hf_model(state: dict[str, np.ndarray], config: dict) -> Any:
    """The transformers model of an hf ``config.json`` dict holding ``state`` (every tensor, strictly)."""
    from transformers import (
        VideoPrismClipModel,
        VideoPrismConfig,
        VideoPrismVisionConfig,
        VideoPrismVisionModel,
    )

    def options(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in ("model_type", "architectures")}

    if config["model_type"] == "videoprism":
        cfg = VideoPrismConfig(vision_config=options(config["vision_config"]),
                               text_config=options(config["text_config"]))
        cls = VideoPrismClipModel
    else:
        cfg, cls = VideoPrismVisionConfig(**options(config)), VideoPrismVisionModel
    cfg._attn_implementation = "eager"  # the soft cap needs eager attention (the port disables SDPA for it)
    model = cls(cfg)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return model


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"config: bad value for 'pipeline.encoder.device': {name!r}; use auto, cpu, cuda or "
                         "cuda:N") from exc


class TorchVideoPrismEncoder(VideoPrismEncoder):
    def __init__(self, cfg: VideoPrismConfig, source: Source, arch: checkpoint.Arch, model: Any) -> None:
        super().__init__(cfg, source, arch)
        self.device = device(cfg.device)
        self.model = model.eval().to(self.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _video(self, x: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(x).permute(0, 1, 4, 2, 3).to(self.device)  # [B, T, 3, H, W]
        with torch.inference_mode():
            if self.arch.lvt:
                out = self.model.get_video_features(pixel_values_videos=pixels, interpolate_pos_encoding=True)
                return out.pooler_output.reshape(len(x), -1).float().cpu().numpy()
            out = self.model(pixel_values_videos=pixels, interpolate_pos_encoding=True)
            return out.last_hidden_state.mean(dim=1).float().cpu().numpy()

    def _text(self, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=torch.from_numpy(ids).long().to(self.device),
                                               attention_mask=torch.from_numpy(valid).long().to(self.device))
        return out.pooler_output.reshape(len(ids), -1).float().cpu().numpy()


def make_encoder(cfg: VideoPrismConfig) -> TorchVideoPrismEncoder:
    source = locate(cfg.model)
    if source.is_npz:
        params = checkpoint.read_official(source.path)
        state, config = checkpoint.official_to_hf(params)
        return TorchVideoPrismEncoder(cfg, source, checkpoint.arch_from_official(params), hf_model(state, config))
    state, config = checkpoint.read_hf(source.path)
    return TorchVideoPrismEncoder(cfg, source, checkpoint.arch_from_hf_config(config), hf_model(state, config))
