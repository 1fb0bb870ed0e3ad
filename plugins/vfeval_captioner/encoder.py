"""The ``videofirst-captioner`` behind vfeval's ``Encoder`` interface: build the model, caption clips (``describe``).

The captioner owns its video encoder: the video-first encoder's tokens stay inside this process as torch
tensors and only captions (``str``) leave it. What identifies the answers (the fingerprint): the bridge's
checkpoint, and the weights of the frozen video encoder and LM it was trained on top of. A bridge
checkpoint records the latter two; evaluating it on top of other ones is refused (its cross-attention
learnt to read those features and that LM's states), as is a checkpoint saved with other bridge options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vfeval_videofirst import checkpoint as video_checkpoint
from vfeval_videofirst.torch.encoder import build_model, load_tensors, preprocess, resolve_device

from vfeval.config import to_dict
from vfeval.errors import UsageError
from vfeval.hashing import sha256_file
from vfeval.pipeline import Encoder
from vfeval_captioner.config import ARCHITECTURE_KEYS, CaptionerConfig, validate
from vfeval_captioner.decoding import decode
from vfeval_captioner.model import Captioner


def build_captioner(cfg: CaptionerConfig, key: str = "pipeline.encoder",
                    device: torch.device | None = None) -> tuple[Captioner, Any, dict[str, str]]:
    """The captioner the config describes, its LM's tokenizer, and ``{"video": ..., "lm": ...}``, the ids of
    the frozen weights. The bridge is freshly initialised from ``cfg.seed``; ``load_bridge`` fills it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vfeval_baselines import hf

    validate(cfg, key)
    if cfg.video.mask_at_eval:
        raise UsageError(f"config: '{key}.video.mask_at_eval' must be false: the trainer masks the captioner's input")
    dev = device if device is not None else resolve_device(cfg.device)
    video, video_weights = build_model(cfg.video)
    tokenizer = hf.load(AutoTokenizer.from_pretrained, cfg.lm, f"{key}.lm", "tokenizer")
    lm = hf.load(lambda s: AutoModelForCausalLM.from_pretrained(s, dtype=hf.dtype(cfg.dtype, dev)), cfg.lm,
                 f"{key}.lm", "causal language model")
    frozen = {"video": video_weights, "lm": hf.weights_id(cfg.lm, lm.config)}
    return Captioner(video.video, lm, cfg).to(dev), tokenizer, frozen


def checkpoint_config(cfg: CaptionerConfig, frozen: dict[str, str]) -> dict[str, Any]:
    """What a bridge checkpoint's metadata holds: the captioner's options and the frozen weights' ids."""
    return {**to_dict(cfg), "frozen": frozen}


def load_bridge(model: Captioner, cfg: CaptionerConfig, frozen: dict[str, str], key: str = "pipeline.encoder") -> str:
    """Load the bridge checkpoint ``cfg.checkpoint`` into ``model``; returns its ``sha256:...``."""
    path = Path(cfg.checkpoint).expanduser()
    if not path.is_file():
        raise UsageError(f"config: '{key}.checkpoint': no such file {cfg.checkpoint!r}; train one with "
                         "`vfeval train configs/train/captioner_synthetic.yaml`")
    saved = video_checkpoint.read_config(path)
    mine = to_dict(cfg)
    differ = [k for k in ARCHITECTURE_KEYS if k in saved and saved[k] != mine[k]]
    if differ:
        fix = " ".join(f"{key}.{k}={json.dumps(saved[k])}" for k in differ)
        raise UsageError(f"videofirst-captioner: {path} was trained with other options ({', '.join(differ)}); set {fix}")
    for part, option in (("video", "video.checkpoint"), ("lm", "lm")):
        was = saved.get("frozen", {}).get(part)
        if was != frozen[part]:
            raise UsageError(f"videofirst-captioner: {path} was trained on another {part} ({was}) than "
                             f"'{key}.{option}' gives ({frozen[part]}); set the one it was trained with")
    tensors = {k: torch.from_numpy(v) for k, v in video_checkpoint.read_arrays(path).items()}
    load_tensors(model.bridge, tensors, path)
    return f"sha256:{sha256_file(path).hexdigest()}"


class CaptionerEncoder(Encoder):
    """Captions each clip with the whole model, in eval mode, no input masked."""

    def __init__(self, cfg: CaptionerConfig, model: Captioner, tokenizer: Any, weights: dict[str, str]) -> None:
        self.cfg = cfg
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.weights = weights
        self.device = next(model.bridge.parameters()).device

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def num_parameters(self) -> int:
        """Encoder, resampler, cross-attention and LM: everything that writes a caption."""
        return sum(p.numel() for p in self.model.parameters())

    def describe(self, clips: list[np.ndarray]) -> list[str]:
        """clips: each ``uint8 [T, H, W, 3]`` → one caption each. Clips of one shape are decoded together,
        ``batch_size`` at a time."""
        out: list[str] = [""] * len(clips)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(clips):
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise UsageError(f"videofirst-captioner: a clip must be uint8 [T, H, W, 3], got shape {tuple(clip.shape)}")
            groups.setdefault(tuple(clip.shape), []).append(i)
        video = self.cfg.video
        for idx in groups.values():
            for start in range(0, len(idx), self.cfg.batch_size):
                chunk = idx[start : start + self.cfg.batch_size]
                x = preprocess(np.stack([clips[i] for i in chunk]), video.image_size, video.tubelet[0], self.device)
                with torch.inference_mode():
                    texts = decode(self.model, self.model.media(x), self.tokenizer, self.cfg)
                for i, text in zip(chunk, texts):
                    out[i] = text
        return out


def make_encoder(config: CaptionerConfig) -> CaptionerEncoder:
    """The factory named by the ``videofirst-captioner`` EncoderSpec: a trained bridge is required."""
    if not config.checkpoint:
        raise UsageError("config: missing value for 'pipeline.encoder.checkpoint'; give the bridge a captioner "
                         "trainer wrote (runs/train-NAME/final.safetensors): an untrained bridge is the LM alone")
    model, tokenizer, frozen = build_captioner(config)
    bridge = load_bridge(model, config, frozen)
    return CaptionerEncoder(config, model, tokenizer, {"bridge": bridge, **frozen})
