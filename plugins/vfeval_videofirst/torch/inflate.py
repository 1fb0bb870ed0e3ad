"""CLIP in the torch backend: loading an HF ``CLIPModel``, inflating it into the video tower, its text tower.

The inflation itself works on arrays and is shared with the JAX backend (``vfeval_videofirst/inflate.py``):
CLIP's weights become checkpoint tensors, which are copied into the video tower here. With one class token
per slice and the video embedding taken as their mean (see ``model.py``), a static video through the
freshly inflated encoder gives CLIP's image embedding of its frame; a test checks it in both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vfeval_videofirst.inflate import (  # noqa: F401  (re-exported: the torch backend's callers use them here)
    _looks_local,
    check_compatible,
    inflate_kernel,
    load_clip_config,
    load_tokenizer,
    unreachable,
)
from vfeval_videofirst.inflate import (
    inflate_video as inflate_video_arrays,
)
from vfeval_videofirst.tokenizers import clip_tokenize
from vfeval_videofirst.torch.model import VideoTransformer


def load_clip(name_or_path: str) -> Any:
    """``CLIPModel.from_pretrained(name_or_path)``, in eval mode, or one clear UsageError."""
    from transformers import CLIPModel

    path = Path(name_or_path).expanduser()
    if _looks_local(name_or_path) and not path.is_dir():
        raise unreachable(name_or_path, FileNotFoundError(name_or_path))
    try:
        return CLIPModel.from_pretrained(str(path) if _looks_local(name_or_path) else name_or_path).eval()
    except (OSError, ValueError) as exc:
        raise unreachable(name_or_path, exc) from exc


@torch.no_grad()
def inflate_video(video: VideoTransformer, clip: Any, how: str) -> None:
    """Copy CLIP's vision tower into ``video`` (built with matching sizes), in place, through the shared
    array inflation (``vfeval_videofirst.inflate.inflate_video``)."""
    arrays = {k: v.detach().cpu().float().numpy() for k, v in clip.state_dict().items()}
    inflated = inflate_video_arrays(arrays, video.embed.proj.kernel_size[0], how, video.pos_time.shape[0])
    own = video.state_dict()
    video.load_state_dict(
        {k: torch.from_numpy(inflated["video." + k]).to(own[k].device) if "video." + k in inflated else v
         for k, v in own.items()},
        strict=True,
    )


class ClipTextTower(nn.Module):
    """CLIP's text transformer and projection, with its tokenizer: texts → ``[B, projection_dim]``."""

    def __init__(self, text_model: nn.Module, projection: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.text_model = text_model
        self.projection = projection
        self.tokenizer = tokenizer
        self.length = text_model.config.max_position_embeddings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = clip_tokenize(self.tokenizer, texts, self.length)
        return {k: torch.from_numpy(v) for k, v in tokens.items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: ``[B, L]`` → ``[B, E]`` (CLIP pools the end-of-text token)."""
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.projection(out.pooler_output)


def clip_text_tower(clip_config: Any, tokenizer: Any, clip: Any = None) -> ClipTextTower:
    """CLIP's text tower: taken from ``clip`` when given, else built empty from the config (a checkpoint fills it)."""
    if clip is not None:
        return ClipTextTower(clip.text_model, clip.text_projection, tokenizer)
    from transformers import CLIPTextModel

    text = clip_config.text_config
    return ClipTextTower(
        CLIPTextModel(text), nn.Linear(text.hidden_size, clip_config.projection_dim, bias=False), tokenizer
    )
