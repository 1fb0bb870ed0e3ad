"""Loading Hugging Face models for the baselines: one place for paths, errors, weights ids, device and dtype.

A model is named by a local directory (anything starting with ``.``, ``/`` or ``~``, or an existing path) or
a hub name. What cannot be loaded is one UsageError naming the key to fix; nothing is downloaded in its
place and no random weights are ever substituted.

Weights ids (part of every pipeline fingerprint): a local directory is identified by the sha256 of its
top-level weight, config and tokenizer files (names and bytes; reading a large model takes seconds per GB,
once per run), a hub model by its name and the commit it resolved to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file

HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken")


def is_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()


def source(name_or_path: str) -> str:
    """What to pass to ``from_pretrained``: the expanded local path, or the hub name as given."""
    return str(Path(name_or_path).expanduser()) if is_local(name_or_path) else name_or_path


def load(loader: Callable[[str], Any], name_or_path: str, key: str, what: str = "model") -> Any:
    """``loader(source(name_or_path))``, or one UsageError naming the config ``key`` to fix."""
    if not name_or_path:
        raise UsageError(f"config: missing value for {key!r}; give a local directory or a hub name")
    if is_local(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        raise UsageError(f"config: {key!r}: no such directory {name_or_path!r}; give a directory holding a saved "
                         f"{what} (save_pretrained) or a hub name")
    try:
        return loader(source(name_or_path))
    except (OSError, ValueError, KeyError) as exc:
        where = ("the directory does not hold one" if is_local(name_or_path)
                 else "it is not in the local cache and the hub cannot be reached")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"config: {key!r}: cannot load {what} {name_or_path!r} ({where}: {first[:200]})") from exc


def weights_id(name_or_path: str, config: Any = None) -> str:
    """``sha256:...`` of a local directory's files, or ``name@commit`` for a hub model."""
    if is_local(name_or_path):
        h = hashlib.sha256()
        root = Path(name_or_path).expanduser()
        for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in HASHED_SUFFIXES):
            h.update(f.name.encode() + b"\0")
            sha256_file(f, h)
        return f"sha256:{h.hexdigest()}"
    return f"{name_or_path}@{getattr(config, '_commit_hash', None) or 'unknown'}"


def device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"config: bad device {name!r}; use auto, cpu, cuda or cuda:N") from exc


def dtype(name: str, dev: Any) -> Any:
    """``auto``: bfloat16 on a GPU, float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise UsageError(f"config: bad dtype {name!r}; use auto, {', '.join(table)}")
    return table[name]
