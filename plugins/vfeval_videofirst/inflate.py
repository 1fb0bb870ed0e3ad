"""Inflating an image-text CLIP model into the video-first dual encoder (LongViViT's initialisation), on arrays.

Backend-neutral: CLIP's weights are read as numpy arrays (Hugging Face's own tensor names) and become the
checkpoint tensors of ``checkpoint.py``; the torch and the JAX backend load those as they load any
checkpoint. What is copied:
- the patch embedding becomes the tubelet kernel. ``central`` puts the 2D kernel in the middle temporal
  slice and zeros elsewhere (ViViT's central-frame initialisation); ``average`` puts ``kernel / t`` in every
  slice (I3D's inflation). On a static video both give each tubelet exactly the 2D patch embedding.
- CLIP's class embedding becomes every slice's class token, its first position embedding the class
  position, the others the spatial table; the temporal table stays zero.
- pre-norm, blocks (q, k and v fused into one projection), post-norm and visual projection as they are.
- the text model, its projection and the learned logit scale, unchanged.

With one class token per slice and the video embedding taken as their mean (see ``torch/model.py``), a
static video through the freshly inflated encoder gives CLIP's image embedding of its frame; a test checks
it in both backends.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file

SUPPORTED_ACTIVATIONS = ("gelu", "quick_gelu")
# CLIP's pixel statistics (RGB, on [0, 1]); both backends normalise with them for every init, so that
# checkpoints stay interchangeable.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def unreachable(name_or_path: str, exc: Exception) -> UsageError:
    where = "no such directory" if _looks_local(name_or_path) else "it is not cached and the hub cannot be reached"
    return UsageError(
        f"videofirst: cannot fetch CLIP weights {name_or_path!r} ({where}: {type(exc).__name__}); "
        "set clip_model to a local directory holding a saved CLIPModel"
    )


def _source(name_or_path: str) -> str:
    return str(Path(name_or_path).expanduser()) if _looks_local(name_or_path) else name_or_path


def load_clip_config(name_or_path: str) -> Any:
    """The ``CLIPConfig`` alone (for building a model whose weights come from a checkpoint)."""
    from transformers import CLIPConfig

    try:
        return CLIPConfig.from_pretrained(_source(name_or_path))
    except (OSError, ValueError) as exc:
        raise unreachable(name_or_path, exc) from exc


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_source(name_or_path))
    except (OSError, ValueError) as exc:
        raise unreachable(name_or_path, exc) from exc


def clip_folder(name_or_path: str) -> Path:
    """The local folder of a CLIP model: the directory itself, or the hub snapshot (downloaded or cached)."""
    if _looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise unreachable(name_or_path, FileNotFoundError(name_or_path))
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:
        raise unreachable(name_or_path, exc) from exc


def read_clip_arrays(name_or_path: str) -> dict[str, np.ndarray]:
    """Every weight of a saved ``CLIPModel`` as float32 numpy, under Hugging Face's names, from its safetensors."""
    from safetensors.numpy import load_file

    folder = clip_folder(name_or_path)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UsageError(
            f"videofirst: {folder} holds no .safetensors weights of CLIP; save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    arrays: dict[str, np.ndarray] = {}
    for f in files:
        arrays.update({k: v.astype(np.float32) for k, v in load_file(str(f)).items()})
    return arrays


def check_compatible(
    clip_config: Any, arch: dict[str, int], tubelet: tuple[int, int, int], image_size: int, embed_dim: int
) -> None:
    """Refuse an encoder config that does not match the CLIP model it is inflated from."""
    v = clip_config.vision_config
    theirs = dict(width=v.hidden_size, depth=v.num_hidden_layers, heads=v.num_attention_heads, mlp=v.intermediate_size)
    for key, value in theirs.items():
        if arch[key] != value:
            raise UsageError(
                f"videofirst: the variant's {key} is {arch[key]} but the CLIP vision tower's is {value}; "
                "choose the matching variant"
            )
    if tuple(tubelet[1:]) != (v.patch_size, v.patch_size):
        raise UsageError(f"videofirst: tubelet {tuple(tubelet)} must have CLIP's patch size {v.patch_size} as h and w")
    if image_size != v.image_size:
        raise UsageError(f"videofirst: image_size is {image_size} but the CLIP model's is {v.image_size}")
    if embed_dim != clip_config.projection_dim:
        raise UsageError(
            f"videofirst: embed_dim is {embed_dim} but the CLIP model's projection_dim is {clip_config.projection_dim}"
        )
    if v.hidden_act not in SUPPORTED_ACTIVATIONS:
        raise UsageError(
            f"videofirst: CLIP activation {v.hidden_act!r} is not supported ({', '.join(SUPPORTED_ACTIVATIONS)})"
        )
    if abs(v.layer_norm_eps - 1e-5) > 1e-12:
        raise UsageError(f"videofirst: CLIP layer_norm_eps {v.layer_norm_eps} differs from the 1e-5 the model uses")


def inflate_kernel(kernel: np.ndarray, t: int, how: str) -> np.ndarray:
    """A 2D patch kernel ``[D, 3, p, p]`` → a tubelet kernel ``[D, 3, t, p, p]``."""
    if how == "average":
        return np.repeat(kernel[:, :, None], t, axis=2) / t
    out = np.zeros((*kernel.shape[:2], t, *kernel.shape[2:]), dtype=kernel.dtype)
    out[:, :, t // 2] = kernel
    return out


def inflate_video(clip: dict[str, np.ndarray], t: int, how: str, num_pos_time: int) -> dict[str, np.ndarray]:
    """CLIP's vision tower (``clip``: Hugging Face names) → the ``video.*`` checkpoint tensors."""
    v = "vision_model."
    pos = clip[v + "embeddings.position_embedding.weight"]
    width = pos.shape[1]
    out = {
        "video.embed.proj.weight": inflate_kernel(clip[v + "embeddings.patch_embedding.weight"], t, how),
        "video.cls": clip[v + "embeddings.class_embedding"],
        "video.pos_cls": pos[0],
        "video.pos_space": pos[1:],
        "video.pos_time": np.zeros((num_pos_time, width), np.float32),
        "video.ln_pre.weight": clip[v + "pre_layrnorm.weight"],
        "video.ln_pre.bias": clip[v + "pre_layrnorm.bias"],
        "video.ln_post.weight": clip[v + "post_layernorm.weight"],
        "video.ln_post.bias": clip[v + "post_layernorm.bias"],
        "video.head.weight": clip["visual_projection.weight"],
    }
    i = 0
    while f"{v}encoder.layers.{i}.layer_norm1.weight" in clip:
        theirs, ours = f"{v}encoder.layers.{i}.", f"video.blocks.{i}."
        for p in ("weight", "bias"):
            out[ours + "attn.qkv." + p] = np.concatenate([clip[f"{theirs}self_attn.{n}_proj.{p}"] for n in "qkv"])
            out[ours + "attn.proj." + p] = clip[f"{theirs}self_attn.out_proj.{p}"]
            for a, b in (("ln1", "layer_norm1"), ("ln2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[f"{ours}{a}.{p}"] = clip[f"{theirs}{b}.{p}"]
        i += 1
    return {k: np.asarray(a, np.float32) for k, a in out.items()}


def clip_text_arrays(clip: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CLIP's text tower → the ``text.*`` checkpoint tensors (``text.text_model.*`` keeps Hugging Face's names)."""
    out = {"text." + k: a for k, a in clip.items() if k.startswith("text_model.") and not k.endswith("position_ids")}
    out["text.projection.weight"] = clip["text_projection.weight"]
    return out


def inflated_arrays(
    clip: dict[str, np.ndarray], *, t: int, how: str, num_pos_time: int, video: bool, text: bool
) -> dict[str, np.ndarray]:
    """The checkpoint tensors that an inflation from CLIP sets: the video tower if ``video``, the text tower
    if ``text``, and ``logit_scale`` always."""
    out: dict[str, np.ndarray] = {"logit_scale": np.asarray(clip["logit_scale"], np.float32).reshape(())}
    if video:
        out.update(inflate_video(clip, t, how, num_pos_time))
    if text:
        out.update(clip_text_arrays(clip))
    return out


# ---------------------------------------------------------------------------------------------------
# What both backends' ``build_model`` check and record before they build their modules


def prepare(cfg: Any) -> tuple[dict[str, Any], bool, Any]:
    """Validate ``cfg`` (a ``VideoFirstConfig``) for building: CLIP's config where CLIP is used and fits,
    and a checkpoint saved with the same architecture. Returns ``(architecture, uses_clip, clip_config)``."""
    from vfeval_videofirst import checkpoint
    from vfeval_videofirst.config import architecture, validate

    validate(cfg)
    arch = architecture(cfg)
    uses_clip = cfg.init == "clip" or cfg.text == "clip"
    clip_config = load_clip_config(cfg.clip_model) if uses_clip else None
    if cfg.init == "clip":
        check_compatible(clip_config, arch, cfg.tubelet, cfg.image_size, cfg.embed_dim)
    elif uses_clip and cfg.embed_dim != clip_config.projection_dim:
        raise UsageError(
            f"videofirst: embed_dim is {cfg.embed_dim} but CLIP's projection_dim is {clip_config.projection_dim}"
        )
    if cfg.checkpoint:
        checkpoint.check_fits(cfg, checkpoint.read_config(cfg.checkpoint))
    return arch, uses_clip, clip_config


def clip_source_id(name_or_path: str, clip_config: Any) -> str:
    """What names CLIP's weights: a hash of a local directory's weight files, or the hub name and commit."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")):
            sha256_file(f, h)
        return f"sha256:{h.hexdigest()}"
    return f"{name_or_path}@{getattr(clip_config, '_commit_hash', None) or 'unknown'}"


def init_id(cfg: Any, clip_config: Any, **extra: Any) -> str:
    """The weights id of a model built without a checkpoint: everything that decides its initial weights."""
    uses_clip = cfg.init == "clip" or cfg.text == "clip"
    source = {
        "init": cfg.init,
        "inflation": cfg.inflation if cfg.init == "clip" else None,
        "text": cfg.text,
        "seed": cfg.seed,
        "clip": clip_source_id(cfg.clip_model, clip_config) if uses_clip else None,
        **extra,
    }
    return "init:" + hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
