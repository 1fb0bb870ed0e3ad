"""What both backends share: where a model's files are, its tokenizer, and how frames become its input.

Nothing here imports torch or jax; the tokenizer comes from ``transformers``' tokenizer classes (its fast
SentencePiece-unigram tokenizer), which need neither.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval_videoprism.checkpoint import TEXT_LENGTH
from vfeval_videoprism.config import VARIANTS, VideoPrismConfig

TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
HASHED = (".npz", ".safetensors", ".json", ".model")


@dataclass(frozen=True)
class Source:
    """Where a model's weights are: ``path`` is an official ``.npz`` file or an hf folder."""

    name: str
    path: Path

    @property
    def is_npz(self) -> bool:
        return self.path.suffix == ".npz"

    @property
    def folder(self) -> Path:
        return self.path.parent if self.is_npz else self.path


def _is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".npz") or Path(name).expanduser().exists()


def fetch_hint(name: str) -> str:
    return (f"fetch it beforehand with `hf download {name}` (or `huggingface-cli download {name}`) on a machine "
            "with network access, or give a local folder or an official .npz file")


def locate(name: str, key: str = "pipeline.encoder.model") -> Source:
    """The files of ``name`` (a local ``.npz``, a local hf folder, or a hub name in the local HF cache).

    Nothing is downloaded: a hub model that is not cached is a UsageError saying how to fetch it."""
    if not name:
        raise UsageError(f"config: missing value for {key!r}; give a hub name, a folder or an official .npz file")
    if _is_local(name):
        path = Path(name).expanduser()
        if path.is_file() and path.suffix == ".npz":
            return Source(name, path)
        if path.is_dir() and (path / "config.json").is_file():
            return Source(name, path)
        raise UsageError(f"config: {key!r}: {name!r} is neither an official .npz file nor a folder with "
                         "config.json (saved by save_pretrained)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UsageError(f"config: {key!r}: model {name!r} is not available locally; {fetch_hint(name)}") from exc
    if (folder / "config.json").is_file() and any(folder.glob("model*.safetensors*")):
        return Source(name, folder)
    variant = VARIANTS.get(name.rsplit("/", 1)[-1])
    npz = [folder / variant.npz] if variant else sorted(folder.glob("*.npz"))
    if npz and npz[0].is_file():
        return Source(name, npz[0])
    raise UsageError(f"config: {key!r}: the local copy of {name!r} has neither model.safetensors nor an official "
                     f".npz; {fetch_hint(name)}")


def weights_id(source: Source) -> str:
    """``sha256:`` of the weight file(s) and config: the same bytes give the same id, wherever they lie."""
    h = hashlib.sha256()
    files = [source.path] if source.is_npz else sorted(
        p for p in source.path.iterdir() if p.is_file() and p.suffix in HASHED and "tokenizer" not in p.name)
    for f in files:
        h.update(f.name.encode() + b"\0")
        sha256_file(f, h)
    return f"sha256:{h.hexdigest()}"


def load_tokenizer(cfg: VideoPrismConfig, source: Source) -> Any:
    """The model's SentencePiece tokenizer through ``transformers.AutoTokenizer`` (local files only)."""
    from transformers import AutoTokenizer

    where = cfg.tokenizer or str(source.folder)
    key = "pipeline.encoder.tokenizer"
    if not cfg.tokenizer and not any((source.folder / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"config: {key!r} is empty and {str(source.folder)!r} holds no tokenizer "
                         f"({', '.join(TOKENIZER_FILES)}); give the folder of the model's tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(Path(where).expanduser()) if _is_local(where) else where,
                                             local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"config: {key!r}: cannot load a tokenizer from {where!r} ({str(exc).splitlines()[0][:160]}); "
                         f"{fetch_hint(where)}") from exc


def tokenize(tokenizer: Any, texts: list[str], length: int = TEXT_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """texts -> (ids ``int32 [B, length]``, valid ``int32 [B, length]``), padded to ``length`` as the model was
    trained (the LvT models read 64 tokens)."""
    out = tokenizer(list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return out["input_ids"].astype(np.int32), out["attention_mask"].astype(np.int32)


def frames_to_input(clips: list[np.ndarray], patch: int) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` clips (one shape) -> ``float32 [B, T, H, W, 3]`` in [0, 1], as VideoPrism reads
    RGB (no mean or std). H and W must be multiples of the patch size: ``pipeline.sampling.crop`` sets them."""
    shapes = {c.shape for c in clips}
    if len(shapes) != 1:
        raise UsageError(f"videoprism: clips in one batch must share a shape, got {sorted(shapes)}")
    t, h, w, c = next(iter(shapes))
    if c != 3 or t < 1:
        raise UsageError(f"videoprism: a clip must be uint8 [T, H, W, 3], got {(t, h, w, c)}")
    if h % patch or w % patch:
        raise UsageError(f"videoprism: frames of {h}x{w} px are not a multiple of its {patch}-px patches; set "
                         f"pipeline.sampling.size and pipeline.sampling.crop to a multiple of {patch} (288 as trained)")
    return np.stack(clips).astype(np.float32) / np.float32(255.0)
