"""``videoprism-distill`` in PyTorch: stage 2 of VideoPrism (Zhao et al. 2024, "VideoPrism: A Foundational
Visual Encoder for Video Understanding", section 3.2), masked video modelling with global-local
distillation and token shuffling, on video-only clips.

What we follow from the paper:
- the teacher is the stage-1 video encoder, frozen, and sees the whole clip; the student starts as the same
  encoder and sees the clip with most tokens masked (``model.mask``, ``model.mask_ratio``);
- local distillation: a shallow decoder (``decoder.depth`` blocks) predicts the teacher's token-wise
  embeddings at the masked positions from the student's encoded visible tokens;
- token shuffling: the student's encoded tokens enter the decoder in a random order and without position
  embeddings; only the mask tokens carry the position embeddings of the positions they must predict. The
  decoder cannot copy a visible token's neighbour by its position; the prediction depends on the set of
  visible tokens, not on their order (a test holds it to that);
- global distillation: the student's pooled embedding of the masked clip matches the teacher's of the whole
  clip. It keeps the student's embedding in stage 1's joint video-text space, so stage 1's text tower,
  carried into the output checkpoint unchanged, still reads it ("through the preserved global embedding").

What the paper's text leaves open and we chose: both terms are the squared L2 distance between
L2-normalised vectors, ``|a/|a| - b/|b||^2 = 2 - 2 cos(a, b)`` (the "l2" loss on "l2"-normalised features of
Unmasked Teacher, Li et al. 2023, whose masked-distillation setting VideoPrism starts from), averaged over
the masked tokens of each clip and over the clips; the teacher's token-wise embeddings are its final
tokens after the encoder's final norm; the total is ``loss.local_weight * local + loss.global_weight * global``.

The machinery is the contrastive trainer's (``vfeval_videofirst/torch/train.py``): the same run folder
(``run_files``), metrics, resumable checkpoints (the weights file is a normal videofirst checkpoint of the
student with stage 1's text tower; the decoder travels in the state file as ``extra/decoder.*``),
optimizer, schedule and ``torchrun`` DDP. Masks and shuffles are drawn per clip from (seed, step, clip),
so 2 processes reach the weights of 1 with the global batch, and a resumed run those of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval_videofirst import run_files
from vfeval_videofirst.config import architecture, token_grid
from vfeval_videofirst.distill import masks
from vfeval_videofirst.distill.config import DistillConfig, summary, validate
from vfeval_videofirst.torch import state as ckpt
from vfeval_videofirst.torch.data import CaptionedVideos, Schedule, micro_batches
from vfeval_videofirst.torch.encoder import build_model, load_checkpoint, preprocess
from vfeval_videofirst.torch.model import Block, DualEncoder, VideoTransformer, init_weights
from vfeval_videofirst.torch.train import (
    Proc,
    load_init,
    lr_at,
    make_optimizer,
    set_trainable,
    start_processes,
    training_process,
)

# ---------------------------------------------------------------------------------------------------
# The decoder and the objective


class ShuffledDecoder(nn.Module):
    """The shallow decoder of masked distillation: ``[visible tokens (shuffled, no positions), mask tokens +
    positions of the masked places]`` → pre-LN blocks → predictions at the mask tokens.

    Parameter names (``embed``, ``mask_token``, ``pos``, ``blocks.<i>.*``, ``ln``, ``head``) and layouts are
    those of the JAX twin (``jax_train.ShuffledDecoder``), so the same arrays load in both.
    """

    def __init__(self, *, width: int, depth: int, heads: int, mlp: int, positions: int, out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(width, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.pos = nn.Parameter(torch.zeros(positions, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp, "gelu") for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """visible ``[B, K, D]`` (encoded, in any order), masked ``[B, M]`` position indices → ``[B, M, out_dim]``."""
        queries = self.mask_token + self.pos[masked]  # the only positions the decoder is told
        x = torch.cat([self.embed(visible), queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, visible.shape[1] :]))


def normalised_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a/|a| - b/|b||^2`` along the last axis (``2 - 2 cos``)."""
    return (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1)


class Distiller(nn.Module):
    """Student dual encoder (only its video tower runs), decoder and frozen teacher in one module, so that
    DDP sees every parameter that learns. The teacher stays in eval mode and never requires grad."""

    def __init__(self, model: DualEncoder, decoder: ShuffledDecoder, local_weight: float, global_weight: float):
        super().__init__()
        self.model = model
        self.decoder = decoder
        self.teacher: VideoTransformer = copy.deepcopy(model.video).requires_grad_(False).eval()
        self.teacher.mask = "none"  # the whole clip, even where the config masks at evaluation
        self.local_weight, self.global_weight = local_weight, global_weight

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # never masks, whatever mode the student is in
        return self

    def forward(
        self, video: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor, order: torch.Tensor
    ) -> torch.Tensor:
        """video ``[B, 3, T, H, W]``; ``keep``, ``masked``, ``order`` from ``masks.draw`` → scalar loss."""
        with torch.no_grad():
            x, nt = self.teacher.encode(video)
            target_tokens, target = self.teacher.patch_tokens(x, nt), self.teacher.embedding(x, nt)
        x, nt = self.model.video.encode(video, keep)
        embedding = self.model.video.embedding(x, nt)
        visible = self.model.video.patch_tokens(x, nt)
        shuffled = visible.gather(1, order[:, :, None].expand(-1, -1, visible.shape[-1]))
        predicted = self.decoder(shuffled, masked)
        wanted = target_tokens.gather(1, masked[:, :, None].expand(-1, -1, target_tokens.shape[-1]))
        with torch.autocast(video.device.type, enabled=False):  # the loss in fp32 whatever the towers ran in
            local = normalised_l2(predicted.float(), wanted.float()).mean()
            glob = normalised_l2(embedding.float(), target.float()).mean()
        return self.local_weight * local + self.global_weight * glob


def build(cfg: DistillConfig, device: torch.device) -> Distiller:
    """The student (the stage-1 checkpoint ``stage.init_from``, or the config's own initial weights when it
    is empty), its decoder (drawn from ``seed``) and the teacher (a frozen copy of the student's start)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, _ = build_model(cfg.model)
        if cfg.stage.init_from:
            load_init(model, cfg.stage.init_from)
        arch = architecture(cfg.model)
        nt, nh, nw = token_grid(cfg.model, cfg.data.sampling.num_frames)
        decoder = ShuffledDecoder(
            width=arch["width"], depth=cfg.decoder.depth, heads=arch["heads"], mlp=arch["mlp"],
            positions=nt * nh * nw, out_dim=arch["width"],
        )
    set_trainable(model, cfg.stage.trainable_layers, train_text=False, learn_temperature=False)
    return Distiller(model, decoder, cfg.loss.local_weight, cfg.loss.global_weight).to(device).train()


def batch_tensors(cfg: DistillConfig, frames: np.ndarray, index: list[int], step: int, device: torch.device):
    """A micro-batch's inputs: the normalised clips and the clips' masks and shuffles as tensors."""
    video = preprocess(frames, cfg.model.image_size, cfg.model.tubelet[0], device)
    grid = token_grid(cfg.model, frames.shape[1])
    drawn = masks.draw(cfg.model.mask, cfg.model.mask_ratio, grid, cfg.seed, step, index)
    return video, *(torch.from_numpy(drawn[k]).to(device) for k in ("keep", "masked", "order"))


def decoder_tensors(distiller: Distiller) -> dict[str, torch.Tensor]:
    """The decoder's parameters as the state file's extra tensors (``decoder.<name>``)."""
    return {f"decoder.{n}": p for n, p in distiller.decoder.named_parameters()}


# ---------------------------------------------------------------------------------------------------
# Training


def train(cfg: DistillConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (a videofirst checkpoint)."""
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    with training_process(cfg.model.device) as proc:
        return str(_train(cfg, pairs, proc))


def _train(cfg: DistillConfig, pairs: list, proc: Proc) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final

    distiller = build(cfg, proc.device)
    model = distiller.model
    optimizer, names = make_optimizer(distiller, cfg.optim)
    extra = decoder_tensors(distiller)
    runner: nn.Module = distiller
    if proc.world > 1:
        ids = [proc.device.index] if proc.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(distiller, device_ids=ids)

    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, proc.rank, proc.world)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        load_checkpoint(model, run_files.weights_path(out, resume_from))
        meta = ckpt.load_state(run_files.state_path(out, resume_from), optimizer, names, extra)
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])

    if proc.main:
        run_files.open_run(out, snapshot, start)
    proc.barrier()

    dataset = CaptionedVideos(pairs, cfg.data.sampling, cfg.data.cache)
    batches = micro_batches(dataset, schedule, start, cfg.data.num_workers)
    use_bf16 = cfg.optim.bf16 and proc.device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(proc.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    accum = cfg.optim.grad_accum
    clips_per_step = cfg.optim.batch_size * accum * proc.world

    with contextlib.closing(batches), run_files.training_loop(out, cfg, total, start, elapsed_before, proc.main) as loop:
        for step in range(start, total):
            lr = lr_at(step, total, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(accum):
                frames, _, index = next(batches)  # video-only: the captions are not read
                inputs = batch_tensors(cfg, frames.numpy(), index, step, proc.device)
                sync = micro == accum - 1 or proc.world == 1
                with contextlib.nullcontext() if sync else runner.no_sync():
                    with autocast:
                        loss = runner(*inputs)
                    (loss / accum).backward()
                value = loss.detach().clone()
                if proc.world > 1:  # each process's loss is its clips' mean; the record is the global batch's
                    dist.all_reduce(value)
                    value /= proc.world
                loop.window.append(float(value))
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum):
                if proc.main:
                    ckpt.save_weights(model, run_files.weights_path(out, done), cfg.model)
                    ckpt.save_state(run_files.state_path(out, done), optimizer, names, extra, loop.checkpoint_meta(done))
                    loop.prune()
                proc.barrier()

    if proc.main:
        ckpt.save_weights(model, final, cfg.model, summary(cfg, total))
    proc.barrier()
    return final


# ---------------------------------------------------------------------------------------------------
# One step on a fixed batch, for benchmarks


def bench_step(cfg: DistillConfig, frames: np.ndarray) -> Any:
    """``step()``: one optimizer step (forward, backward, update) on ``frames`` ``uint8 [B, T, H, W, 3]``,
    finished on the device before it returns the loss."""
    device = start_processes(cfg.model.device).device
    distiller = build(cfg, device)
    optimizer, _ = make_optimizer(distiller, cfg.optim)
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    inputs = batch_tensors(cfg, frames, list(range(len(frames))), 0, device)

    def step() -> float:
        loss = distiller(*inputs)
        loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return float(loss.detach())

    return step
