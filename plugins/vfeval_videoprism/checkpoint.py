"""VideoPrism checkpoints in their two layouts, and the map between them (numpy only: no torch, no jax).

- **official** (``google-deepmind/videoprism``, Flax): one ``.npz`` with flat ``/``-joined keys; the layers of a
  transformer stack share one array with the layer index as its leading axis, e.g.
  ``params/spatial_encoder/transformers_stack/x_layers/self_attention/query/w`` of shape ``(L, D, N, H)``.
  Video-text (LvT) checkpoints hold their vision tower under ``params/vision_encoder/``.
- **hf** (``transformers``' VideoPrism port): a folder with ``config.json`` and ``model.safetensors``
  (``VideoPrismClipModel`` for LvT, ``VideoPrismVisionModel`` for video-only checkpoints), one tensor per layer,
  linear weights as ``[out, in]``.

Every array is moved, reshaped or transposed, never recomputed, so ``official -> hf -> official`` returns the
same bytes. The one thing the official layout does not store is the text tower's sinusoidal position table:
it is computed (``text_positions``, the official formula) and written into the hf layout, where the port keeps
it as a buffer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vfeval.errors import UsageError

PATCH = 18
"""Spatial patch size of every released VideoPrism model (tubelets of 1 x 18 x 18)."""
SOFTCAP = 50.0
"""Attention-logit soft cap of the released models' transformers (not the pooler)."""
TEXT_LENGTH = 64
"""Text tokens the released LvT models read (padded or truncated to this)."""
POOLER_SCALE = 1.442695041
"""1 / softplus(0): with a zero per-dimension scale, the pooler's query is scaled by exactly 1/sqrt(H)."""


@dataclass(frozen=True)
class TextArch:
    vocab: int
    hidden: int
    mlp: int
    heads: int
    layers: int
    max_length: int = TEXT_LENGTH
    softcap: float | None = SOFTCAP


@dataclass(frozen=True)
class Arch:
    """What a checkpoint's shapes say about its model (plus the two constants no array records)."""

    hidden: int
    mlp: int
    heads: int
    spatial_layers: int
    temporal_layers: int
    frames: int
    """Frames the temporal position table was trained for (16 for base, 8 for large)."""
    grid: tuple[int, int]
    """Patches per side the spatial position table was trained for (16 x 16 at 288 px)."""
    patch: int = PATCH
    aux_layers: int = 0
    softcap: float | None = SOFTCAP
    text: TextArch | None = None
    pooler_heads: int = 0
    pooler_head_dim: int = 0

    @property
    def lvt(self) -> bool:
        return self.text is not None

    @property
    def image_size(self) -> int:
        return self.grid[0] * self.patch

    def to_dict(self) -> dict:
        return asdict(self)


# -- the key map -------------------------------------------------------------------------------------------

BLOCK = {
    # official key under .../x_layers/ -> (hf key under <stack>.<i>., how the array changes)
    "layer_norm/scale": ("layernorm_before.weight", "same"),
    "layer_norm/bias": ("layernorm_before.bias", "same"),
    "self_attention/query/w": ("attention.q_proj.weight", "heads_in"),
    "self_attention/key/w": ("attention.k_proj.weight", "heads_in"),
    "self_attention/value/w": ("attention.v_proj.weight", "heads_in"),
    "self_attention/post/w": ("attention.o_proj.weight", "heads_out"),
    "self_attention/query/b": ("attention.q_proj.bias", "heads_bias"),
    "self_attention/key/b": ("attention.k_proj.bias", "heads_bias"),
    "self_attention/value/b": ("attention.v_proj.bias", "heads_bias"),
    "self_attention/post/b": ("attention.o_proj.bias", "same"),
    "ff_layer/layer_norm/scale": ("layernorm_after.weight", "same"),
    "ff_layer/layer_norm/bias": ("layernorm_after.bias", "same"),
    "ff_layer/ffn_layer1/linear/kernel": ("mlp.fc1.weight", "transpose"),
    "ff_layer/ffn_layer1/linear/bias": ("mlp.fc1.bias", "same"),
    "ff_layer/ffn_layer2/linear/kernel": ("mlp.fc2.weight", "transpose"),
    "ff_layer/ffn_layer2/linear/bias": ("mlp.fc2.bias", "same"),
}

POOLER = {
    "pooling_attention/query/w": ("head.q_proj.weight", "heads_in"),
    "pooling_attention/key/w": ("head.k_proj.weight", "heads_in"),
    "pooling_attention/value/w": ("head.v_proj.weight", "heads_in"),
    "pooling_attention/post/w": ("head.o_proj.weight", "heads_out"),
    "pooling_attention/query/b": ("head.q_proj.bias", "heads_bias"),
    "pooling_attention/key/b": ("head.k_proj.bias", "heads_bias"),
    "pooling_attention/value/b": ("head.v_proj.bias", "heads_bias"),
    "pooling_attention/post/b": ("head.o_proj.bias", "same"),
    "pooling_attention/per_dim_scale/per_dim_scale": ("head.per_dim_scale", "same"),
    "pooling_attention_layer_norm/scale": ("head_layernorm.weight", "same"),
    "pooling_attention_layer_norm/bias": ("head_layernorm.bias", "same"),
    "pooling_attention_query": ("head.pooling_attention_query", "query"),
}


def _prefixes(lvt: bool) -> tuple[str, str]:
    """(official prefix, hf prefix) of the vision tower."""
    return ("params/vision_encoder/", "video_model.vision_model.") if lvt else ("params/", "")


def _stacks(lvt: bool) -> list[tuple[str, str]]:
    """(official prefix of a stack's x_layers, hf prefix of its layer list) for each transformer stack."""
    ov, hv = _prefixes(lvt)
    out = [(f"{ov}spatial_encoder/transformers_stack/x_layers/", f"{hv}spatial_layers."),
           (f"{ov}temporal_encoder/transformers_stack/x_layers/", f"{hv}temporal_layers.")]
    if lvt:
        out += [("params/auxiliary_encoder/transformers_stack/x_layers/", "video_model.auxiliary_layers."),
                ("params/text_encoder/unimodal_transformer/x_layers/", "text_model.layers.")]
    return out


def _singles(lvt: bool) -> dict[str, tuple[str, str]]:
    """Official key -> (hf key, how the array changes) for every array outside a stack."""
    ov, hv = _prefixes(lvt)
    out = {
        f"{ov}patch_projection/linear/kernel": (f"{hv}spatial_embeddings.patch_embeddings.projection.weight", "patch"),
        f"{ov}patch_projection/linear/bias": (f"{hv}spatial_embeddings.patch_embeddings.projection.bias", "same"),
        f"{ov}spatial_pos_emb/emb_var": (f"{hv}spatial_embeddings.position_embeddings", "batch1"),
        f"{ov}temporal_pos_emb/emb_var": (f"{hv}temporal_embeddings.position_embeddings", "batch1"),
        f"{ov}spatial_ln/scale": (f"{hv}layernorm1.weight", "same"),
        f"{ov}spatial_ln/bias": (f"{hv}layernorm1.bias", "same"),
        f"{ov}temporal_ln/scale": (f"{hv}layernorm2.weight", "same"),
        f"{ov}temporal_ln/bias": (f"{hv}layernorm2.bias", "same"),
    }
    if lvt:
        out.update({f"params/contrastive_vision_pooler/{k}": (f"video_model.{h}", how) for k, (h, how) in POOLER.items()})
        out.update({
            "params/text_encoder/token_emb/emb_var": ("text_model.embeddings.token_embedding.weight", "same"),
            "params/text_encoder/cls_emb": ("text_model.embeddings.cls_emb", "same"),
            "params/text_encoder/unimodal_ln/scale": ("text_model.layernorm.weight", "same"),
            "params/text_encoder/unimodal_ln/bias": ("text_model.layernorm.bias", "same"),
        })
    return out


def _to_hf(a: np.ndarray, how: str, patch: int) -> np.ndarray:
    if how == "same":
        return a
    if how == "heads_in":  # (D, N, H) -> [N*H, D]
        return a.reshape(a.shape[0], -1).T
    if how == "heads_out":  # (D, N, H) -> [D, N*H]
        return a.reshape(a.shape[0], -1)
    if how == "heads_bias":  # (N, H) -> [N*H]
        return a.reshape(-1)
    if how == "transpose":
        return a.T
    if how == "batch1":
        return a[None]
    if how == "query":  # (1, D) -> [1, 1, D]
        return a.reshape(1, 1, -1)
    if how == "patch":  # (1*p*p*3, D), rows in (t, y, x, c) order -> Conv3d [D, 3, 1, p, p]
        return a.T.reshape(a.shape[1], 1, patch, patch, 3).transpose(0, 4, 1, 2, 3)
    raise AssertionError(how)


def _to_official(a: np.ndarray, how: str, heads: tuple[int, int]) -> np.ndarray:
    n, h = heads
    if how == "same":
        return a
    if how == "heads_in":
        return a.T.reshape(a.shape[1], n, h)
    if how == "heads_out":
        return a.reshape(a.shape[0], n, h)
    if how == "heads_bias":
        return a.reshape(n, h)
    if how == "transpose":
        return a.T
    if how == "batch1":
        return a[0]
    if how == "query":
        return a.reshape(1, -1)
    if how == "patch":
        return a.transpose(0, 2, 3, 4, 1).reshape(a.shape[0], -1).T
    raise AssertionError(how)


def _contiguous(a: np.ndarray) -> np.ndarray:
    # safetensors and np.savez store C order; a transposed view is copied, its values untouched.
    return np.ascontiguousarray(a)


def official_to_hf(params: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Official ``.npz`` arrays -> (hf state dict, hf ``config.json`` dict)."""
    arch = arch_from_official(params)
    lvt = arch.lvt
    state: dict[str, np.ndarray] = {}
    used = set()
    for okey, (hkey, how) in _singles(lvt).items():
        state[hkey] = _contiguous(_to_hf(params[okey], how, arch.patch))
        used.add(okey)
    for oprefix, hprefix in _stacks(lvt):
        for suffix, (hsuffix, how) in BLOCK.items():
            stacked = params[oprefix + suffix]
            for i, layer in enumerate(stacked):
                state[f"{hprefix}{i}.{hsuffix}"] = _contiguous(_to_hf(layer, how, arch.patch))
            used.add(oprefix + suffix)
    extra = sorted(set(params) - used)
    if extra:
        raise UsageError(f"videoprism: official checkpoint has arrays this layout does not know: {extra[:3]} "
                         "(is it a VideoPrism checkpoint?)")
    if lvt:
        state["text_model.embeddings.position_embedding"] = text_positions(arch.text.max_length, arch.text.hidden)
        state["text_model.embeddings.position_ids"] = np.arange(arch.text.max_length, dtype=np.int64)[None]
    return state, hf_config(arch)


DERIVED = ("text_model.embeddings.position_embedding", "text_model.embeddings.position_ids")
"""hf buffers computed from the config rather than learned: not in the official layout."""


def hf_to_official(state: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """hf state dict and ``config.json`` dict -> official ``.npz`` arrays."""
    arch = arch_from_hf_config(config)
    lvt = arch.lvt
    text_heads = (arch.text.heads, arch.text.hidden // arch.text.heads) if lvt else (0, 0)
    vision_heads = (arch.heads, arch.hidden // arch.heads)
    params: dict[str, np.ndarray] = {}
    used = set(DERIVED)
    for okey, (hkey, how) in _singles(lvt).items():
        heads = (arch.pooler_heads, arch.pooler_head_dim) if "pooler" in okey else vision_heads
        params[okey] = _contiguous(_to_official(_get(state, hkey), how, heads))
        used.add(hkey)
    for (oprefix, hprefix), n in zip(_stacks(lvt), _stack_depths(arch)):
        heads = text_heads if oprefix.startswith("params/text_encoder") else vision_heads
        for suffix, (hsuffix, how) in BLOCK.items():
            keys = [f"{hprefix}{i}.{hsuffix}" for i in range(n)]
            params[oprefix + suffix] = np.stack([_to_official(_get(state, k), how, heads) for k in keys])
            used.update(keys)
    extra = sorted(set(state) - used)
    if extra:
        raise UsageError(f"videoprism: hf checkpoint has tensors this layout does not know: {extra[:3]}")
    return params


def _get(state: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state:
        raise UsageError(f"videoprism: hf checkpoint has no tensor {key!r} (is it a VideoPrism checkpoint?)")
    return state[key]


def _stack_depths(arch: Arch) -> list[int]:
    out = [arch.spatial_layers, arch.temporal_layers]
    if arch.lvt:
        out += [arch.aux_layers, arch.text.layers]
    return out


# -- what the shapes say ------------------------------------------------------------------------------------


def arch_from_official(params: dict[str, np.ndarray]) -> Arch:
    lvt = "params/vision_encoder/patch_projection/linear/kernel" in params
    ov, _ = _prefixes(lvt)
    need = f"{ov}patch_projection/linear/kernel"
    if need not in params:
        raise UsageError("videoprism: not an official VideoPrism checkpoint (no 'params/patch_projection' or "
                         "'params/vision_encoder/patch_projection' arrays)")
    kernel = params[need]
    patch = math.isqrt(kernel.shape[0] // 3)
    query = params[f"{ov}spatial_encoder/transformers_stack/x_layers/self_attention/query/w"]
    n_spatial, hidden, heads, _ = query.shape
    side = math.isqrt(params[f"{ov}spatial_pos_emb/emb_var"].shape[0])
    text = None
    pooler = (0, 0)
    aux = 0
    if lvt:
        tq = params["params/text_encoder/unimodal_transformer/x_layers/self_attention/query/w"]
        text = TextArch(vocab=params["params/text_encoder/token_emb/emb_var"].shape[0], hidden=tq.shape[1],
                        mlp=params["params/text_encoder/unimodal_transformer/x_layers/ff_layer/ffn_layer1/linear/"
                                   "kernel"].shape[-1], heads=tq.shape[2], layers=tq.shape[0])
        aux = params["params/auxiliary_encoder/transformers_stack/x_layers/self_attention/query/w"].shape[0]
        pooler = params["params/contrastive_vision_pooler/pooling_attention/query/w"].shape[1:]
    return Arch(
        hidden=hidden, heads=heads, patch=patch,
        mlp=params[f"{ov}spatial_encoder/transformers_stack/x_layers/ff_layer/ffn_layer1/linear/kernel"].shape[-1],
        spatial_layers=n_spatial,
        temporal_layers=params[f"{ov}temporal_encoder/transformers_stack/x_layers/self_attention/query/w"].shape[0],
        frames=params[f"{ov}temporal_pos_emb/emb_var"].shape[0], grid=(side, side),
        aux_layers=aux, text=text, pooler_heads=int(pooler[0]), pooler_head_dim=int(pooler[1]),
    )


def _vision_hf(arch: Arch) -> dict:
    return {
        "model_type": "videoprism_vision_model", "image_size": arch.image_size, "num_frames": arch.frames,
        "tubelet_size": [1, arch.patch, arch.patch], "num_channels": 3, "hidden_size": arch.hidden,
        "num_attention_heads": arch.heads, "intermediate_size": arch.mlp, "hidden_act": "gelu_python",
        "layer_norm_eps": 1e-6, "qkv_bias": True, "num_spatial_layers": arch.spatial_layers,
        "num_temporal_layers": arch.temporal_layers, "attn_logit_softcapping": arch.softcap,
        "num_auxiliary_layers": arch.aux_layers, "apply_l2norm": True,
    }


def hf_config(arch: Arch) -> dict:
    """The hf ``config.json`` of a model with this architecture."""
    if not arch.lvt:
        return {**_vision_hf(arch), "architectures": ["VideoPrismVisionModel"]}
    if arch.pooler_heads != arch.heads or arch.pooler_heads * arch.pooler_head_dim != arch.mlp:
        raise UsageError(f"videoprism: the hf port needs a pooler with {arch.heads} heads of {arch.mlp // arch.heads} "
                         f"dims; this checkpoint's has {arch.pooler_heads} of {arch.pooler_head_dim}")
    t = arch.text
    text = {"model_type": "videoprism_text_model", "vocab_size": t.vocab, "hidden_size": t.hidden,
            "intermediate_size": t.mlp, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
            "max_position_embeddings": t.max_length, "hidden_act": "relu", "layer_norm_eps": 1e-6,
            "pad_token_id": 0, "apply_l2norm": True, "qkv_bias": True, "attn_logit_softcapping": t.softcap}
    return {"model_type": "videoprism", "architectures": ["VideoPrismClipModel"],
            "vision_config": _vision_hf(arch), "text_config": text}


def arch_from_hf_config(config: dict) -> Arch:
    lvt = config.get("model_type") == "videoprism"
    if not lvt and config.get("model_type") != "videoprism_vision_model":
        raise UsageError(f"videoprism: config.json has model_type {config.get('model_type')!r}; expected "
                         "'videoprism' (VideoPrismClipModel) or 'videoprism_vision_model'")
    v = config["vision_config"] if lvt else config
    tubelet = v.get("tubelet_size", [1, PATCH, PATCH])
    if tubelet[0] != 1 or tubelet[1] != tubelet[2]:
        raise UsageError(f"videoprism: tubelet_size {tubelet} is not 1 x p x p, which VideoPrism always uses")
    size = v.get("image_size", 288)
    size = size[0] if isinstance(size, list | tuple) else size
    mlp, heads = v.get("intermediate_size", 3072), v.get("num_attention_heads", 12)
    text = None
    if lvt:
        t = config["text_config"]
        text = TextArch(vocab=t.get("vocab_size", 32000), hidden=t.get("hidden_size", 768),
                        mlp=t.get("intermediate_size", 3072), heads=t.get("num_attention_heads", 12),
                        layers=t.get("num_hidden_layers", 12), max_length=t.get("max_position_embeddings", 64),
                        softcap=t.get("attn_logit_softcapping", SOFTCAP))
    return Arch(
        hidden=v.get("hidden_size", 768), mlp=mlp, heads=heads, patch=tubelet[1],
        spatial_layers=v.get("num_spatial_layers", 12), temporal_layers=v.get("num_temporal_layers", 4),
        frames=v.get("num_frames", 16), grid=(size // tubelet[1], size // tubelet[1]),
        aux_layers=v.get("num_auxiliary_layers", 2) if lvt else 0, softcap=v.get("attn_logit_softcapping", SOFTCAP),
        text=text, pooler_heads=heads if lvt else 0, pooler_head_dim=mlp // heads if lvt else 0,
    )


def text_positions(length: int, dim: int) -> np.ndarray:
    """The official text tower's sinusoidal positions, ``float32 [length, dim]``: timescales from 1 to 10^4 in
    ``dim // 2`` geometric steps (the first step is 1, the last 10^4), sines then cosines."""
    n = dim // 2
    increment = np.float32(math.log(10_000.0) / max(n - 1, 1))
    inv = np.exp(np.arange(n, dtype=np.float32) * -increment).astype(np.float32)
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    out = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)
    return np.pad(out, [(0, 0), (0, dim % 2)])


# -- files ----------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint in the official layout, with where it came from."""

    params: dict[str, np.ndarray]
    arch: Arch
    source: str
    text_table: np.ndarray | None = field(default=None, repr=False)
    """The text position table an hf folder carries (None: the official formula's)."""


def read_official(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"videoprism: cannot read {str(path)!r} as an .npz checkpoint ({exc})") from exc


def write_official(params: dict[str, np.ndarray], path: str | Path) -> None:
    path = Path(path).expanduser()
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, **dict(sorted(params.items())))
    tmp.replace(path)


def read_hf(folder: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict, config dict) of an hf folder: ``model.safetensors`` or shards named by its index."""
    from safetensors.numpy import load_file

    folder = Path(folder).expanduser()
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UsageError(f"videoprism: {str(folder)!r} has no config.json; give a folder saved by save_pretrained "
                         "or an official .npz file")
    config = json.loads(cfg_file.read_text())
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        raise UsageError(f"videoprism: {str(folder)!r} has no model.safetensors; save the model with "
                         "save_pretrained(safe_serialization=True) or give an official .npz file")
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state, config


def write_hf(state: dict[str, np.ndarray], config: dict, folder: str | Path) -> None:
    from safetensors.numpy import save_file

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(state.items())), str(folder / "model.safetensors.partial"), metadata={"format": "pt"})
    (folder / "model.safetensors.partial").replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load(path: str | Path) -> Checkpoint:
    """An official ``.npz`` or an hf folder, as official-layout arrays (what the JAX model reads)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        params = read_official(p)
        return Checkpoint(params, arch_from_official(params), str(p))
    if p.is_dir():
        state, config = read_hf(p)
        table = state.get("text_model.embeddings.position_embedding")
        return Checkpoint(hf_to_official(state, config), arch_from_hf_config(config), str(p), table)
    raise UsageError(f"videoprism: {str(path)!r} is neither an .npz file nor a folder")
