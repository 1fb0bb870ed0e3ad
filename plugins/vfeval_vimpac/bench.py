"""One VIMPAC optimizer step on a fixed batch, for benchmarks to time: ``make_step(config, backend)``.

The batch is random codes of the config's token map (``optim.batch_size`` videos, two clips each),
corrupted by the recipe's block masks; no video is decoded and no tokenizer runs (its vocabulary comes
from ``model.tokenizer`` when that file exists, else 256 codes), so the figure is the model's step alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vfeval_vimpac.config import VimpacTrainConfig, token_grid


def load_config(config: str | Path | dict[str, Any]) -> VimpacTrainConfig:
    """A ``vimpac`` training config from a YAML path or a dict (overrides of the defaults)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.load(str(config)) if isinstance(config, (str, Path)) else OmegaConf.create(config)
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "trainer"]) if "trainer" in raw else raw
    # no data is read: a config without a captions file is complete here
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VimpacTrainConfig), {"data": {"captions": ""}}, raw))


def fixed_batch(cfg: VimpacTrainConfig, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    from vfeval_vimpac.masking import corrupt_pairs

    b = cfg.optim.batch_size
    codes = np.random.default_rng(seed).integers(0, vocab, size=(b, 2, *token_grid(cfg.model))).astype(np.int32)
    inputs, masked = corrupt_pairs(codes, list(range(b)), cfg.seed, 0, cfg.masking.blocks, vocab, cfg.masking.corruption)
    return {"inputs": inputs, "codes": codes, "masked": masked}


def _vocab(cfg: VimpacTrainConfig) -> int:
    from vfeval_vimpac import tokenizer

    if cfg.model.tokenizer and Path(cfg.model.tokenizer).is_file():
        kind, arrays, _ = tokenizer.load(cfg.model.tokenizer)
        return tokenizer.vocab_size(kind, arrays)
    return 256


def make_step(config: str | Path | dict[str, Any], backend: str = "torch") -> tuple[Callable[[], None], int]:
    """``(step, tokens_per_step)``: ``step()`` runs one optimizer step (forward, backward, update) on a fixed
    batch and returns once the device is done; tokens are the transformer's inputs, [CLS] included."""
    cfg = load_config(config)
    vocab = _vocab(cfg)
    batch = fixed_batch(cfg, vocab)
    t, h, w = token_grid(cfg.model)
    tokens = 2 * cfg.optim.batch_size * (1 + t * h * w)
    if backend == "jax":
        return _jax_step(cfg, vocab, batch), tokens
    return _torch_step(cfg, vocab, batch), tokens


def _torch_step(cfg: VimpacTrainConfig, vocab: int, batch: dict[str, np.ndarray]) -> Callable[[], None]:
    import torch
    from vfeval_videofirst.torch.encoder import resolve_device
    from vfeval_videofirst.torch.train import Proc, make_optimizer

    from vfeval_vimpac.torch.train import build_model, optimizer_step, to_device

    device = resolve_device(cfg.model.device)
    model = build_model(cfg.model, vocab).to(device).train()
    optimizer, _ = make_optimizer(model, cfg.optim)
    micro = [to_device(batch["inputs"], batch["codes"], batch["masked"], device)]
    proc = Proc(0, 1, device)
    use_bf16 = cfg.optim.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        optimizer_step(model, optimizer, trainable, micro, cfg, proc, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def _jax_step(cfg: VimpacTrainConfig, vocab: int, batch: dict[str, np.ndarray]) -> Callable[[], None]:
    import jax
    import jax.numpy as jnp
    from vfeval_videofirst.jax import optim, sharding
    from vfeval_videofirst.jax.model import state_arrays

    from vfeval_vimpac.jax.train import Objective, build_model
    from vfeval_vimpac.jax.train import make_step as jax_make_step

    place = sharding.start(cfg.model.device)
    model = build_model(cfg.model, vocab)
    params = state_arrays(model)
    optimizer = optim.make_optimizer(params, cfg.optim)
    state = {"params": place.replicate(params), "opt": place.replicate(jax.device_get(optimizer.init(params)))}
    fn = jax_make_step(Objective(model, cfg.loss), optimizer, place, 1)
    stacked = jax.tree.map(lambda x: place.put(x[None], axis=1), batch)

    def step() -> None:
        state["params"], state["opt"], losses, _ = fn(state["params"], state["opt"], jnp.float32(1e-4), stacked)
        jax.block_until_ready(losses)

    return step



def loss_parity(config: str | Path | dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{part: (torch, jax)}``: VIMPAC's loss and its parts for one batch, one set of weights (drawn in torch,
    copied into JAX) and the same masks."""
    import torch
    from vfeval_videofirst.jax.model import load_arrays

    from vfeval_vimpac.jax.losses import vimpac_loss as jax_loss
    from vfeval_vimpac.jax.train import build_model as jax_model
    from vfeval_vimpac.torch.losses import vimpac_loss as torch_loss
    from vfeval_vimpac.torch.train import arrays, build_model

    cfg = load_config(config)
    vocab = _vocab(cfg)
    batch = fixed_batch(cfg, vocab)
    model = build_model(cfg.model, vocab)
    with torch.no_grad():
        total, parts = torch_loss(model, *(torch.from_numpy(batch[k]) for k in ("inputs", "codes", "masked")), cfg.loss)
    twin = jax_model(cfg.model, vocab)
    load_arrays(twin, arrays(model))
    j_total, j_parts = jax_loss(twin, batch["inputs"], batch["codes"], batch["masked"], cfg.loss)
    out = {"total": (float(total), float(j_total))}
    out.update({k: (float(parts[k]), float(j_parts[k])) for k in parts})
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m vfeval_vimpac.bench [CONFIG]``: the masking ratios of the paper's settings, the torch/JAX loss
    parity and each backend's step time (best of 5 after a warm-up) on the config's fixed batch."""
    import sys
    import time

    from vfeval_vimpac.masking import expected_ratio

    args = sys.argv[1:] if argv is None else argv
    config = args[0] if args else "configs/train/vimpac_synthetic.yaml"
    print("masking ratio (exact expectation), blocks 4..8:")
    for grid in ((5, 16, 16), (5, 32, 32), (10, 16, 16), (10, 32, 32)):
        ratios = "  ".join(f"{k}: {100 * expected_ratio(grid, k):5.2f}%" for k in range(4, 9))
        print(f"  {'x'.join(map(str, grid)):>9}  {ratios}")
    for name, (a, b) in loss_parity(config).items():
        print(f"loss {name:>5}: torch {a:.6f}  jax {b:.6f}  relative difference {abs(a - b) / abs(a):.1e}")
    for backend in ("torch", "jax"):
        step, tokens = make_step(config, backend)
        step()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"{backend:>5}: step {1000 * best:.1f} ms (best of 5), {tokens} tokens per step, {tokens / best:.0f} tokens/s")


if __name__ == "__main__":
    main()
