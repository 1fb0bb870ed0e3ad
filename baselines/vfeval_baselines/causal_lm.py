"""A Hugging Face causal language model as a scorer of continuations and a greedy generator.

Tokenisation convention (as lm-evaluation-harness): the prompt and each continuation are tokenised
separately and concatenated; the prompt gets the tokenizer's special tokens (a BOS for Llama-family
models), continuations none. The log-likelihood of continuation ``c`` (tokens ``c_0 .. c_{m-1}``) after
prompt ``p`` is ``sum_j log softmax(logits at the position before c_j)[c_j]``, computed in float32.

Shared-prefix reuse: the K options of a question share the whole prompt, so the prompt runs once, its
key/value cache is repeated K times along the batch, and only the K continuations run, as one batch
(right-padded; padding comes after the real tokens, so it never changes their logits). Without reuse the K
full sequences run as one batch, with plain causal attention and no padding mask (for the same reason), so
that the baseline pays for the prompt K times and for nothing else. Both give the same numbers (up to float
rounding; a test checks).

One request at a time: a score never depends on which other requests share its batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vfeval.errors import UsageError
from vfeval_baselines import hf

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class CausalLM:
    def __init__(self, model: Any, tokenizer: Any, weights: str, device: torch.device) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.weights = weights
        self.device = device
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    @classmethod
    def load(cls, name_or_path: str, device: str = "auto", dtype: str = "auto",
             key: str = "pipeline.aggregator.model") -> CausalLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = hf.device(device)
        tokenizer = hf.load(AutoTokenizer.from_pretrained, name_or_path, key, "tokenizer")
        model = hf.load(lambda s: AutoModelForCausalLM.from_pretrained(s, dtype=hf.dtype(dtype, dev)),
                        name_or_path, key, "causal language model")
        return cls(model.to(dev), tokenizer, hf.weights_id(name_or_path, model.config), dev)

    # -- tokens --------------------------------------------------------------------------------------------
    def context_length(self) -> int:
        """The longest sequence the model takes: its position table, or the tokenizer's limit if smaller."""
        config = self.model.config
        sizes = [getattr(config, k) for k in _CONTEXT_KEYS if isinstance(getattr(config, k, None), int)]
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 10**7:
            sizes.append(limit)
        if not sizes:
            raise UsageError("llm: the model config names no context length; set pipeline.aggregator.max_context")
        return min(sizes)

    def encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def chat(self, prompt: str) -> str:
        """The prompt as one user turn of the tokenizer's chat template, ready for the assistant's reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise UsageError("llm: chat=true but the tokenizer has no chat template; set chat=false")
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    # -- scoring -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def loglikelihoods(self, prompt: list[int], continuations: list[list[int]], reuse: bool = True
                       ) -> np.ndarray:
        """``float64 [K]``: the summed log-probability of each continuation after ``prompt``."""
        if not prompt:
            raise UsageError("llm: the prompt is empty after tokenisation")
        if any(not c for c in continuations):
            raise UsageError("llm: an option's continuation is empty after tokenisation")
        k, width = len(continuations), max(len(c) for c in continuations)
        conts = torch.full((k, width), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((k, width), dtype=torch.long)
        for i, c in enumerate(continuations):
            conts[i, : len(c)] = torch.tensor(c)
            cont_mask[i, : len(c)] = 1
        conts, cont_mask = conts.to(self.device), cont_mask.to(self.device)
        n = len(prompt)
        prompt_ids = torch.tensor([prompt], device=self.device)
        if reuse:
            out = self.model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            mask = torch.cat([torch.ones((k, n), dtype=torch.long, device=self.device), cont_mask], dim=1)
            positions = torch.arange(n, n + width, device=self.device)[None].expand(k, -1)
            rest = self.model(input_ids=conts, attention_mask=mask, position_ids=positions, past_key_values=cache,
                              use_cache=True).logits  # [K, width, V]: position j predicts token j + 1
            # [K, width + 1, V]: row j predicts continuation token j
            logits = torch.cat([out.logits[:, -1:].expand(k, -1, -1), rest], dim=1)
        else:
            # No attention mask: the padding comes last, and causal attention never lets a real token see a
            # later one. A padding mask would cost more than it could change: it makes attention build an
            # explicit [K, 1, L, L] mask instead of its causal kernel, about twice the time of the whole pass.
            ids = torch.cat([prompt_ids.expand(k, -1), conts], dim=1)
            logits = self.model(input_ids=ids, logits_to_keep=width + 1).logits
        logp = torch.log_softmax(logits[:, :width].float(), dim=-1)  # [K, width, V]
        picked = logp.gather(-1, conts[..., None])[..., 0] * cont_mask  # [K, width]
        return picked.sum(dim=1).double().cpu().numpy()

    # -- generation ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def greedy(self, prompt: list[int], max_new_tokens: int) -> str:
        """Greedy decoding of at most ``max_new_tokens`` after ``prompt``, stopping at end of sequence."""
        ids = torch.tensor([prompt], device=self.device)
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                                  eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
