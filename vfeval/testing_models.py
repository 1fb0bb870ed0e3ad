"""Tiny Hugging Face models built locally, for tests, benchmarks and offline smoke runs.

They have random weights (or a minute of training, ``train_causal_lm``) and say nothing about real models:
they exist so that every loading and scoring path runs on a machine with no network and no GPU. Each
builder writes a directory that the ordinary ``from_pretrained`` loaders read, exactly as a downloaded
model's, and returns its path. Nothing in vfeval ever uses them unless given their path.

The companion of ``vfeval.testing`` for fixtures that need torch and transformers: each builder imports
them when called, so importing this module stays light.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer learnt from ``texts`` (every byte stays encodable), as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def build_causal_lm(out_dir: str | Path, texts: Iterable[str], arch: str = "gpt2", width: int = 32,
                    layers: int = 2, heads: int = 2, context: int = 512, vocab_size: int = 400,
                    seed: int = 0) -> Path:
    """A random GPT-2 or Llama causal LM with a tokenizer trained on ``texts``, saved to ``out_dir``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        config: Any = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, n_positions=context, **ids)
        cls: Any = GPT2LMHeadModel
    elif arch == "llama":
        config = LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=context, **ids)
        cls = LlamaForCausalLM
    else:
        raise ValueError(f"arch must be gpt2 or llama, not {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_causal_lm(path: str | Path, texts: list[str], steps: int = 200, batch_size: int = 16,
                    lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Train the causal LM saved at ``path`` on ``texts`` (next-token loss) and save it back; returns losses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).train()
    limit = model.config.max_position_embeddings if hasattr(model.config, "max_position_embeddings") \
        else model.config.n_positions
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        pick = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] + EOS for i in pick], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval().save_pretrained(path)
    return losses


def build_clip(out_dir: str | Path, image_size: int = 32, patch: int = 8, width: int = 32,
               projection: int = 16, seed: int = 0, text_width: int | None = None,
               vision_mlp: int | None = None) -> Path:
    """A random CLIPModel with a character-level CLIP tokenizer and a CLIPImageProcessor, saved to ``out_dir``.

    ``width`` is the vision tower's (2 layers, MLP ``vision_mlp``, default 2 x width); the text tower (1 layer)
    is ``text_width`` wide (default ``width``). ``width=64, vision_mlp=256`` is the videofirst ``tiny`` variant.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + ".,!?'"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(out)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=text_width or width,
                         intermediate_size=2 * (text_width or width), num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=width, intermediate_size=vision_mlp or 2 * width, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=patch),
        projection_dim=projection,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(out)
    return out


def build_image_captioner(out_dir: str | Path, texts: Iterable[str], image_size: int = 32, patch: int = 8,
                          width: int = 32, seed: int = 0) -> Path:
    """A random ViT + GPT-2 ``VisionEncoderDecoderModel`` with a tokenizer and image processor, saved."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, 300)
    encoder = ViTConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * width,
                        image_size=image_size, patch_size=patch)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=1, n_head=2, n_positions=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionEncoderDecoderModel(config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
