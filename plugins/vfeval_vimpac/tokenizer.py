"""Discrete visual tokenizers of VIMPAC: the file both backends read, and the one-time dVAE conversion.

A tokenizer turns a frame of ``S x S`` pixels into ``S/8 x S/8`` codes (8x spatial downsampling). Two kinds:

- ``vqvae``: the small VQ-VAE the project trains itself (``vfeval train configs/train/vqvae_synthetic.yaml``,
  ``torch/vqvae.py``; van den Oord et al. 2017). Encoder: three 4x4 convolutions of stride 2 with ReLUs,
  then a 1x1 convolution to the code size; each position takes its nearest codebook vector. Tensors
  ``enc.<i>.weight [out, in, k, k]``, ``enc.<i>.bias``, ``codebook [K, d]`` (the decoder's ``dec.*`` are
  kept in the file but not needed to tokenize). Pixels enter as ``x - 0.5`` for ``x`` in [0, 1].
- ``dvae``: the DALL-E discrete VAE's encoder (Ramesh et al. 2021; 8192 codes), VIMPAC's tokenizer.
  Tensors under the official names (``blocks.input.w``, ``blocks.group_<g>.block_<j>.{id_path,res_path.conv_<n>}.{w,b}``,
  ``blocks.output.conv.{w,b}``); pixels enter as ``0.8 x + 0.1`` (DALL-E's ``map_pixels``) and each
  position takes the code of its largest logit.

The file is a ``.safetensors`` of ``float32`` tensors with metadata ``format`` = ``vfeval-tokenizer``,
``kind`` and ``config`` (JSON). Both backends (``torch/tokenizer.py``, ``jax/tokenizer.py``) compute the
same codes from the same arrays; loading never unpickles anything.

The official dVAE weights are a pickled PyTorch module (``encoder.pkl``). ``vfeval convert dvae
--from-pickle encoder.pkl --out dvae.safetensors`` is the one place that reads a pickle, and only when
asked: a restricted unpickler that rebuilds tensors and records the modules' attributes without
importing (or running) the ``dall_e`` package.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError

FORMAT = "vfeval-tokenizer"
KINDS = ("vqvae", "dvae")
VQVAE_LAYERS = 4
"""Convolutions of the VQ-VAE encoder: three of stride 2 (8x), then a 1x1 to the code size."""
DVAE_EPS = 0.1
"""DALL-E's ``logit_laplace_eps``: pixels are squeezed into [0.1, 0.9]."""


def tokenizer_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(
            f"vimpac: tokenizer not found: {path}; train one with `vfeval train configs/train/vqvae_synthetic.yaml` "
            "or convert the DALL-E dVAE with `vfeval convert dvae`"
        )
    return path


def save(arrays: dict[str, np.ndarray], path: str | Path, kind: str, config: dict[str, Any]) -> None:
    """Write a tokenizer file (tensors in name order, so the same arrays give the same bytes)."""
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in sorted(arrays)}
    metadata = {"format": FORMAT, "kind": kind, "config": json.dumps(config, sort_keys=True)}
    save_file(tensors, str(path), metadata=metadata)


def load(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """``(kind, arrays, config)`` of a tokenizer file, checked to hold what its kind needs."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = tokenizer_path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        arrays = load_file(str(path))
    except Exception as exc:
        raise UsageError(f"vimpac: {path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from exc
    kind = metadata.get("kind")
    if metadata.get("format") != FORMAT or kind not in KINDS:
        raise UsageError(
            f"vimpac: {path} is not a tokenizer file (no '{FORMAT}' metadata); use the vqvae trainer's "
            "final.safetensors or the output of `vfeval convert dvae`"
        )
    arrays = {k: v for k, v in arrays.items() if not k.startswith("dec.")}
    check(kind, arrays, path)
    return kind, arrays, json.loads(metadata.get("config", "{}"))


def vocab_size(kind: str, arrays: dict[str, np.ndarray]) -> int:
    """Codes the tokenizer emits."""
    return int(arrays["codebook"].shape[0] if kind == "vqvae" else arrays["blocks.output.conv.w"].shape[0])


def check(kind: str, arrays: dict[str, Any], path: Any) -> None:
    """Refuse, naming ``path``, a file that lacks a tensor its kind needs."""
    if kind == "vqvae":
        need = ["codebook", *(f"enc.{i}.{p}" for i in range(VQVAE_LAYERS) for p in ("weight", "bias"))]
    else:
        need = ["blocks.input.w", "blocks.input.b", "blocks.output.conv.w", "blocks.output.conv.b"]
        if not dvae_groups(arrays):
            need.append("blocks.group_1.block_1.res_path.conv_1.w")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise UsageError(f"vimpac: tokenizer {path} ({kind}) lacks {', '.join(missing[:3])}")


_BLOCK = re.compile(r"^blocks\.group_(\d+)\.block_(\d+)\.")


def dvae_groups(arrays: dict[str, Any]) -> list[list[str]]:
    """The dVAE's residual blocks, as name prefixes grouped by resolution (``blocks.group_<g>.block_<j>.``)."""
    found: dict[int, set[int]] = {}
    for name in arrays:
        if m := _BLOCK.match(name):
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return [[f"blocks.group_{g}.block_{j}." for j in sorted(found[g])] for g in sorted(found)]


def dvae_post_gain(arrays: dict[str, Any]) -> float:
    """``1 / n_layers^2``, ``n_layers`` the number of residual blocks (DALL-E's ``EncoderBlock``)."""
    return 1.0 / sum(len(g) for g in dvae_groups(arrays)) ** 2


# ---------------------------------------------------------------------------------------------------
# The one-time conversion of the official pickle


class _Record:
    """Stands in for every module class of the pickle: keeps the attributes, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict, slots)
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        self.__dict__.update(state)


_TENSOR_MODULES = ("torch._utils", "torch", "torch.storage", "torch.nn.parameter", "collections", "torch._tensor")


_SAFE_BUILTINS = ("set", "frozenset", "dict", "list", "tuple", "object", "slice", "int", "float", "bool", "str")


class _Unpickler(pickle.Unpickler):
    """Rebuilds tensors; every other class becomes a ``_Record``; functions outside torch's tensor
    rebuilding are refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(("dall_e", "torch.nn.modules")):
            return _Record
        if module in _TENSOR_MODULES and (name.startswith("_rebuild") or name.endswith("Storage") or name in (
            "OrderedDict", "Parameter", "device", "Size", "float32", "float16", "UntypedStorage"
        )):
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) == ("copyreg", "_reconstructor"):  # object.__new__ of a class allowed above
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


class _PickleModule:
    """What ``torch.load`` needs of a ``pickle_module``."""

    Unpickler = _Unpickler
    load = staticmethod(pickle.load)
    __name__ = "vfeval_restricted_pickle"


def _walk(record: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    state = getattr(record, "__dict__", {})
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach().float().cpu().numpy()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out)


def convert_dvae(pickle_path: str | Path, out: str | Path, overwrite: bool = False) -> str:
    """Read the official dVAE ``encoder.pkl`` (a pickled ``dall_e.encoder.Encoder``) with a restricted
    unpickler and write its weights as a ``dvae`` tokenizer file. Returns a line saying what was written."""
    import torch

    src, dst = Path(pickle_path).expanduser(), Path(out).expanduser()
    if not src.is_file():
        raise UsageError(f"convert: --from-pickle {str(src)!r} not found")
    if dst.suffix != ".safetensors":
        raise UsageError(f"convert: --out {str(dst)!r} must end in .safetensors")
    if dst.exists() and not overwrite:
        raise UsageError(f"convert: {str(dst)!r} exists; remove it or pass --overwrite")
    try:
        root = torch.load(str(src), map_location="cpu", pickle_module=_PickleModule, weights_only=False)
    except Exception as exc:
        raise UsageError(f"convert: {src} is not a dVAE encoder pickle ({str(exc).splitlines()[0]})") from exc
    arrays: dict[str, np.ndarray] = {}
    _walk(root, "", arrays)
    if isinstance(root, dict):  # a bare state dict
        arrays = {k: v.detach().float().cpu().numpy() for k, v in root.items()}
    check("dvae", arrays, src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    vocab = vocab_size("dvae", arrays)
    save(arrays, dst, "dvae", {"codes": vocab, "source": src.name})
    return f"dvae tokenizer {dst} ({len(arrays)} tensors, {vocab} codes)"
