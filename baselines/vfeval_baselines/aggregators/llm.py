"""``llm``: a causal language model reads a video's timestamped segment captions and answers (LLoVi-style).

The captions come from the pipeline's encoder: any captioner (``describe``, one caption per segment of
``pipeline.sampling.segments`` seconds), or the ``precomputed`` caption source, in which case nothing is
decoded. The model is any Hugging Face causal LM, a local directory or a hub name
(``pipeline.aggregator.model``); on a GPU it runs in bfloat16 (``dtype=auto``).

Answering ``choice_scores`` (``mode``, recorded in the pipeline fingerprint like every option):

- ``loglikelihood`` (default): the prompt (``prompts.CHOICE_TEMPLATE``) is followed by each option's
  continuation (`` A. <option>``); an option's score is its log-likelihood divided by its number of tokens
  (``normalise=tokens``; ``none`` keeps the sum). The prompt is run once and its cache shared by the five
  options (``reuse_prefix``).
- ``generate``: greedy decoding of at most ``answer_tokens`` tokens; the first standalone label (A-E) is the
  answer, scored 1 and the other options 0. An answer with no label scores ``-inf`` for every option: the
  count of unparseable answers is the number of such all ``-inf`` score vectors in samples.jsonl
  (``count_unparseable``). No credit is given for them; note that a task that takes the first of equal
  scores (EgoSchema) still predicts option 0 for them.

``generate`` requests (summaries, captions) are answered by greedy decoding of at most ``max_new_tokens``
after ``prompts.GENERATE_TEMPLATE``. Captions that do not fit the context are subsampled uniformly, in
order (``prompts.fit_captions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vfeval.config import AggregatorConfig
from vfeval.errors import UsageError
from vfeval.pipeline import Aggregator, Encoder, VideoInputs
from vfeval.requests import CHOICE_SCORES, GENERATE, Request
from vfeval_baselines import prompts
from vfeval_baselines.encoders.precomputed import CaptionSource
from vfeval_baselines.prompts import Templates, Timed

MODES = ("loglikelihood", "generate")
NORMALISATIONS = ("tokens", "none")
PROMPT_VERSION = "1"
"""Changes when the code that assembles prompts changes (templates are config and recorded as such)."""


@dataclass
class LLMConfig(AggregatorConfig):
    name: str = "llm"
    model: str = ""
    """A local directory holding a saved causal LM and its tokenizer, or a hub name."""
    mode: str = "loglikelihood"
    """How options are scored: ``loglikelihood`` or ``generate``."""
    normalise: str = "tokens"
    """``loglikelihood``: divide an option's log-likelihood by its token count (``tokens``) or not (``none``)."""
    reuse_prefix: bool = True
    """Run the shared prompt once for all options (same scores, faster)."""
    chat: bool = False
    """Wrap the prompt in the tokenizer's chat template as one user turn (instruction-tuned models)."""
    template: str = prompts.CHOICE_TEMPLATE
    generate_template: str = prompts.GENERATE_TEMPLATE
    caption_line: str = prompts.CAPTION_LINE
    option_line: str = prompts.OPTION_LINE
    continuation: str = prompts.CONTINUATION
    labels: str = "letters"
    """``letters`` (A-E), ``digits`` (0-4), or the label characters themselves."""
    max_context: int = 0
    """Tokens of prompt plus answer; 0 takes the model's context length."""
    answer_tokens: int = 8
    """``generate`` mode: tokens generated for an answer."""
    max_new_tokens: int = 128
    """``generate`` requests: tokens generated for a summary or caption."""
    device: str = "auto"
    dtype: str = "auto"
    """``auto``: bfloat16 on a GPU, float32 on the CPU."""


class LLMAggregator(Aggregator):
    needs: ClassVar[str | None] = "captions"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: LLMConfig, lm: Any) -> None:
        self.config = config
        self.lm = lm
        self.templates = Templates(config.template, config.generate_template, config.caption_line,
                                   config.option_line, config.continuation, config.labels)
        self.source: CaptionSource | None = None

    def bind(self, encoder: Encoder, sampling: Any = None) -> None:
        super().bind(encoder, sampling)
        if isinstance(encoder, CaptionSource):
            # Captions are looked up by video id and time: no video needs decoding.
            self.source = encoder
            self.needs = None  # type: ignore[misc]

    def fingerprint(self) -> dict[str, Any]:
        return {"weights": self.lm.weights, "dtype": self.lm.dtype, "prompt_version": PROMPT_VERSION,
                "context": self.context(), "truncation": "uniform-subsample"}

    def context(self) -> int:
        model = self.lm.context_length()
        if self.config.max_context > model:
            raise UsageError(f"config: 'pipeline.aggregator.max_context' is {self.config.max_context} but the "
                             f"model takes at most {model} tokens")
        return self.config.max_context or model

    # -- prompts -------------------------------------------------------------------------------------------
    def captions(self, request: Request, inputs: VideoInputs | None) -> list[Timed]:
        if self.source is not None and request.video is not None:
            return self.source.captions_for(request.video)
        if inputs is None or inputs.captions is None:
            raise UsageError(f"aggregator 'llm' needs a video window with captions to answer {request.kind!r}")
        origin = (request.video.start if request.video is not None else None) or 0.0
        return [Timed(a - origin, b - origin, text) for (a, b), text in zip(inputs.times, inputs.captions)]

    def _text(self, prompt: str) -> str:
        return self.lm.chat(prompt) if self.config.chat else prompt

    def _tokens(self, text: str) -> list[int]:
        # A chat template writes its own special tokens.
        return self.lm.encode(text, special=not self.config.chat)

    def fit(self, captions: Sequence[Timed], build: Any, reserve: int) -> str:
        """The prompt ``build(lines)`` with the caption lines subsampled to leave ``reserve`` tokens free."""
        lines = self.templates.caption_lines(captions)
        budget = self.context() - reserve
        kept = prompts.fit_captions(lines, lambda ls: self._text(build(ls)), lambda t: len(self._tokens(t)), budget)
        return self._text(build(kept))

    def choice_prompt(self, captions: Sequence[Timed], question: str, options: Sequence[str]) -> str:
        """The exact text the model reads before an option's continuation (or its generated answer)."""
        reserve = self.config.answer_tokens if self.config.mode == "generate" else \
            max(len(self.lm.encode(c, special=False)) for c in self.templates.continuations(options))
        return self.fit(captions, lambda ls: self.templates.choice_prompt(ls, question, options), reserve)

    # -- answering -----------------------------------------------------------------------------------------
    def answer(self, requests: list[Request], inputs: list[VideoInputs | None]) -> list[Any]:
        out: list[Any] = []
        for req, inp in zip(requests, inputs):
            captions = self.captions(req, inp)
            if req.kind == CHOICE_SCORES:
                out.append(self.choice_scores(captions, req.question or "", list(req.options)))
            elif req.kind == GENERATE:
                text = self.fit(captions, lambda ls, p=req.prompt or "": self.templates.generate_prompt(ls, p),
                                self.config.max_new_tokens)
                out.append(self.lm.greedy(self._tokens(text), self.config.max_new_tokens).strip())
            else:
                raise UsageError(f"aggregator 'llm' answers choice_scores and generate requests, not {req.kind!r}")
        return out

    def choice_scores(self, captions: Sequence[Timed], question: str, options: list[str]) -> np.ndarray:
        """``float32 [K]`` for the K options (see the module docstring)."""
        ids = self._tokens(self.choice_prompt(captions, question, options))
        if self.config.mode == "generate":
            choice = prompts.parse_choice(self.lm.greedy(ids, self.config.answer_tokens),
                                          self.templates.label_chars(len(options)))
            scores = np.full(len(options), -np.inf, dtype=np.float32)
            if choice is not None:
                scores[:] = 0.0
                scores[choice] = 1.0
            return scores
        conts = [self.lm.encode(c, special=False) for c in self.templates.continuations(options)]
        total = self.lm.loglikelihoods(ids, conts, reuse=self.config.reuse_prefix)
        if self.config.normalise == "tokens":
            total = total / np.array([len(c) for c in conts], dtype=np.float64)
        return total.astype(np.float32)


def count_unparseable(answers: Sequence[Any]) -> int:
    """How many ``choice_scores`` answers of ``generate`` mode had no parseable label (all ``-inf``)."""
    return sum(1 for a in answers if a is not None and np.size(a) and np.all(np.isneginf(np.asarray(a))))


def check_config(config: LLMConfig) -> None:
    if config.mode not in MODES:
        raise UsageError(f"config: bad value for 'pipeline.aggregator.mode': {config.mode!r}; use "
                         f"{', '.join(MODES)}")
    if config.normalise not in NORMALISATIONS:
        raise UsageError(f"config: bad value for 'pipeline.aggregator.normalise': {config.normalise!r}; use "
                         f"{', '.join(NORMALISATIONS)}")
    for key in ("answer_tokens", "max_new_tokens"):
        if getattr(config, key) < 1:
            raise UsageError(f"config: bad value for 'pipeline.aggregator.{key}': it must be >= 1")
    if config.max_context < 0:
        raise UsageError("config: bad value for 'pipeline.aggregator.max_context': it must be >= 0")
    Templates(config.template, config.generate_template, config.caption_line, config.option_line,
              config.continuation, config.labels).check()


def make_llm(config: LLMConfig) -> LLMAggregator:
    check_config(config)
    from vfeval_baselines.causal_lm import CausalLM

    return LLMAggregator(config, CausalLM.load(config.model, config.device, config.dtype))
