"""``vfeval tiny-lm``: a tiny causal LM built and trained locally on a captions file, for offline captioner runs.

The synthetic suite (``configs/suites/captioner.yaml``) needs a frozen language model and the machine may have
no network: this builds a small GPT-2 with a byte-level BPE tokenizer learnt from the captions and trains it
briefly on them (``vfeval.testing_models``), so it writes caption-like English and nothing more. It says
nothing about real LMs. The folder is written under a temporary name and renamed when complete, so a killed
command leaves no half-written model behind.

Only typer is imported here; torch and transformers when the command runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from vfeval.errors import UsageError


def add_tiny_lm_command(app: typer.Typer) -> None:
    @app.command("tiny-lm")
    def tiny_lm(
        captions: Path = typer.Option(..., help="A captions file (.jsonl or .csv) whose captions the LM learns."),
        out: Path = typer.Option(..., help="The folder to write the model and tokenizer to (save_pretrained)."),
        width: int = typer.Option(64, help="Hidden size."),
        layers: int = typer.Option(2, help="Decoder layers."),
        heads: int = typer.Option(2, help="Attention heads."),
        vocab: int = typer.Option(400, help="BPE vocabulary size."),
        steps: int = typer.Option(300, help="Training steps (0: random weights)."),
        batch: int = typer.Option(16, help="Captions per step."),
        lr: float = typer.Option(3e-3, help="AdamW learning rate."),
        seed: int = typer.Option(0, help="Seeds the weights and the order of the captions."),
    ) -> None:
        """Build a tiny GPT-2 (tokenizer learnt from the captions) and train it on them; prints its final loss."""
        from vfeval.captions import read_captions
        from vfeval.console import make_console
        from vfeval.testing_models import EOS, build_causal_lm, train_causal_lm

        if min(width, layers, heads, vocab, batch) < 1 or steps < 0 or width % heads:
            raise UsageError("tiny-lm: width, layers, heads, vocab and batch must be positive, width a multiple "
                             "of heads, steps >= 0")
        texts = sorted({c for clip in read_captions(captions, "--captions") for c in clip.captions})
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_causal_lm(tmp, texts, width=width, layers=layers, heads=heads, vocab_size=vocab, seed=seed)
        # Each text starts after the start token, as the captioner's sequences do (decoding.prefix_ids): GPT-2's
        # start token is its end token, so the LM learns how captions begin, at the positions they begin at.
        started = [EOS + t for t in texts]
        losses = train_causal_lm(tmp, started, steps=steps, batch_size=batch, lr=lr, seed=seed) if steps else []
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        tail = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        make_console().print(f"tiny LM ({width} wide, {layers} layers, {len(texts)} captions{tail}): {out}")
