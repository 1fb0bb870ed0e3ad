"""``videofirst-contrastive``: contrastive video-text training of the video-first dual encoder.

The recipe of LongViViT (Papalampidi et al., 2024), in stages, each one ``vfeval train`` of a config in
``configs/train/``: inflate an image-text model and train on short clips with masked input (stage 1),
then on long clips with more frames, 75% masking and all but the last layers frozen, starting from the
stage-1 checkpoint (stage 2). ``configs/train/synthetic.yaml`` trains a tiny model from scratch on CPU.

Optimisation: AdamW, linear warm-up then cosine decay, gradient accumulation, clipping of the global
gradient norm, bfloat16 autocast on CUDA devices that support it. Losses (``losses.py``): symmetric
InfoNCE with a learned temperature (CLIP) or the pairwise sigmoid loss with a learned temperature and
bias (SigLIP), optionally with order negatives: captions rewritten with their events in another order.

Distributed: under ``torchrun --nproc_per_node=N -m vfeval train CONFIG`` every process trains a
``DistributedDataParallel`` replica (gloo on CPU, NCCL on GPUs) on its shard of each epoch. Embeddings
of all processes are gathered before the loss, so the negatives are the whole global batch and the
gradient is exactly that of the global batch's loss. Only rank 0 writes files.

Reproducibility: the data order is a function of (seed, epoch) and each forward pass's masks and order
negatives of (seed, rank, pass index), so no random state is carried from step to step; deterministic algorithms are asked
for; a run resumed from a checkpoint ends with the weights an uninterrupted run reaches.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval_videofirst import batching, run_files
from vfeval_videofirst.checkpoint import checkpoint_path, contrastive_summary
from vfeval_videofirst.masking import mask_rng
from vfeval_videofirst.torch import state as ckpt
from vfeval_videofirst.torch.data import CaptionedVideos, Schedule, micro_batches
from vfeval_videofirst.torch.encoder import (
    build_model,
    load_checkpoint,
    load_tensors,
    preprocess,
    resolve_device,
)
from vfeval_videofirst.torch.losses import gather, gather_padded, infonce, sigmoid_loss
from vfeval_videofirst.torch.model import DualEncoder, resample_time, shifted_positions
from vfeval_videofirst.train_config import TrainConfig, validate

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP clamps its learned inverse temperature at 100 to keep training stable."""
SIGMOID_TEMPERATURE = 0.1
"""SigLIP's initial temperature (its logit scale starts at log 10), with the bias at -10."""


# ---------------------------------------------------------------------------------------------------
# The objective


class Objective(nn.Module):
    """The dual encoder and its loss in one module, so that DDP sees every parameter that learns."""

    def __init__(self, model: DualEncoder, kind: str, bias: float, distributed: bool) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.distributed = distributed
        self.bias = nn.Parameter(torch.tensor(float(bias))) if kind == "sigmoid" else None

    def forward(
        self,
        video: torch.Tensor,
        tokens: dict[str, torch.Tensor],
        generator: np.random.Generator,
        clip_ids: torch.Tensor,
        text_ids: torch.Tensor,
        negatives: dict[str, torch.Tensor] | None = None,
        valid: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """video ``[B, 3, T, H, W]``; tokens of K texts from the text tower's ``tokenize``; ``clip_ids``
        ``[B, C]`` the ids (``caption_ids``) of every caption of each clip, -1 padded; ``text_ids`` ``[K]``
        the ids of the texts. A text is a positive of each clip that has it among its captions. The order
        negatives' tokens come with ``valid`` ``[N]`` (the rows that are real negatives) and their ids → scalar loss."""
        v = self.model.video(video, generator=generator).float()
        t = self.model.text(**tokens).float()
        n = None if negatives is None else self.model.text(**negatives).float()
        if self.distributed:  # every process sees the whole batch; texts per process differ in number
            v, clip_ids = gather(v), gather(_pad_columns(clip_ids))
            t, real = gather_padded(t)
            t, text_ids = t[real], gather_padded(text_ids)[0][real]
            # A caption that clips on two processes share ("the last shape was blue") was embedded by
            # each: keep one copy, so that the texts are those one process with the global batch has,
            # and a shared caption weighs in the loss once, not once per process that holds it.
            first = first_occurrences(text_ids)
            t, text_ids = t[first], text_ids[first]
            if n is not None:
                n, real = gather_padded(n)
                valid = gather_padded(valid.to(torch.uint8))[0].bool()[real]
                n, negative_ids = n[real], gather_padded(negative_ids)[0][real]
        positives = (clip_ids[:, :, None] == text_ids[None, None, :]).any(1)
        if n is not None:  # a rewrite that happens to be a caption of some clip is no negative for it
            valid = valid[None, :] & ~(clip_ids[:, :, None] == negative_ids[None, None, :]).any(1)
        with torch.autocast(v.device.type, enabled=False):  # the loss in fp32 whatever the towers ran in
            if self.kind == "sigmoid":
                return sigmoid_loss(v, t, self.model.logit_scale, self.bias, positives, n, valid)
            return infonce(v, t, self.model.logit_scale, positives, n, valid)


def first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """``bool [n]``: True where ``ids[i]`` does not occur in ``ids[:i]``."""
    same = ids[:, None] == ids[None, :]
    return ~torch.tril(same, diagonal=-1).any(1)


def _pad_columns(ids: torch.Tensor) -> torch.Tensor:
    """``[b, c]`` padded with -1 to the largest ``c`` of all processes, so that it can be gathered."""
    c = torch.tensor([ids.shape[1]], device=ids.device)
    dist.all_reduce(c, op=dist.ReduceOp.MAX)
    return F.pad(ids, (0, int(c) - ids.shape[1]), value=-1)


# ---------------------------------------------------------------------------------------------------
# Pieces of the recipe


def lr_at(step: int, total: int, cfg: Any) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_trainable(model: DualEncoder, layers: int, train_text: bool, learn_temperature: bool) -> None:
    """Freeze everything, then let learn: the last ``layers`` video blocks (all if -1) with the video tower's
    final norm and projection, the text tower if ``train_text``, and the temperature if asked.

    Frozen bottom layers save more than their gradients: nothing below the first trainable block
    requires grad, so autograd keeps none of their activations.
    """
    model.requires_grad_(False)
    video = model.video
    if layers < 0:
        video.requires_grad_(True)
    else:
        parts = [video.ln_post, video.head, *video.blocks[len(video.blocks) - layers :]]
        if video.attention == "factorised":
            parts += list(video.temporal[len(video.temporal) - layers :])
        for part in parts:
            part.requires_grad_(True)
    if model.text is not None and train_text:
        model.text.requires_grad_(True)
    model.logit_scale.requires_grad_(learn_temperature)


def make_optimizer(objective: Objective, cfg: Any) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the trainable parameters; weight decay on weight matrices only. Returns it and the
    parameter names in optimizer order (checked when a run resumes)."""
    decay, no_decay = [], []
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        table = name.rsplit(".", 1)[-1].startswith("pos") or name.endswith(("cls", "token.weight"))
        (decay if p.ndim >= 2 and not table else no_decay).append((name, p))
    groups = [
        {"params": [p for _, p in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6)
    return optimizer, [n for n, _ in decay] + [n for n, _ in no_decay]


def load_init(model: DualEncoder, path: str) -> None:
    """Start from an earlier stage's weights; its temporal position table is resampled to this model's length."""
    from safetensors.torch import load_file

    path_ = checkpoint_path(path)
    tensors = load_file(str(path_))
    own = model.state_dict()
    key = "video.pos_time"
    if key in tensors and key in own and tensors[key].shape[1:] == own[key].shape[1:]:
        tensors[key] = resample_time(tensors[key], own[key].shape[0])
    load_tensors(model, tensors, path_)


def draw_seed(seed: int, rank: int, index: int) -> int:
    """The seed of forward pass ``index`` on process ``rank`` (its masks and order negatives)."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + index) % (2**63 - 1)


def caption_ids(captions: list[str], device: torch.device) -> torch.Tensor:
    """``int64 [n]``: ``batching.caption_ids`` as a tensor."""
    return torch.tensor(batching.caption_ids(captions), dtype=torch.int64, device=device)


def caption_sets(choices: list[tuple[str, ...]], device: torch.device) -> torch.Tensor:
    """``int64 [B, C]``: the ids of each clip's captions, padded with -1 to the longest list."""
    ids = torch.full((len(choices), max(map(len, choices))), -1, dtype=torch.int64, device=device)
    for i, captions in enumerate(choices):
        ids[i, : len(captions)] = caption_ids(list(captions), device)
    return ids


def order_negatives(
    captions: list[str], seed: int, device: torch.device, tokenize: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Tokens of the captions that list events, each rewritten with its events in another order, the rows
    that are real negatives, and the rewrites' ids (``caption_ids``). Captions without events to move
    (most facts) add nothing."""
    rng = random.Random(seed)
    texts = [r for r in (batching.reorder(c, rng) for c in captions) if r is not None]
    valid = torch.ones(len(texts), dtype=torch.bool, device=device)
    if not texts:  # one row that is no negative, so that every process gathers the same way
        texts, valid = captions[:1], torch.zeros(1, dtype=torch.bool, device=device)
    tokens = tokenize(texts)
    return {k: v.to(device) for k, v in tokens.items()}, valid, caption_ids(texts, device)


# ---------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_processes(device_option: str) -> Proc:
    """This process's place in a ``torchrun`` job (or a job of one) and its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_option)
    if world == 1:
        return Proc(0, 1, device)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Proc(dist.get_rank(), dist.get_world_size(), device)


def cpu_threads() -> int:
    """Threads this process may keep busy: the cores it may run on (its affinity), capped by the container's
    CPU quota (cgroup v2 ``cpu.max``), shared among the processes ``torchrun`` started on this machine.

    torch's default is the machine's physical cores, which a container with a quota of 2 CPUs on a 64-core
    host does not have: 64 threads taking turns on 2 CPUs, each waiting at every parallel op for the slowest,
    run a small model several times slower than one thread."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local))


@contextlib.contextmanager
def _cpu_threads(device: torch.device):
    """torch's CPU threads set to ``cpu_threads()`` while training on the CPU, unless OMP_NUM_THREADS says."""
    before = torch.get_num_threads()
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# Training


def train(cfg: TrainConfig) -> str:
    """Run the recipe; returns the path of ``final.safetensors`` (weights + encoder config in its metadata)."""
    validate(cfg)
    pairs = read_captions(cfg.data.captions)
    with training_process(cfg.model.device) as proc:
        return str(_train(cfg, pairs, proc))


@contextlib.contextmanager
def training_process(device_option: str) -> Iterator[Proc]:
    """A training run's process: joined to the others (under torchrun), deterministic algorithms on, CPU
    threads set (``cpu_threads``); every setting restored and the process group left afterwards. Each torch
    trainer of the project (contrastive, distillation, VIMPAC, the captioner) runs inside one."""
    proc = start_processes(device_option)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with it
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with _cpu_threads(proc.device):
            yield proc
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        if proc.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, pairs: list, proc: Proc) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final

    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg.model)
    if cfg.stage.init_from:
        load_init(model, cfg.stage.init_from)
    if cfg.stage.time_embedding_std:
        generator = torch.Generator().manual_seed(cfg.model.seed)
        with torch.no_grad():
            model.video.pos_time.normal_(0.0, cfg.stage.time_embedding_std, generator=generator)
    temperature = cfg.loss.temperature or (SIGMOID_TEMPERATURE if cfg.loss.kind == "sigmoid" else None)
    if temperature is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / temperature))
    set_trainable(model, cfg.stage.trainable_layers, cfg.stage.train_text, cfg.loss.learn_temperature)
    objective = Objective(model, cfg.loss.kind, cfg.loss.bias, proc.world > 1).to(proc.device).train()
    optimizer, names = make_optimizer(objective, cfg.optim)
    extra = {"bias": objective.bias} if objective.bias is not None else {}
    runner: nn.Module = objective
    if proc.world > 1:
        ids = [proc.device.index] if proc.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(objective, device_ids=ids)

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
    trainable = [p for p in objective.parameters() if p.requires_grad]
    accum, t_frames = cfg.optim.grad_accum, cfg.model.tubelet[0]
    clips_per_step = cfg.optim.batch_size * accum * proc.world

    with contextlib.closing(batches), run_files.training_loop(out, cfg, total, start, elapsed_before, proc.main) as loop:
        for step in range(start, total):
            lr = lr_at(step, total, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(accum):
                frames, choices, index = next(batches)
                video = preprocess(frames.numpy(), cfg.model.image_size, t_frames, proc.device)
                seed = draw_seed(cfg.seed, proc.rank, step * accum + micro)
                captions = batching.batch_texts(choices, index, cfg.loss.captions, f"{cfg.seed}:{step}")
                rng = random.Random(seed)
                ids = (caption_sets(choices, proc.device), caption_ids(captions, proc.device))
                if cfg.data.word_dropout:
                    captions = [batching.drop_words(c, cfg.data.word_dropout, rng) for c in captions]
                tokens = {k: v.to(proc.device) for k, v in model.text.tokenize(captions).items()}
                generator = mask_rng(seed)  # numpy: the JAX trainer draws the same shifts, then masks
                if cfg.data.shift_text_positions:
                    tokens["shift"] = shifted_positions(tokens["mask"], model.text.length, generator)
                extra_texts = (
                    order_negatives(captions, seed, proc.device, model.text.tokenize)
                    if cfg.loss.order_negatives
                    else ()
                )
                sync = micro == accum - 1 or proc.world == 1
                with contextlib.nullcontext() if sync else runner.no_sync():
                    with autocast:
                        loss = runner(video, tokens, generator, *ids, *extra_texts)
                    (loss / accum).backward()
                loop.window.append(float(loss.detach()))
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            done = step + 1
            temperature = float(torch.exp(-model.logit_scale.detach()))
            if loop.step_done(done, lr, clips_per_step, accum, temperature=temperature):
                if proc.main:
                    ckpt.save_weights(model, run_files.weights_path(out, done), cfg.model)
                    ckpt.save_state(run_files.state_path(out, done), optimizer, names, extra, loop.checkpoint_meta(done))
                    loop.prune()
                proc.barrier()

    if proc.main:
        ckpt.save_weights(model, final, cfg.model, contrastive_summary(cfg, total))
    proc.barrier()
    return final
