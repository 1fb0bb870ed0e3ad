"""``vimpac``: VIMPAC pre-training in torch (masked-token prediction on discrete visual tokens plus a
contrastive loss between two clips of each video).

The recipe of Tan et al. (2021) at any size: a frozen tokenizer (``tokenizer.py``) turns each clip into
codes; VIMPAC's block masks hide cuboids of them, corrupted BERT's way (``masking.py``, printed with the
masking ratio they induce when training starts); the transformer (``model.py``) predicts the masked
codes and pulls the [CLS] projections of a video's two clips together against the batch's other videos
(``losses.py``). ``configs/train/vimpac_synthetic.yaml`` trains a tiny model on CPU in minutes.

The run folder, the optimizer (AdamW, warm-up then cosine, clipping, accumulation), processes
(``torchrun``: DDP, gloo on CPU, NCCL on GPUs), threads and resumable checkpoints are the videofirst
trainer's (``vfeval_videofirst/torch/train.py``, ``run_files.py``, ``torch/state.py``). Masks are a
function of (seed, forward pass, video, clip), never of the process, so two processes with B videos each
reach the weights one process with 2B reaches; a run resumed from a checkpoint reaches those of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from vfeval_videofirst import run_files
from vfeval_videofirst.data import Schedule
from vfeval_videofirst.torch import state as ckpt
from vfeval_videofirst.torch.encoder import load_tensors
from vfeval_videofirst.torch.train import Proc, lr_at, make_optimizer, training_process

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval_vimpac import checkpoint
from vfeval_vimpac.config import VimpacConfig, VimpacTrainConfig, architecture, token_grid, validate
from vfeval_vimpac.data import PairCodes
from vfeval_vimpac.masking import corrupt_pairs, describe
from vfeval_vimpac.torch.losses import vimpac_loss
from vfeval_vimpac.torch.model import Vimpac
from vfeval_vimpac.torch.tokenizer import Tokenizer


def build_model(cfg: VimpacConfig, vocab: int) -> Vimpac:
    """The transformer of ``cfg`` for ``vocab`` codes, its weights drawn from ``cfg.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Vimpac(**architecture(cfg), vocab=vocab, grid=token_grid(cfg), proj_dim=cfg.proj_dim)


def arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, tok: Tokenizer, path: Path, cfg: VimpacConfig, training: dict | None = None) -> None:
    checkpoint.save(path, arrays(model), (tok.kind, tok.arrays), checkpoint.metadata(cfg, tok.kind, tok.vocab), training)


def to_device(inputs: np.ndarray, codes: np.ndarray, masked: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (inputs, codes, masked))


def optimizer_step(
    runner: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.Tensor],
    micro: list[tuple[torch.Tensor, ...]],
    cfg: VimpacTrainConfig,
    proc: Proc,
    autocast: Any,
) -> list[dict[str, float]]:
    """Forward and backward over the step's micro-batches (gradients summed, each loss divided by their
    count), clipping, the update. Returns each micro-batch's loss and its parts."""
    records = []
    for k, (inputs, codes, masked) in enumerate(micro):
        sync = k == len(micro) - 1 or proc.world == 1
        with contextlib.nullcontext() if sync else runner.no_sync():
            with autocast:
                loss, parts = vimpac_loss(runner, inputs, codes, masked, cfg.loss, proc.world > 1)
            (loss / len(micro)).backward()
        records.append({"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}})
    if cfg.optim.clip_grad:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return records


def train(cfg: VimpacTrainConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (transformer + tokenizer + architecture)."""
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    with training_process(cfg.model.device) as proc:
        return str(_train(cfg, pairs, proc))


def _train(cfg: VimpacTrainConfig, pairs: list, proc: Proc) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final

    tok = Tokenizer.from_file(cfg.model.tokenizer, proc.device)
    grid = token_grid(cfg.model)
    model = build_model(cfg.model, tok.vocab).to(proc.device).train()
    optimizer, names = make_optimizer(model, cfg.optim)
    runner: nn.Module = model
    if proc.world > 1:
        ids = [proc.device.index] if proc.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, proc.rank, proc.world)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        _, weights, _ = checkpoint.read(run_files.weights_path(out, resume_from))
        load_tensors(model, {k: torch.from_numpy(v) for k, v in weights.items()}, out)
        meta = ckpt.load_state(run_files.state_path(out, resume_from), optimizer, names, {})
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if proc.main:
        print(describe(grid, cfg.masking.blocks), flush=True)
        run_files.open_run(out, snapshot, start)
    proc.barrier()

    size = cfg.model.image_size
    data = PairCodes(pairs, cfg.data.sampling, lambda f: tok.codes(f, size).cpu().numpy(), cfg.data.cache,
                     cfg.data.num_workers, clip=cfg.model.num_frames, mode=cfg.data.clips, seed=cfg.seed)
    batches = data.micro_batches(schedule, start)
    use_bf16 = cfg.optim.bf16 and proc.device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(proc.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    accum = cfg.optim.grad_accum
    clips_per_step = 2 * cfg.optim.batch_size * accum * proc.world  # two clips per video

    with contextlib.closing(batches), run_files.training_loop(out, cfg, total, start, elapsed_before, proc.main) as loop:
        for step in range(start, total):
            lr = lr_at(step, total, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = []
            for k in range(accum):
                codes, index = next(batches)
                inputs, masked = corrupt_pairs(
                    codes, index, cfg.seed, step * accum + k, cfg.masking.blocks, tok.vocab, cfg.masking.corruption
                )
                micro.append(to_device(inputs, codes, masked, proc.device))
            loop.window += optimizer_step(runner, optimizer, trainable, micro, cfg, proc, autocast)
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum):
                if proc.main:
                    save_weights(model, tok, run_files.weights_path(out, done), cfg.model)
                    ckpt.save_state(run_files.state_path(out, done), optimizer, names, {}, loop.checkpoint_meta(done))
                    loop.prune()
                proc.barrier()

    if proc.main:
        save_weights(model, tok, final, cfg.model, checkpoint.summary(cfg, total))
    proc.barrier()
    return final
