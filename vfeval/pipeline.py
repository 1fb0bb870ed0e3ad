"""A pipeline is ``sampling + encoder + aggregator``; it answers the four request kinds.

Plain data crosses every boundary here: clips are ``uint8 [T, H, W, 3]`` numpy arrays, embeddings
``float32 [N, D]``, texts ``str``. Encoders and aggregators written with torch or jax convert at their edges.

How each kind is answered:
- ``video_embedding``: every segment of the window is encoded, the aggregator pools them to ``[D]``;
- ``text_embedding``: the encoder's ``embed_text``;
- ``choice_scores``: by the aggregator; embedding aggregators score ``cos(video, text(template(q, option)))``
  as zero-shot video-text models do (MC-ViT, LongViViT);
- ``generate``: by aggregators that produce text (an LLM reading segment captions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vfeval.config import SamplingConfig, to_dict
from vfeval.errors import UsageError
from vfeval.hashing import fingerprint
from vfeval.requests import CHOICE_SCORES, GENERATE, TEXT_EMBEDDING, VIDEO_EMBEDDING, Request
from vfeval.specs import AggregatorSpec, DecoderSpec, EncoderSpec, Registry


class Encoder:
    """Base class of encoders. Implement the methods your spec's ``capabilities`` name."""

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the weights (e.g. ``{"weights": sha256 of the checkpoint}``); part of every cache key."""
        return {}

    def embed_video(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: each ``uint8 [T, H, W, 3]`` → ``float32 [len(clips), D]``."""
        raise NotImplementedError

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """texts → ``float32 [len(texts), D]`` in the same space as ``embed_video``."""
        raise NotImplementedError

    def describe(self, clips: list[np.ndarray]) -> list[str]:
        """One caption per clip."""
        raise NotImplementedError

    def num_parameters(self) -> int | None:
        """How many parameters the model has (shown on the leaderboard); None when it has no such thing."""
        return None

    def training(self) -> dict[str, Any] | None:
        """How the weights were trained, as their trainer recorded it: ``{"stages": [{"trainer", "objective",
        "masking", "steps", ...}, ...]}`` in order (no stages: random weights), or None when unknown. A result
        records it as ``pipeline.training``, outside the fingerprint (it describes the weights, whose hash the
        fingerprint already holds), for the leaderboard's recipes view."""
        return None


@dataclass
class VideoInputs:
    """What the encoder made of one video window, segment by segment."""

    times: list[tuple[float, float]]
    """(start, end) seconds of each segment within the video."""
    embeddings: np.ndarray | None = None
    """``float32 [S, D]``, one row per segment, when the aggregator needs embeddings."""
    captions: list[str] | None = None
    """One caption per segment, when the aggregator needs captions."""
    frame_times: list[list[float]] = field(default_factory=list)
    """Presentation times of the frames actually used, per segment (provenance)."""


class Aggregator:
    """Base class of aggregators: turns VideoInputs into answers.

    ``needs`` says what the pipeline must compute per segment: ``"embeddings"``, ``"captions"`` or ``None``
    (the aggregator never looks at the video, so nothing is decoded).
    """

    needs: ClassVar[str | None] = "embeddings"
    requires: ClassVar[tuple[str, ...]] = ()
    """Encoder capabilities this aggregator calls directly (e.g. ``("embed_text",)``)."""

    def bind(self, encoder: Encoder, sampling: SamplingConfig | None = None) -> None:
        """Called once by the pipeline with its encoder and its sampling (how its videos are decoded)."""
        self.encoder = encoder

    def fingerprint(self) -> dict[str, Any]:
        return {}

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        raise NotImplementedError


class EmbeddingAggregator(Aggregator):
    """Pools segment embeddings; scores options by cosine with the text embedding of a template."""

    needs: ClassVar[str | None] = "embeddings"

    def __init__(self, template: str = "{question} {option}") -> None:
        self.template = template

    def fingerprint(self) -> dict[str, Any]:
        return {"template": self.template}

    def pool(self, embeddings: np.ndarray) -> np.ndarray:
        """``[S, D]`` → ``[D]``."""
        raise NotImplementedError

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        texts: list[str] = []
        for req in requests:
            if req.kind == TEXT_EMBEDDING:
                texts.append(req.text or "")
            elif req.kind == CHOICE_SCORES:
                texts.extend(self.template.format(question=req.question or "", option=o) for o in req.options)
        unique = sorted(set(texts))
        text_emb = dict(zip(unique, _normalise(self.encoder.embed_text(unique)))) if unique else {}
        out: list[Any] = []
        for req, inp in zip(requests, inputs):
            if req.kind == TEXT_EMBEDDING:
                out.append(text_emb[req.text or ""])
                continue
            assert inp is not None and inp.embeddings is not None
            video = self.pool(inp.embeddings).astype(np.float32)
            if req.kind == VIDEO_EMBEDDING:
                out.append(video)
            elif req.kind == CHOICE_SCORES:
                opts = np.stack([text_emb[self.template.format(question=req.question or "", option=o)] for o in req.options])
                out.append((opts @ _normalise(video[None])[0]).astype(np.float32))
            else:
                raise UsageError(f"aggregator cannot answer {req.kind!r} requests")
        return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Pipeline:
    """An encoder, an aggregator and a sampling config, with the fingerprint that names their outputs."""

    def __init__(
        self,
        encoder: Encoder,
        encoder_spec: EncoderSpec,
        encoder_config: Any,
        aggregator: Aggregator,
        aggregator_spec: AggregatorSpec,
        aggregator_config: Any,
        sampling: SamplingConfig,
        decoder: DecoderSpec,
        seed: int = 0,
    ) -> None:
        self.encoder = encoder
        self.encoder_spec = encoder_spec
        self.encoder_config = encoder_config
        self.aggregator = aggregator
        self.aggregator_spec = aggregator_spec
        self.aggregator_config = aggregator_config
        self.sampling = sampling
        self.decoder = decoder
        """The decoder registered as ``sampling.decoder``; its factory string is what decoding workers build."""
        self.seed = seed
        aggregator.bind(encoder, sampling)

    @classmethod
    def from_config(cls, pipeline_cfg: Any, registry: Registry, seed: int = 0) -> Pipeline:
        enc_spec: EncoderSpec = registry.get("encoders", pipeline_cfg.encoder.name)
        agg_spec: AggregatorSpec = registry.get("aggregators", pipeline_cfg.aggregator.name)
        from vfeval.video.backends import decoder_spec

        decoder = decoder_spec(pipeline_cfg.sampling.decoder, registry)  # refused before any model is built
        encoder = enc_spec.load()(pipeline_cfg.encoder)
        aggregator = agg_spec.load()(pipeline_cfg.aggregator)
        return cls(encoder, enc_spec, pipeline_cfg.encoder, aggregator, agg_spec, pipeline_cfg.aggregator,
                   pipeline_cfg.sampling, decoder, seed)

    # -- identity ---------------------------------------------------------------------------------
    def encoder_identity(self) -> dict[str, Any]:
        """What a result records about the encoder (``pipeline.encoder``) and the pipeline fingerprint hashes:
        its name, the backend it ran on (``pipeline.encoder.backend``, resolved by the config), its config
        and weights, and its parameter count."""
        backend = getattr(self.encoder_config, "backend", "") or (self.encoder_spec.backends or ("",))[0]
        identity = {"name": self.encoder_spec.name, "backend": backend, "config": to_dict(self.encoder_config),
                    **self.encoder.fingerprint()}
        parameters = self.encoder.num_parameters()
        if parameters is not None:
            identity["parameters"] = int(parameters)
        return identity

    def decoder_identity(self) -> dict[str, Any] | None:
        """The video decoder's name and versions, which decide the pixels; None if no video is decoded."""
        if self.aggregator.needs is None:
            return None
        from vfeval.video.backends import decoder_identity

        return decoder_identity(self.decoder)

    @property
    def family(self) -> str:
        """The leaderboard family: the aggregator's if it declares one, else the encoder's. Recorded in the
        result as ``pipeline.family``, outside the fingerprint (it names a column, not a computation)."""
        return self.aggregator_spec.family or self.encoder_spec.family

    def describe(self) -> dict[str, Any]:
        described = {
            "encoder": self.encoder_identity(),
            "aggregator": {"name": self.aggregator_spec.name, "config": to_dict(self.aggregator_config),
                           **self.aggregator.fingerprint()},
            "sampling": to_dict(self.sampling),
            "seed": self.seed,
        }
        decoder = self.decoder_identity()
        if decoder is not None:
            described["decoder"] = decoder
        return described

    def fingerprint(self) -> str:
        return fingerprint(self.describe())

    def features_key(self) -> str:
        """Names the per-segment features: encoder weights and config, sampling, and what is computed."""
        return fingerprint({"encoder": self.encoder_identity(), "sampling": to_dict(self.sampling),
                            "needs": self.aggregator.needs, "decoder": self.decoder_identity()})

    # -- checks -----------------------------------------------------------------------------------
    def check(self, kinds: set[str], registry: Registry | None = None) -> None:
        """Refuse, before any video is decoded, kinds this pipeline cannot answer."""
        needed = set(self.aggregator.requires)
        needed |= {"embeddings": {"embed_video"}, "captions": {"describe"}}.get(self.aggregator.needs or "", set())
        missing = sorted(needed - set(self.encoder_spec.capabilities))
        if missing:
            raise UsageError(
                f"aggregator {self.aggregator_spec.name!r} needs an encoder that can {', '.join(missing)}; encoder "
                f"{self.encoder_spec.name!r} can {', '.join(self.encoder_spec.capabilities) or 'nothing'}"
            )
        for kind in sorted(kinds):
            if kind in self.aggregator_spec.kinds:
                if kind in (TEXT_EMBEDDING, CHOICE_SCORES) and self.aggregator.needs == "embeddings" \
                        and "embed_text" not in self.encoder_spec.capabilities:
                    raise UsageError(
                        f"the task asks for {kind} but encoder {self.encoder_spec.name!r} cannot embed text; "
                        "use a dual (video-text) encoder"
                    )
                continue
            able = ""
            if registry is not None:
                names = [n for n, s in registry.aggregators.items() if kind in s.kinds]
                able = f"; aggregators that can: {', '.join(sorted(names)) or 'none installed'}"
            raise UsageError(
                f"aggregator {self.aggregator_spec.name!r} cannot answer {kind!r} requests{able} "
                "(set pipeline.aggregator.name)"
            )

    def needs_video(self, request: Request) -> bool:
        return request.video is not None and self.aggregator.needs is not None and request.kind != TEXT_EMBEDDING

    # -- compute ----------------------------------------------------------------------------------
    def compute_inputs(self, clips_per_window: list[list[Any]]) -> list[VideoInputs]:
        """Encode (or describe) every segment of several windows in one batch.

        ``clips_per_window[i]`` is the list of ``vfeval.video.Clip`` of window i, one per segment.
        """
        flat = [clip for clips in clips_per_window for clip in clips]
        frames = [clip.frames for clip in flat]
        embeddings = captions = None
        if self.aggregator.needs == "embeddings":
            embeddings = np.asarray(self.encoder.embed_video(frames), dtype=np.float32)
        elif self.aggregator.needs == "captions":
            captions = list(self.encoder.describe(frames))
        out, i = [], 0
        for clips in clips_per_window:
            n = len(clips)
            out.append(
                VideoInputs(
                    times=[(c.start, c.end) for c in clips],
                    embeddings=None if embeddings is None else embeddings[i : i + n],
                    captions=None if captions is None else captions[i : i + n],
                    frame_times=[[float(t) for t in c.times] for c in clips],
                )
            )
            i += n
        return out

    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        return self.aggregator.answer(requests, inputs)


KIND_NAMES = (VIDEO_EMBEDDING, TEXT_EMBEDDING, CHOICE_SCORES, GENERATE)
