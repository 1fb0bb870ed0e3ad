"""``videofirst-captioner``: trains the bridge (resampler and gated cross-attention) on captions, encoder and LM frozen.

LongViViT's video-to-text recipe: the frozen video-first encoder reads each training clip with part of its
input masked (``mask.ratio``, 30% in the paper: a regulariser that also makes the step cheaper), the
resampler and the cross-attention blocks learn to make the frozen LM write the clip's caption (next-token
loss on the caption's tokens, after the start token and the configured prompt). One caption per clip and
visit, drawn from (seed, step, clip) as the contrastive trainer draws it.

Shared with the video-first trainers: the run folder (``vfeval_videofirst.run_files``: config, metrics.jsonl,
resumable checkpoints written atomically, ``resume=true``), the data order (``Schedule``: a function of seed
and epoch, sharded over processes), the clip reader, the learning-rate schedule, AdamW's parameter groups and
the processes (``torchrun``: DDP, gloo on CPU, NCCL on GPUs; only rank 0 writes). A checkpoint holds only the
bridge's tensors; the frozen weights are named by their ids in its metadata.

Reproducibility: masks and captions are drawn from (seed, rank, pass index), never from carried random
state, so a run resumed from a checkpoint after ``kill -9`` ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from vfeval_videofirst import batching, run_files
from vfeval_videofirst.config import token_grid
from vfeval_videofirst.masking import draw_keep, mask_rng
from vfeval_videofirst.torch import state as ckpt
from vfeval_videofirst.torch.data import CaptionedVideos, Schedule, micro_batches
from vfeval_videofirst.torch.encoder import load_checkpoint, preprocess
from vfeval_videofirst.torch.train import (
    Proc,
    draw_seed,
    lr_at,
    make_optimizer,
    training_process,
)

from vfeval.captions import CaptionedClip, read_captions
from vfeval.config import to_dict
from vfeval.errors import UsageError
from vfeval_captioner.decoding import end_token, prefix_ids
from vfeval_captioner.encoder import build_captioner, checkpoint_config
from vfeval_captioner.model import Captioner
from vfeval_captioner.train_config import CaptionerTrainConfig, validate


def select_captions(pairs: list[CaptionedClip], pattern: str, path: str) -> list[CaptionedClip]:
    """The clips with the captions ``pattern`` matches (all when empty); clips left with none are dropped."""
    if not pattern:
        return pairs
    rx = re.compile(pattern)
    kept = [CaptionedClip(p.video, tuple(c for c in p.captions if rx.search(c)), p.start, p.end) for p in pairs]
    kept = [p for p in kept if p.captions]
    if not kept:
        raise UsageError(f"config: 'data.caption_pattern' {pattern!r} matches no caption of {path}")
    return kept


def caption_tokens(tokenizer: Any, prefix: list[int], captions: list[str], max_tokens: int, eos: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` ``[B, S]`` (prefix, caption tokens, end token; padded after the end with the end token)
    and ``labels`` (the same with -100 on the prefix and the padding)."""
    rows = [tokenizer(c, add_special_tokens=False)["input_ids"][: max_tokens - 1] + [eos] for c in captions]
    width = len(prefix) + max(map(len, rows))
    ids = torch.full((len(rows), width), eos, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(prefix)] = torch.tensor(prefix)
        ids[i, len(prefix) : len(prefix) + len(row)] = torch.tensor(row)
        labels[i, len(prefix) : len(prefix) + len(row)] = torch.tensor(row)
    return ids.to(device), labels.to(device)


def train(cfg: CaptionerTrainConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (the bridge, with its config in the metadata)."""
    validate(cfg)
    pairs = select_captions(read_captions(cfg.data.captions), cfg.data.caption_pattern, cfg.data.captions)
    with training_process(cfg.model.device) as proc:
        return str(_train(cfg, pairs, proc))


def _train(cfg: CaptionerTrainConfig, pairs: list[CaptionedClip], proc: Proc) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final

    torch.manual_seed(cfg.seed)
    model, tokenizer, frozen = build_captioner(cfg.model, "model", proc.device)
    saved_config = checkpoint_config(cfg.model, frozen)
    model.train()
    optimizer, names = make_optimizer(model, cfg.optim)
    runner: nn.Module = model
    if proc.world > 1:
        ids = [proc.device.index] if proc.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, proc.rank, proc.world)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        load_checkpoint(model.bridge, run_files.weights_path(out, resume_from))
        meta = ckpt.load_state(run_files.state_path(out, resume_from), optimizer, names, {})
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if proc.main:
        run_files.open_run(out, snapshot, start)
    proc.barrier()

    video_cfg = cfg.model.video
    prefix, eos = prefix_ids(tokenizer, cfg.model.prompt), end_token(tokenizer)
    dataset = CaptionedVideos(pairs, cfg.data.sampling, cfg.data.cache)
    batches = micro_batches(dataset, schedule, start, cfg.data.num_workers)
    use_bf16 = cfg.optim.bf16 and proc.device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(proc.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    trainable = [p for p in model.bridge.parameters() if p.requires_grad]
    accum = cfg.optim.grad_accum
    clips_per_step = cfg.optim.batch_size * accum * proc.world

    with contextlib.closing(batches), run_files.training_loop(out, cfg, total, start, elapsed_before, proc.main) as loop:
        for step in range(start, total):
            lr = lr_at(step, total, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(accum):
                frames, choices, index = next(batches)
                video = preprocess(frames.numpy(), video_cfg.image_size, video_cfg.tubelet[0], proc.device)
                seed = draw_seed(cfg.seed, proc.rank, step * accum + micro)
                captions = batching.batch_texts(choices, index, "one", f"{cfg.seed}:{step}")
                keep = None
                if cfg.mask.kind != "none" and cfg.mask.ratio > 0:
                    grid = token_grid(video_cfg, frames.shape[1])
                    keep = torch.from_numpy(draw_keep(cfg.mask.kind, cfg.mask.ratio, len(captions), grid,
                                                      mask_rng(seed))).to(proc.device)
                ids, labels = caption_tokens(tokenizer, prefix, captions, cfg.data.max_tokens, eos, proc.device)
                sync = micro == accum - 1 or proc.world == 1
                with contextlib.nullcontext() if sync else runner.no_sync():
                    with autocast:
                        loss = runner(video, keep, ids, labels)
                    (loss / accum).backward()
                loop.window.append(global_mean(loss.detach(), proc.world))
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum, gate=gate_opening(model)):
                if proc.main:
                    ckpt.save_weights(model.bridge, run_files.weights_path(out, done), saved_config)
                    ckpt.save_state(run_files.state_path(out, done), optimizer, names, {}, loop.checkpoint_meta(done))
                    loop.prune()
                proc.barrier()

    if proc.main:
        ckpt.save_weights(model.bridge, final, saved_config)
    proc.barrier()
    return final


def global_mean(value: torch.Tensor, world: int) -> float:
    """The mean of a scalar over the processes: with equal batches, the loss of the global batch (logged)."""
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def gate_opening(model: Captioner) -> float:
    """Mean ``|tanh(gate)|`` of the cross-attention blocks' attention gates: 0 is the LM alone."""
    gates = [torch.tanh(block.attn_gate.detach()).abs() for block in model.bridge.xattn]
    return float(torch.stack(gates).mean())
