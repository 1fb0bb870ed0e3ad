"""Greedy and beam decoding for the captioner, with or without the LM's key/value cache.

Every sequence starts with the same prefix (the start token and the configured prompt), so a batch needs no
padding: one clip's caption never depends on which other clips share its batch, except for float rounding.
With the cache each step feeds only the newest token; without it each step runs the whole sequence again
(what the cache saves; ``bench/captioner.py`` measures it). Both choose the same tokens (a test checks).

Beam search keeps ``beams`` live hypotheses per clip; a hypothesis that emits the end token is finished
with score ``log p / length ** length_penalty`` (length counting the end token), and the search stops when
``beams`` hypotheses have finished or ``max_new_tokens`` is reached (then the live ones are scored alike).
"""

from __future__ import annotations

from typing import Any

import torch

from vfeval.errors import UsageError
from vfeval_captioner.model import Captioner


def start_token(tokenizer: Any) -> int:
    """The token every sequence starts from: the LM's begin-of-sequence token, else its end token (GPT-2)."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise UsageError("videofirst-captioner: the LM's tokenizer has neither a bos nor an eos token")


def end_token(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise UsageError("videofirst-captioner: the LM's tokenizer has no eos token to end a caption with")
    return int(tokenizer.eos_token_id)


def prefix_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The start token, then the prompt's tokens (no special tokens of the tokenizer's own)."""
    return [start_token(tokenizer), *tokenizer(prompt, add_special_tokens=False)["input_ids"]] if prompt \
        else [start_token(tokenizer)]


@torch.inference_mode()
def greedy(model: Captioner, media: torch.Tensor, prefix: list[int], max_new_tokens: int, eos: int,
           kv_cache: bool = True) -> list[list[int]]:
    """The most likely next token at every step for each clip's latents ``media`` ``[B, L, D]`` → the new
    tokens of each, up to (without) the end token."""
    b = media.shape[0]
    ids = torch.tensor([prefix], device=media.device).expand(b, -1)
    step, cache = ids, None
    done = torch.zeros(b, dtype=torch.bool, device=media.device)
    for _ in range(max_new_tokens):
        if kv_cache:
            logits, cache = model.lm_forward(media, step, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            logits, _ = model.lm_forward(media, ids, logits_to_keep=1)
        token = logits[:, -1].argmax(-1).masked_fill(done, eos)
        ids = torch.cat([ids, token[:, None]], dim=1)
        step = token[:, None]
        done |= token == eos
        if bool(done.all()):
            break
    return [_until(row[len(prefix):].tolist(), eos) for row in ids]


@torch.inference_mode()
def beam(model: Captioner, media: torch.Tensor, prefix: list[int], max_new_tokens: int, eos: int, beams: int,
         length_penalty: float = 1.0, kv_cache: bool = True) -> list[int]:
    """Beam search for one clip's latents ``media`` ``[1, L, D]`` → the best hypothesis's tokens (no end token)."""
    ids = torch.tensor([prefix], device=media.device)
    step, cache = ids, None
    live: list[list[int]] = [[]]
    scores = torch.zeros(1, device=media.device)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_new_tokens):
        m = media.expand(len(live), -1, -1)
        if kv_cache:
            logits, cache = model.lm_forward(m, step, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            logits, _ = model.lm_forward(m, ids, logits_to_keep=1)
        total = scores[:, None] + torch.log_softmax(logits[:, -1], dim=-1)  # [n, V]
        vocab = total.shape[1]
        top = total.flatten().topk(min(2 * beams, total.numel()))
        keep: list[tuple[int, int, float]] = []
        for score, index in zip(top.values.tolist(), top.indices.tolist()):
            row, token = divmod(index, vocab)
            if token == eos:
                finished.append((score / (len(live[row]) + 1) ** length_penalty, live[row]))
            else:
                keep.append((row, token, score))
            if len(keep) == beams:
                break
        if len(finished) >= beams or not keep:
            break
        rows = torch.tensor([r for r, _, _ in keep], device=media.device)
        tokens = torch.tensor([[t] for _, t, _ in keep], device=media.device)
        live = [live[r] + [t] for r, t, _ in keep]
        scores = torch.tensor([s for _, _, s in keep], device=media.device)
        ids = torch.cat([ids.index_select(0, rows), tokens], dim=1)
        step = tokens
        if kv_cache:
            cache.reorder_cache(rows)
    if not finished:
        finished = [(s / max(1, len(seq)) ** length_penalty, seq) for seq, s in zip(live, scores.tolist())]
    return max(finished, key=lambda item: item[0])[1]


def _until(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def decode(model: Captioner, media: torch.Tensor, tokenizer: Any, cfg: Any) -> list[str]:
    """Captions of the clips whose latents are ``media`` ``[B, L, D]``, as the config's decoding says."""
    prefix, eos = prefix_ids(tokenizer, cfg.prompt), end_token(tokenizer)
    if cfg.decoding == "beam":
        rows = [beam(model, media[i : i + 1], prefix, cfg.max_new_tokens, eos, cfg.beams, cfg.length_penalty,
                     cfg.kv_cache) for i in range(media.shape[0])]
    else:
        rows = greedy(model, media, prefix, cfg.max_new_tokens, eos, cfg.kv_cache)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
