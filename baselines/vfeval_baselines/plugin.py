"""The built-in baselines, registered through the ``vfeval`` entry point like any third-party plugin.

Config classes live in light modules (numpy only), so registering them imports nothing heavy.
"""

from __future__ import annotations

from vfeval import hookimpl
from vfeval.specs import AggregatorSpec, EncoderSpec


@hookimpl
def register_encoders(register):
    from vfeval_baselines.encoders.captioners import HFImageCaptionerConfig, RetrievalCaptionerConfig
    from vfeval_baselines.encoders.clip import HFClipConfig
    from vfeval_baselines.encoders.pixel import PixelConfig
    from vfeval_baselines.encoders.precomputed import PrecomputedConfig
    from vfeval_baselines.encoders.text import HashedTextConfig

    register(EncoderSpec(
        name="pixel", factory="vfeval_baselines.encoders.pixel:make_encoder", config=PixelConfig,
        capabilities=("embed_video", "embed_text"), family="baseline",
        description="Non-learned: share of each basic colour in the video; colour words in the text.",
    ))
    register(EncoderSpec(
        name="hashed-text", factory="vfeval_baselines.encoders.text:make_encoder", config=HashedTextConfig,
        capabilities=("embed_text",), family="baseline",
        description="Non-learned text embedding (hashed words and character trigrams), for blind baselines.",
    ))
    register(EncoderSpec(
        name="retrieval", factory="vfeval_baselines.encoders.captioners:make_retrieval", config=RetrievalCaptionerConfig,
        capabilities=("describe", "embed_video", "embed_text"),
        description="Captions each segment with the nearest caption of a bank under a dual encoder (e.g. pixel).",
    ))
    register(EncoderSpec(
        name="hf-image-captioner", factory="vfeval_baselines.encoders.captioners:make_hf_image_captioner",
        config=HFImageCaptionerConfig, backends=("torch",), capabilities=("describe",),
        description="Captions the middle frame (or K frames) of each segment with a Hugging Face image-to-text model.",
    ))
    register(EncoderSpec(
        name="precomputed", factory="vfeval_baselines.encoders.precomputed:make_precomputed", config=PrecomputedConfig,
        capabilities=(),
        description="Segment captions read from a file (LLoVi's per-video caption lists, or JSONL), for llm.",
    ))
    register(EncoderSpec(
        name="hf-clip", factory="vfeval_baselines.encoders.clip:make_hf_clip", config=HFClipConfig, backends=("torch",),
        capabilities=("embed_video", "embed_text"), family="image-first",
        description="Image-first: any Hugging Face CLIPModel, frame embeddings averaged over each clip.",
    ))


@hookimpl
def register_aggregators(register):
    from vfeval_baselines.aggregators.attention import AttentionPoolConfig
    from vfeval_baselines.aggregators.choice import BlindConfig, ConstantConfig, RandomConfig
    from vfeval_baselines.aggregators.llm import LLMConfig
    from vfeval_baselines.aggregators.nearest_caption import NearestCaptionConfig

    register(AggregatorSpec(
        name="random", factory="vfeval_baselines.aggregators.choice:make_random", config=RandomConfig,
        kinds=("choice_scores", "video_embedding", "text_embedding"), family="baseline",
        description="Seeded random answers: chance level.",
    ))
    register(AggregatorSpec(
        name="blind", factory="vfeval_baselines.aggregators.choice:make_blind", config=BlindConfig,
        kinds=("choice_scores",), family="baseline",
        description="Question-option text similarity, never looks at the video.",
    ))
    register(AggregatorSpec(
        name="constant", factory="vfeval_baselines.aggregators.choice:make_constant", config=ConstantConfig,
        kinds=("choice_scores",), family="baseline", description="Always the same option (answer-prior check).",
    ))
    register(AggregatorSpec(
        name="nearest-caption", factory="vfeval_baselines.aggregators.nearest_caption:make_nearest_caption",
        config=NearestCaptionConfig, kinds=("generate",),
        description="Generates by retrieval: the caption of a bank file nearest to the pooled video embedding.",
    ))
    register(AggregatorSpec(
        name="attention", factory="vfeval_baselines.aggregators.attention:make_attention", config=AttentionPoolConfig,
        kinds=("choice_scores", "video_embedding", "text_embedding"),
        description="Image-first pooling: a learned attention query over segment embeddings, trained on a "
        "train split's captions against the encoder's frozen text embeddings (starts as mean).",
    ))
    register(AggregatorSpec(
        name="llm", factory="vfeval_baselines.aggregators.llm:make_llm", config=LLMConfig, kinds=("choice_scores", "generate"),
        family="llm-over-segments",
        description="A causal LM reads timestamped segment captions (LLoVi-style); log-likelihood or generation.",
    ))
