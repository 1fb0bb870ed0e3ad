"""The videofirst encoder in JAX behind vfeval's ``Encoder`` interface (``pipeline.encoder.backend: jax``).

The twin of ``torch/encoder.py``: the same options, the same weights from the same checkpoint file (the
weights hash is the file's, so it is the same in both backends), the same masks at evaluation (numpy,
seeded by ``seed``). Where the weights come from, in order:
1. ``checkpoint``: a .safetensors file (``checkpoint.py``), written by either backend.
2. ``init=clip``: CLIP's towers inflated from its safetensors weights (``inflate.py``, on arrays).
3. ``init=none``: random weights drawn from ``seed`` with numpy (not the torch backend's draws).

Each tower's forward pass is compiled once per input shape with ``jax.jit``. Nothing here imports torch.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval.pipeline import Encoder
from vfeval_videofirst import checkpoint, inflate
from vfeval_videofirst.config import BYTE_TEXT_DEPTH, VideoFirstConfig, token_grid
from vfeval_videofirst.inflate import CLIP_MEAN, CLIP_STD
from vfeval_videofirst.jax.model import (
    ClipTextTower,
    DualEncoder,
    SmallTextTower,
    VideoTransformer,
    load_arrays,
    state_arrays,
)
from vfeval_videofirst.masking import mask_rng


def build_model(cfg: VideoFirstConfig) -> tuple[DualEncoder, str]:
    """The dual encoder the config describes, with its weights, and the string that identifies those weights."""
    arch, uses_clip, clip_config = inflate.prepare(cfg)

    rng = np.random.default_rng(cfg.seed)
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
        rng=rng,
    )
    if cfg.text == "clip":
        text: nnx.Module | None = ClipTextTower(
            clip_config.text_config, clip_config.projection_dim, inflate.load_tokenizer(cfg.clip_model), rng=rng
        )
    elif cfg.text in ("bytes", "words"):
        text = SmallTextTower(
            width=arch["width"],
            depth=BYTE_TEXT_DEPTH,
            heads=arch["heads"],
            mlp=arch["mlp"],
            embed_dim=cfg.embed_dim,
            length=cfg.text_length,
            tokens=cfg.text,
            rng=rng,
        )
    else:
        text = None
    model = DualEncoder(video, text)

    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint)
        return model, f"sha256:{sha256_file(Path(cfg.checkpoint)).hexdigest()}"
    if uses_clip:
        clip = inflate.read_clip_arrays(cfg.clip_model)
        arrays = state_arrays(model)
        arrays.update(
            inflate.inflated_arrays(
                clip,
                t=cfg.tubelet[0],
                how=cfg.inflation,
                num_pos_time=token_grid(cfg)[0],
                video=cfg.init == "clip",
                text=cfg.text == "clip",
            )
        )
        load_arrays(model, arrays, cfg.clip_model)
    # random draws differ from torch's: the same seed is other weights
    return model, inflate.init_id(cfg, clip_config, backend="jax")


def save_checkpoint(model: DualEncoder, path: str | Path, config: Any = None) -> None:
    """Write the model's weights in the shared layout (``checkpoint.py``), the encoder config in the metadata."""
    checkpoint.save_arrays(state_arrays(model), path, config)


def load_checkpoint(model: DualEncoder, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by either backend into ``model``: every name and shape must match.
    Returns the saved config."""
    load_arrays(model, checkpoint.read_arrays(path), checkpoint.checkpoint_path(path))
    return checkpoint.read_config(path)


@partial(jax.jit, static_argnums=1)
def _resize(x: jax.Array, size: int) -> jax.Array:
    b, n, _, _, c = x.shape
    return jax.image.resize(x, (b, n, size, size, c), method="linear", antialias=True)


def preprocess(clips: np.ndarray, image_size: int, t: int) -> jax.Array:
    """``uint8 [B, T, H, W, 3]`` → normalised ``float32 [B, T', S, S, 3]``, T' the next multiple of t.

    Frames of another size are resized (bilinear, antialiased) before normalising; sampling at
    ``image_size`` avoids it, and with it the one step where the backends' arithmetic differs."""
    x = np.asarray(clips)
    pad = -x.shape[1] % t
    if pad:  # repeat the last frame rather than drop frames the sampler chose
        x = np.concatenate([x, np.repeat(x[:, -1:], pad, axis=1)], axis=1)
    x = x.astype(np.float32) / 255.0
    if x.shape[2:4] != (image_size, image_size):
        x = np.asarray(_resize(jnp.asarray(x), image_size))
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return jnp.asarray((x - mean) / std)


@partial(jax.jit, static_argnums=0)
def _apply(graphdef: Any, state: Any, *args: Any) -> jax.Array:
    """A module (``graphdef`` + ``state``) called on ``args``; compiled once per architecture and input shape,
    and shared by every encoder of that architecture in the process."""
    return nnx.merge(graphdef, state)(*args)


def _pure(module: nnx.Module) -> tuple[Any, Any]:
    """A jitted pure function of the module's state and inputs, and that state."""
    graphdef, state = nnx.split(module)
    return partial(_apply, graphdef), state


class JaxVideoFirstEncoder(Encoder):
    """Embeds clips with the video tower and texts with the text tower; masks only with ``mask_at_eval``."""

    def __init__(self, cfg: VideoFirstConfig, model: DualEncoder, weights: str) -> None:
        if cfg.device == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
            raise UsageError("videofirst: device is 'cuda' but JAX sees no GPU; set device=cpu or auto")
        self.cfg = cfg
        self.model = model
        self.weights = weights
        self._video, self._video_state = _pure(model.video)
        self._text = _pure(model.text) if model.text is not None else None

    def num_parameters(self) -> int:
        return sum(int(np.prod(a.shape)) for a in state_arrays(self.model).values())

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def training(self) -> dict[str, Any] | None:
        return checkpoint.encoder_training(self.cfg)

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """uint8 ``[T, H, W, 3]`` clips → ``float32 [len(clips), embed_dim]``.

        Clips are grouped by shape; with ``mask_at_eval`` every clip of a shape gets the same mask (drawn
        from ``seed``), so an embedding never depends on which other clips share its batch.
        """
        out = np.zeros((len(clips), self.cfg.embed_dim), dtype=np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(clips):
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise UsageError(f"videofirst: a clip must be uint8 [T, H, W, 3], got shape {tuple(clip.shape)}")
            groups.setdefault(tuple(clip.shape), []).append(i)
        for shape, idx in groups.items():
            x = preprocess(np.stack([clips[i] for i in idx]), self.cfg.image_size, self.cfg.tubelet[0])
            keep = self.model.video.draw_keep(1, token_grid(self.cfg, shape[0]), mask_rng(self.cfg.seed), training=False)
            keep = None if keep is None else jnp.asarray(np.repeat(keep, len(idx), axis=0))
            out[idx] = np.asarray(self._video(self._video_state, x, keep), dtype=np.float32)
        return out

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """texts → ``float32 [len(texts), embed_dim]``, in the space of ``embed_video``."""
        if self._text is None:
            raise UsageError("videofirst: text='none' has no text tower; set text=clip or text=bytes")
        if not texts:
            return np.zeros((0, self.cfg.embed_dim), dtype=np.float32)
        run, state = self._text
        tokens = self.model.text.tokenize(list(texts))
        return np.asarray(run(state, *(jnp.asarray(v) for v in tokens.values())), dtype=np.float32)


def make_encoder(config: VideoFirstConfig) -> JaxVideoFirstEncoder:
    """The JAX side of the ``videofirst`` EncoderSpec (``backend: jax``)."""
    model, weights = build_model(config)
    return JaxVideoFirstEncoder(config, model, weights)
