"""Options of the VIMPAC encoder, its trainer (``vimpac``) and its tokenizer's trainer (``vqvae``).

Light on purpose: the plugin registers these schemas without importing torch or jax. The transformer's
sizes are the videofirst encoder's variants (``vfeval_videofirst.config.VARIANTS``), so that recipes
compared with each other run the same backbone size.

Token layout (one owner: ``token_grid``): a clip of T frames becomes T token maps of
``image_size / 8`` x ``image_size / 8`` codes (the tokenizer downsamples 8x), flattened time-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from omegaconf import MISSING
from vfeval_videofirst.config import VARIANTS
from vfeval_videofirst.train_config import (
    OptimConfig,
    RunOptions,
    bad_value,
    validate_backend,
    validate_optim,
    validate_run,
)

from vfeval.config import EncoderConfig, SamplingConfig
from vfeval.errors import UsageError

DOWNSAMPLE = 8
"""Pixels per token along each side: both tokenizers (the VQ-VAE and the DALL-E dVAE) downsample 8x."""
DEVICES = ("auto", "cpu", "cuda")
INITS = ("checkpoint", "random")


@dataclass
class VimpacConfig(EncoderConfig):
    """The VIMPAC transformer over a clip's discrete visual tokens, as an encoder (``embed_video``).

    With ``init=checkpoint`` (the default) everything comes from ``checkpoint``: the weights, the
    tokenizer (stored in the same file) and the architecture (its metadata), so a trained model is
    evaluated by naming its file. ``init=random`` builds the architecture below with weights drawn from
    ``seed`` and the ``tokenizer`` file: the untrained baseline of the same encoder.
    """

    name: str = "vimpac"
    init: str = "checkpoint"
    checkpoint: str = ""
    """A ``.safetensors`` file written by the ``vimpac`` trainer (weights + tokenizer + architecture)."""
    tokenizer: str = ""
    """A tokenizer ``.safetensors`` (``vqvae`` trainer's output, or a converted DALL-E dVAE); training and
    ``init=random`` read it; a trained checkpoint carries its own copy."""
    variant: str = "tiny"
    """Transformer size, a key of the videofirst encoder's ``VARIANTS`` (the same backbone sizes)."""
    num_frames: int = 8
    """Token maps in time the position table is laid out for (one per frame)."""
    image_size: int = 64
    """Frames are resized to image_size x image_size before tokenizing (a multiple of 8)."""
    proj_dim: int = 64
    """Output size of the [CLS] projection head of the contrastive loss (the reference: 256)."""
    pool: str = "cls"
    """What ``embed_video`` returns: the final [CLS] feature (``cls``) or the mean of the token features (``mean``)."""
    seed: int = 0
    device: str = "auto"


ARCHITECTURE_KEYS = ("variant", "num_frames", "image_size", "proj_dim")
"""Options that shape the weights: saved in a checkpoint's metadata and read back from it."""


def token_grid(cfg: VimpacConfig, num_frames: int | None = None) -> tuple[int, int, int]:
    """(T, H, W) token map of a clip: one map per frame, ``image_size / 8`` codes along each side."""
    side = cfg.image_size // DOWNSAMPLE
    return (cfg.num_frames if num_frames is None else num_frames), side, side


def architecture(cfg: VimpacConfig) -> dict[str, int]:
    if cfg.variant not in VARIANTS:
        raise UsageError(f"vimpac: bad value for 'variant': {cfg.variant!r}; use one of {', '.join(VARIANTS)}")
    return dict(VARIANTS[cfg.variant])


def validate_model(cfg: VimpacConfig, key: str = "") -> None:
    """Refuse option values that cannot work, each with a one-line message naming the key."""

    def bad(name: str, value: object, why: str) -> UsageError:
        return UsageError(f"vimpac: bad value for {key + name!r}: {value!r}; {why}")

    architecture(cfg)
    if cfg.init not in INITS:
        raise bad("init", cfg.init, f"use one of {', '.join(INITS)}")
    if cfg.device not in DEVICES:
        raise bad("device", cfg.device, f"use one of {', '.join(DEVICES)}")
    if cfg.pool not in ("cls", "mean"):
        raise bad("pool", cfg.pool, "use cls or mean")
    if cfg.image_size < 2 * DOWNSAMPLE or cfg.image_size % DOWNSAMPLE:
        raise bad("image_size", cfg.image_size, f"use a multiple of {DOWNSAMPLE} of at least {2 * DOWNSAMPLE}")
    if cfg.num_frames < 2:
        raise bad("num_frames", cfg.num_frames, "block masking needs at least 2 frames")
    if cfg.proj_dim < 1:
        raise bad("proj_dim", cfg.proj_dim, "it must be positive")
    for name in ("checkpoint", "tokenizer"):
        value = getattr(cfg, name)
        if value and not value.endswith(".safetensors"):
            raise bad(name, value, "it must be a .safetensors file")


# ---------------------------------------------------------------------------------------------------
# The vimpac trainer


CLIP_MODES = ("random", "halves")
"""How the ``vimpac`` trainer cuts a video's two clips from its frames (``ClipPairsConfig.clips``)."""


@dataclass
class PairsConfig:
    captions: str = MISSING
    """A captions file (``vfeval.captions``: JSONL or CSV); only its videos and windows are used. For
    ``vimpac`` each window is read as one run of frames (``sampling``) from which its two clips are cut
    (``clips``); for ``vqvae`` each window gives one clip, whose frames are the training images."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    num_workers: int = 0
    """Threads decoding videos."""
    cache: bool = False
    """Keep what each clip gives in memory after its first visit: its codes (``vimpac``: the tokenizer is
    frozen) or its frames (``vqvae``)."""


@dataclass
class ClipPairsConfig(PairsConfig):
    clips: str = "random"
    """How a video's two clips of ``model.num_frames`` frames are cut from its sampled frames. random: each
    at a random start, drawn independently (the reference's two-clip sampling); halves: the first and the
    last ``model.num_frames`` frames."""


@dataclass
class MaskingConfig:
    blocks: int = 5
    """Cuboids per clip (the reference's ``--mask_blocks``; its scripts use 5)."""
    corruption: str = "token"
    """token: BERT's 80/10/10 drawn per masked token; block: one draw per block (the reference's
    ``mask_3d_rand_replace``)."""


@dataclass
class VimpacLossConfig:
    mlm_weight: float = 1.0
    """Weight of the cross-entropy of the masked tokens' codes."""
    nce_weight: float = 1.0
    """Weight of the contrastive loss between the [CLS] features of a video's two clips."""
    temperature: float = 0.2


@dataclass
class VimpacTrainConfig(RunOptions):
    trainer: str = "vimpac"
    name: str = "vimpac"
    model: VimpacConfig = field(default_factory=VimpacConfig)
    data: ClipPairsConfig = field(default_factory=ClipPairsConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: VimpacLossConfig = field(default_factory=VimpacLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# ---------------------------------------------------------------------------------------------------
# The vqvae trainer


@dataclass
class VqvaeModelConfig:
    codes: int = 256
    """Codebook size."""
    code_dim: int = 32
    """Size of a code vector."""
    hidden: int = 64
    """Channels of the convolutions."""
    image_size: int = 64
    seed: int = 0
    device: str = "auto"


@dataclass
class VqvaeLossConfig:
    beta: float = 0.25
    """Weight of the commitment term (van den Oord et al. 2017)."""


@dataclass
class VqvaeTrainConfig(RunOptions):
    trainer: str = "vqvae"
    name: str = "vqvae"
    model: VqvaeModelConfig = field(default_factory=VqvaeModelConfig)
    data: PairsConfig = field(default_factory=PairsConfig)
    loss: VqvaeLossConfig = field(default_factory=VqvaeLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _validate_common(cfg: VimpacTrainConfig | VqvaeTrainConfig) -> None:
    """What every trainer checks (the videofirst trainer's helpers), and that a clip is one window."""
    from vfeval.video.sampling import validate as validate_sampling

    validate_sampling(cfg.data.sampling)
    if cfg.data.sampling.segments is not None:
        raise bad_value("data.sampling.segments", cfg.data.sampling.segments, "a training clip is one window; use null")
    if cfg.data.num_workers < 0:
        raise bad_value("data.num_workers", cfg.data.num_workers, "it cannot be negative")
    validate_optim(cfg.optim)
    validate_run(cfg)


def validate(cfg: VimpacTrainConfig | VqvaeTrainConfig) -> None:
    """Refuse option values of the ``vimpac`` (or ``vqvae``) recipe that cannot work, each with a one-line message."""
    from vfeval_vimpac.masking import MODES, check_grid

    if isinstance(cfg, VqvaeTrainConfig):
        return validate_vqvae(cfg)

    validate_model(cfg.model, "model.")
    _validate_common(cfg)
    validate_backend(cfg.model)
    if cfg.model.init != "random":
        raise bad_value("model.init", cfg.model.init, "training starts from random weights: use random")
    if cfg.model.checkpoint:
        raise bad_value("model.checkpoint", cfg.model.checkpoint, "the trainer writes checkpoints; leave it empty")
    if not cfg.model.tokenizer:
        raise UsageError(
            "config: 'model.tokenizer' is empty; train one with `vfeval train configs/train/vqvae_synthetic.yaml` "
            "or convert the DALL-E dVAE with `vfeval convert dvae`"
        )
    if cfg.data.clips not in CLIP_MODES:
        raise bad_value("data.clips", cfg.data.clips, f"use one of {', '.join(CLIP_MODES)}")
    frames, clip = cfg.data.sampling.num_frames, cfg.model.num_frames
    if cfg.data.sampling.mode != "uniform" or frames <= clip:
        raise bad_value(
            "data.sampling.num_frames",
            frames,
            f"a video's frames are sampled uniformly (mode: uniform), more of them than model.num_frames ({clip}), "
            f"so that its two clips of {clip} frames can differ (e.g. {2 * clip})",
        )
    if cfg.masking.blocks < 1:
        raise bad_value("masking.blocks", cfg.masking.blocks, "use at least 1")
    if cfg.masking.corruption not in MODES:
        raise bad_value("masking.corruption", cfg.masking.corruption, f"use one of {', '.join(MODES)}")
    check_grid(token_grid(cfg.model))
    loss = cfg.loss
    if loss.mlm_weight < 0 or loss.nce_weight < 0 or loss.mlm_weight + loss.nce_weight == 0:
        raise bad_value("loss.mlm_weight", loss.mlm_weight, "the weights cannot be negative and one must be positive")
    if not loss.temperature > 0:
        raise bad_value("loss.temperature", loss.temperature, "it must be positive")


def validate_vqvae(cfg: VqvaeTrainConfig) -> None:
    """Refuse option values of the ``vqvae`` recipe that cannot work, each with a one-line message."""
    _validate_common(cfg)
    validate_backend(SimpleNamespace(backend="torch"))
    m = cfg.model
    if m.image_size < DOWNSAMPLE or m.image_size % DOWNSAMPLE:
        raise bad_value("model.image_size", m.image_size, f"use a multiple of {DOWNSAMPLE}")
    for key in ("codes", "code_dim", "hidden"):
        if getattr(m, key) < 1:
            raise bad_value(f"model.{key}", getattr(m, key), "it must be positive")
    if m.device not in DEVICES:
        raise bad_value("model.device", m.device, f"use one of {', '.join(DEVICES)}")
    if cfg.loss.beta < 0:
        raise bad_value("loss.beta", cfg.loss.beta, "it cannot be negative")


def train(cfg: VimpacTrainConfig) -> str:
    """The ``vimpac`` TrainerSpec's factory: the recipe in ``model.backend`` (torch, the default, or jax)."""
    validate(cfg)
    if (cfg.model.backend or "torch") == "jax":
        from vfeval_vimpac.jax.train import train as run
    else:
        from vfeval_vimpac.torch.train import train as run
    return run(cfg)


def train_vqvae(cfg: VqvaeTrainConfig) -> str:
    """The ``vqvae`` TrainerSpec's factory (torch)."""
    validate_vqvae(cfg)
    from vfeval_vimpac.torch.vqvae import train as run

    return run(cfg)
