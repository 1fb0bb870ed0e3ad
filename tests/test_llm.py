"""The ``llm`` aggregator on tiny causal LMs built here: scoring, prefix reuse, truncation, generation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vfeval_baselines import prompts  # noqa: E402
from vfeval_baselines.aggregators.llm import LLMConfig, count_unparseable, make_llm  # noqa: E402
from vfeval_baselines.causal_lm import CausalLM  # noqa: E402
from vfeval_baselines.prompts import Timed  # noqa: E402

from vfeval import testing_models  # noqa: E402
from vfeval.errors import UsageError  # noqa: E402
from vfeval.requests import choice_scores, generate  # noqa: E402

TEXTS = [
    "a red circle moves left, then a blue square moves up, then a green triangle moves down",
    "Question: In what order did the shapes' colours appear? Answer: B. red, then blue",
    "Below are descriptions of consecutive parts of a video, each with its time span in seconds.",
    "Reply with the letter of the correct option only.",
]
CAPTIONS = [Timed(0, 6, "a red circle moves left"), Timed(6, 12, "a blue square moves up"),
            Timed(12, 18, "a green triangle moves down"), Timed(18, 24, "a cyan circle moves right")]
QUESTION = "Which colour was the last shape to appear?"
OPTIONS = ["red", "cyan", "a green triangle that moves down", "blue", "magenta"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models run fastest on one thread; more only contend with each other on a small machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm_dir(request, tmp_path_factory):
    return testing_models.build_causal_lm(tmp_path_factory.mktemp(request.param), TEXTS, arch=request.param,
                                          context=256)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return testing_models.build_causal_lm(tmp_path_factory.mktemp("gpt2"), TEXTS, arch="gpt2", context=256)


def hand_loglikelihood(path, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt) from one forward pass over the whole sequence, by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    p = tok(prompt)["input_ids"]
    c = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(p) + j - 1, t]) for j, t in enumerate(c)) / len(c)


def test_loglikelihood_scores_are_token_normalised_log_probabilities(lm_dir):
    agg = make_llm(LLMConfig(model=str(lm_dir)))
    prompt = agg.choice_prompt(CAPTIONS, QUESTION, OPTIONS)
    # LLoVi's structure: timestamped captions in order, the question, five labelled options, the instruction.
    lines = [prompt.index(s) for s in ("[0s-6s] a red circle", "[18s-24s] a cyan circle", f"Question: {QUESTION}",
                                       "A. red", "B. cyan", "E. magenta", "letter")]
    assert lines == sorted(lines)
    scores = agg.choice_scores(CAPTIONS, QUESTION, OPTIONS)
    assert scores.dtype == np.float32 and scores.shape == (5,)
    expected = [hand_loglikelihood(lm_dir, prompt, f" {label}. {o}") for label, o in zip("ABCDE", OPTIONS)]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)

    unnormalised = make_llm(LLMConfig(model=str(lm_dir), normalise="none")).choice_scores(CAPTIONS, QUESTION, OPTIONS)
    lengths = [len(agg.lm.encode(f" {label}. {o}", special=False)) for label, o in zip("ABCDE", OPTIONS)]
    np.testing.assert_allclose(unnormalised, np.array(expected) * lengths, rtol=1e-5, atol=1e-5)


def test_shared_prefix_reuse_gives_the_same_scores_as_full_sequences(lm_dir):
    lm = CausalLM.load(str(lm_dir))
    prompt = lm.encode("Question: which colour came last? [0s-6s] a red circle moves left " * 4)
    conts = [lm.encode(c, special=False) for c in (" A", " B. blue square moves up", " C. red, then blue",
                                                   " D. green triangle", " E")]
    assert len({len(c) for c in conts}) > 2  # continuations of different lengths share one padded batch
    reused, full = lm.loglikelihoods(prompt, conts, reuse=True), lm.loglikelihoods(prompt, conts, reuse=False)
    np.testing.assert_allclose(reused, full, rtol=1e-5, atol=1e-5)
    # One option alone gives its score as in the batch of five: padding never leaks into a score.
    np.testing.assert_allclose(lm.loglikelihoods(prompt, conts[1:2]), reused[1:2], rtol=1e-5, atol=1e-5)


def test_long_caption_lists_are_subsampled_uniformly_in_order_to_fit(gpt2_dir):
    captions = [Timed(i, i + 1, f"caption number {i}") for i in range(180)]
    agg = make_llm(LLMConfig(model=str(gpt2_dir), max_context=200))
    prompt = agg.choice_prompt(captions, QUESTION, OPTIONS)
    kept = [int(line.split("number ")[1]) for line in prompt.splitlines() if "caption number" in line]
    assert 1 < len(kept) < 180
    assert kept == prompts.subsample(180, len(kept)) and kept[0] == 0  # uniform, in temporal order
    answer = max(len(agg.lm.encode(c, special=False)) for c in agg.templates.continuations(OPTIONS))
    assert len(agg.lm.encode(prompt)) + answer <= 200
    # The largest subsample that fits: one caption more would not.
    bigger = agg.templates.choice_prompt(
        agg.templates.caption_lines([captions[i] for i in prompts.subsample(180, len(kept) + 1)]), QUESTION, OPTIONS)
    assert len(agg.lm.encode(bigger)) + answer > 200
    with pytest.raises(UsageError, match="does not fit"):
        make_llm(LLMConfig(model=str(gpt2_dir), max_context=40)).choice_scores(captions, QUESTION, OPTIONS)


def test_generate_mode_parses_the_letter_and_marks_unparseable_answers(gpt2_dir, tmp_path):
    untrained = make_llm(LLMConfig(model=str(gpt2_dir), mode="generate", answer_tokens=4))
    prompt = untrained.choice_prompt(CAPTIONS, QUESTION, OPTIONS)
    # Teach a copy of the model to answer " B." after this prompt, then ask it.
    trained_dir = testing_models.build_causal_lm(tmp_path / "lm", TEXTS, arch="gpt2", context=256)
    testing_models.train_causal_lm(trained_dir, [prompt + " B."], steps=30, batch_size=1, lr=1e-2)
    trained = make_llm(LLMConfig(model=str(trained_dir), mode="generate", answer_tokens=4))
    assert prompts.parse_choice(trained.lm.greedy(trained.lm.encode(prompt), 4), "ABCDE") == 1
    assert trained.choice_scores(CAPTIONS, QUESTION, OPTIONS).tolist() == [0, 1, 0, 0, 0]

    # An answer with no label scores -inf everywhere (no credit, no NaN) and is counted.
    scores = [untrained.choice_scores([Timed(0, 6, f"caption {i}")], "What?", OPTIONS) for i in range(3)]
    for s in scores:
        assert not np.isnan(s).any() and (np.all(np.isneginf(s)) or sorted(s.tolist()) == [0, 0, 0, 0, 1])
    assert count_unparseable(scores) == sum(bool(np.all(np.isneginf(s))) for s in scores)
    assert count_unparseable([np.full(5, -np.inf, np.float32), np.eye(5, dtype=np.float32)[2], None]) == 1


@pytest.mark.parametrize(("text", "index"), [
    ("B", 1), (" (C) because", 2), ("Answer: D.", 3), ("E) magenta", 4), ("A red circle, so B", 1),
    ("A red circle", None), ("none of them", None), ("", None),
])
def test_parse_choice(text, index):
    assert prompts.parse_choice(text, "ABCDE") == index


def test_generate_requests_and_the_aggregator_contract(gpt2_dir):
    agg = make_llm(LLMConfig(model=str(gpt2_dir), max_new_tokens=5))
    from vfeval.pipeline import VideoInputs

    inputs = VideoInputs(times=[(c.start, c.end) for c in CAPTIONS], captions=[c.text for c in CAPTIONS])
    summary, scores = agg.answer([generate(None, "Summarise the video."), choice_scores(None, QUESTION, OPTIONS)],
                                 [inputs, inputs])
    assert isinstance(summary, str)
    prompt = agg.templates.generate_prompt(agg.templates.caption_lines(CAPTIONS), "Summarise the video.")
    assert prompt.index("[0s-6s] a red circle") < prompt.index("Summarise the video.")
    assert summary == agg.lm.greedy(agg.lm.encode(prompt), 5).strip()
    np.testing.assert_allclose(scores, agg.choice_scores(CAPTIONS, QUESTION, OPTIONS))
    described = agg.fingerprint()
    assert described["weights"].startswith("sha256:") and described["dtype"] == "float32"


def test_missing_weights_and_bad_options_are_one_clear_error(tmp_path):
    with pytest.raises(UsageError, match="pipeline.aggregator.model.*no such directory"):
        make_llm(LLMConfig(model=str(tmp_path / "absent")))
    with pytest.raises(UsageError, match="missing value for 'pipeline.aggregator.model'"):
        make_llm(LLMConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="cannot load"):
        make_llm(LLMConfig(model=str(tmp_path / "empty")))
    with pytest.raises(UsageError, match="mode"):
        make_llm(LLMConfig(model="x", mode="sample"))
    with pytest.raises(UsageError, match="template' lacks {question}"):
        make_llm(LLMConfig(model="x", template="{captions} {options}"))
