"""Inflating an image-text CLIP model into the video-first dual encoder (LongViViT's initialisation).

What is copied from a Hugging Face ``CLIPModel``:
- the patch embedding becomes the tubelet kernel. ``central`` puts the 2D kernel in the middle temporal
  slice and zeros elsewhere (ViViT's central-frame initialisation); ``average`` puts ``kernel / t`` in every
  slice (I3D's inflation). On a static video both give each tubelet exactly the 2D patch embedding.
- CLIP's class embedding becomes every slice's class token, its first position embedding the class
  position, the others the spatial table; the temporal table stays zero.
- pre-norm, blocks (q, k and v fused into one projection), post-norm and visual projection as they are.
- the text model, its projection, the tokenizer and the learned logit scale, unchanged.

With one class token per slice and the video embedding taken as their mean (see ``model.py``), a static
video through the freshly inflated encoder gives CLIP's image embedding of its frame; a test checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vfeval.errors import UsageError
from vfeval_videofirst.torch.model import ACTIVATIONS, VideoTransformer


def _looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def _unreachable(name_or_path: str, exc: Exception) -> UsageError:
    where = (
        "no such directory"
        if _looks_local(name_or_path)
        else "it is not cached and the hub cannot be reached"
    )
    return UsageError(
        f"videofirst: cannot fetch CLIP weights {name_or_path!r} ({where}: {type(exc).__name__}); "
        "set clip_model to a local directory holding a saved CLIPModel"
    )


def load_clip(name_or_path: str) -> Any:
    """``CLIPModel.from_pretrained(name_or_path)``, in eval mode, or one clear UsageError."""
    from transformers import CLIPModel

    path = Path(name_or_path).expanduser()
    if _looks_local(name_or_path) and not path.is_dir():
        raise _unreachable(name_or_path, FileNotFoundError(name_or_path))
    try:
        return CLIPModel.from_pretrained(str(path) if _looks_local(name_or_path) else name_or_path).eval()
    except (OSError, ValueError) as exc:
        raise _unreachable(name_or_path, exc) from exc


def load_clip_config(name_or_path: str) -> Any:
    """The ``CLIPConfig`` alone (for building a model whose weights come from a checkpoint)."""
    from transformers import CLIPConfig

    try:
        return CLIPConfig.from_pretrained(
            str(Path(name_or_path).expanduser()) if _looks_local(name_or_path) else name_or_path
        )
    except (OSError, ValueError) as exc:
        raise _unreachable(name_or_path, exc) from exc


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(Path(name_or_path).expanduser()) if _looks_local(name_or_path) else name_or_path
        )
    except (OSError, ValueError) as exc:
        raise _unreachable(name_or_path, exc) from exc


def check_compatible(
    clip_config: Any, arch: dict[str, int], tubelet: tuple[int, int, int], image_size: int, embed_dim: int
) -> None:
    """Refuse an encoder config that does not match the CLIP model it is inflated from."""
    v = clip_config.vision_config
    theirs = dict(
        width=v.hidden_size, depth=v.num_hidden_layers, heads=v.num_attention_heads, mlp=v.intermediate_size
    )
    for key, value in theirs.items():
        if arch[key] != value:
            raise UsageError(
                f"videofirst: the variant's {key} is {arch[key]} but the CLIP vision tower's is {value}; "
                "choose the matching variant"
            )
    if tuple(tubelet[1:]) != (v.patch_size, v.patch_size):
        raise UsageError(
            f"videofirst: tubelet {tuple(tubelet)} must have CLIP's patch size {v.patch_size} as h and w"
        )
    if image_size != v.image_size:
        raise UsageError(f"videofirst: image_size is {image_size} but the CLIP model's is {v.image_size}")
    if embed_dim != clip_config.projection_dim:
        raise UsageError(
            f"videofirst: embed_dim is {embed_dim} but the CLIP model's projection_dim is "
            f"{clip_config.projection_dim}"
        )
    if v.hidden_act not in ACTIVATIONS:
        raise UsageError(
            f"videofirst: CLIP activation {v.hidden_act!r} is not supported ({', '.join(ACTIVATIONS)})"
        )
    if abs(v.layer_norm_eps - 1e-5) > 1e-12:
        raise UsageError(
            f"videofirst: CLIP layer_norm_eps {v.layer_norm_eps} differs from the 1e-5 the model uses"
        )


def inflate_kernel(kernel: torch.Tensor, t: int, how: str) -> torch.Tensor:
    """A 2D patch kernel ``[D, 3, p, p]`` → a tubelet kernel ``[D, 3, t, p, p]``."""
    if how == "average":
        return kernel[:, :, None].repeat(1, 1, t, 1, 1) / t
    out = torch.zeros(*kernel.shape[:2], t, *kernel.shape[2:], dtype=kernel.dtype)
    out[:, :, t // 2] = kernel
    return out


@torch.no_grad()
def inflate_video(video: VideoTransformer, clip: Any, how: str) -> None:
    """Copy CLIP's vision tower into ``video`` (built with matching sizes), in place."""
    vision = clip.vision_model
    emb = vision.embeddings
    t = video.embed.proj.kernel_size[0]
    video.embed.proj.weight.copy_(inflate_kernel(emb.patch_embedding.weight, t, how))
    video.cls.copy_(emb.class_embedding)
    video.pos_cls.copy_(emb.position_embedding.weight[0])
    video.pos_space.copy_(emb.position_embedding.weight[1:])
    video.pos_time.zero_()
    video.ln_pre.load_state_dict(vision.pre_layrnorm.state_dict())
    for ours, theirs in zip(video.blocks, vision.encoder.layers, strict=True):
        a = theirs.self_attn
        ours.attn.qkv.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ours.attn.qkv.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ours.attn.proj.load_state_dict(a.out_proj.state_dict())
        ours.ln1.load_state_dict(theirs.layer_norm1.state_dict())
        ours.ln2.load_state_dict(theirs.layer_norm2.state_dict())
        ours.mlp.fc1.load_state_dict(theirs.mlp.fc1.state_dict())
        ours.mlp.fc2.load_state_dict(theirs.mlp.fc2.state_dict())
    video.ln_post.load_state_dict(vision.post_layernorm.state_dict())
    video.head.load_state_dict(clip.visual_projection.state_dict())


class ClipTextTower(nn.Module):
    """CLIP's text transformer and projection, with its tokenizer: texts → ``[B, projection_dim]``."""

    def __init__(self, text_model: nn.Module, projection: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.text_model = text_model
        self.projection = projection
        self.tokenizer = tokenizer
        self.length = text_model.config.max_position_embeddings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

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
