"""The ``videoprism`` encoder's options and the released models (backend-neutral; nothing heavy imported).

VideoPrism: "A Foundational Visual Encoder for Video Understanding" (Zhao et al., ICML 2024). Code
Apache-2.0, weights CC-BY 4.0: https://github.com/google-deepmind/videoprism.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfeval.config import EncoderConfig


@dataclass
class VideoPrismConfig(EncoderConfig):
    name: str = "videoprism"
    model: str = "google/videoprism-lvt-base-f16r288"
    """A hub name (read from the local Hugging Face cache only), a folder saved by ``save_pretrained``
    (config.json + model.safetensors) or an official ``.npz`` file."""
    tokenizer: str = ""
    """Where the text tokenizer is (a folder ``transformers.AutoTokenizer`` loads, or a hub name); empty: the
    model's folder (for an ``.npz``, the folder it lies in)."""
    batch_size: int = 4
    """Clips per forward pass."""
    text_batch_size: int = 64
    device: str = "auto"
    """torch only: auto (cuda when available), cpu, cuda or cuda:N."""


@dataclass(frozen=True)
class Variant:
    """A released checkpoint: the shapes that the config of its hub repository and its ``.npz`` also hold."""

    npz: str
    hidden: int
    mlp: int
    heads: int
    spatial_layers: int
    frames: int
    """The frames it was trained on, which its temporal position table holds: the default number of frames
    to sample (``pipeline.sampling.num_frames``); other counts interpolate the table."""
    lvt: bool
    temporal_layers: int = 4
    aux_layers: int = 2
    text_layers: int = 12
    vocab: int = 32_000
    image_size: int = 288


VARIANTS: dict[str, Variant] = {
    # Table 1 of the paper; hub repositories google/<name>, each with its official .npz.
    "videoprism-base-f16r288": Variant("flax_base_f16r288_repeated.npz", 768, 3072, 12, 12, 16, lvt=False),
    "videoprism-large-f8r288": Variant("flax_large_f8r288_repeated.npz", 1024, 4096, 16, 24, 8, lvt=False),
    "videoprism-lvt-base-f16r288": Variant("flax_lvt_base_f16r288_repeated.npz", 768, 3072, 12, 12, 16, lvt=True),
    "videoprism-lvt-large-f8r288": Variant("flax_lvt_large_f8r288_repeated.npz", 1024, 4096, 16, 24, 8, lvt=True),
}
