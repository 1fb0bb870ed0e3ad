"""``vqvae``: trains the small VQ-VAE tokenizer (van den Oord et al. 2017) that VIMPAC can read its videos with.

Every frame of the training clips is an image: the encoder (``tokenizer.py``: three 4x4 convolutions of
stride 2, then 1x1 to the code size) maps it to an ``S/8 x S/8`` grid of vectors, each replaced by its
nearest codebook row; the decoder (1x1, then three 4x4 transposed convolutions of stride 2) rebuilds the
frame from them, with the straight-through gradient. Loss: ``||x - x'||^2 + ||sg[z] - e||^2 + beta ||z - sg[e]||^2``.
The codebook starts as encoder outputs of the first batch's frames (so no code starts unreachable), and a
code that falls out of use (``usage``, a running mean of how often each code is chosen per batch, below
``DEAD``) is restarted at an encoder output of the current batch after the update (Dhariwal et al. 2020,
"Jukebox"): without it the few codes that win early take every frame and the rest never move.

The run folder, optimizer, processes and exact resume are the videofirst trainer's (``run_files.py``,
``torch/state.py``); ``final.safetensors`` (and each resumable ``step-*.safetensors``) is a tokenizer file
of kind ``vqvae`` (``vfeval_vimpac/tokenizer.py``), ready for ``model.tokenizer`` of the ``vimpac`` recipe.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from vfeval_videofirst import run_files
from vfeval_videofirst.data import ClipReader, Schedule
from vfeval_videofirst.torch import state as ckpt
from vfeval_videofirst.torch.encoder import load_tensors
from vfeval_videofirst.torch.train import Proc, _cpu_threads, lr_at, make_optimizer, start_processes

from vfeval.captions import read_captions
from vfeval.config import to_dict
from vfeval_vimpac import tokenizer as files
from vfeval_vimpac.config import VqvaeTrainConfig
from vfeval_vimpac.tokenizer import VQVAE_LAYERS
from vfeval_vimpac.torch.tokenizer import nearest, resize, vqvae_latents

DEAD = 0.03
"""A code chosen less often than this per batch (running mean, decay ``USAGE_DECAY``) is restarted."""
USAGE_DECAY = 0.9


class VQVAE(nn.Module):
    """Encoder ``enc.<i>``, codebook, decoder ``dec.<i>``: the names of a ``vqvae`` tokenizer file."""

    def __init__(self, codes: int, code_dim: int, hidden: int) -> None:
        super().__init__()
        widths = [3, hidden, hidden, hidden]
        self.enc = nn.ModuleList(
            [nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1) for i in range(VQVAE_LAYERS - 1)]
            + [nn.Conv2d(hidden, code_dim, 1)]
        )
        self.codebook = nn.Parameter(torch.empty(codes, code_dim).uniform_(-1 / codes, 1 / codes))
        self.register_buffer("usage", torch.ones(codes))
        self.latest: torch.Tensor | None = None
        self.dec = nn.ModuleList(
            [nn.Conv2d(code_dim, hidden, 1)]
            + [nn.ConvTranspose2d(hidden, hidden if i < 2 else 3, 4, stride=2, padding=1) for i in range(3)]
        )

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """The tokenizer's own arithmetic (``torch/tokenizer.py``), on this module's parameters."""
        return vqvae_latents({f"enc.{i}.{p}": getattr(conv, p) for i, conv in enumerate(self.enc) for p in ("weight", "bias")}, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dec[0](z)
        for layer in self.dec[1:]:
            h = layer(F.relu(h))
        return h + 0.5

    def forward(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x ``[N, 3, S, S]`` in [0, 1] → (loss, its parts and the codes' perplexity)."""
        z = self.latents(x)
        idx = nearest(z, self.codebook)
        q = self.codebook[idx].permute(0, 3, 1, 2)
        codebook = F.mse_loss(q, z.detach())
        commit = F.mse_loss(z, q.detach())
        recon = F.mse_loss(self.decode(z + (q - z).detach()), x)
        counts = torch.bincount(idx.flatten(), minlength=len(self.codebook)).float()
        if self.training:
            with torch.no_grad():
                self.usage.mul_(USAGE_DECAY).add_((1 - USAGE_DECAY) * counts)
            self.latest = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
        loss = recon + codebook + beta * commit
        return loss, {"recon": recon.detach(), "commit": commit.detach(), "perplexity": perplexity}


@torch.no_grad()
def restart_dead_codes(model: VQVAE, seed: int, step: int, world: int) -> int:
    """Move the codes out of use to encoder outputs of the latest batch (drawn from ``(seed, step)``); under
    DDP process 0's choice is sent to every process. Returns how many codes moved."""
    dead = (model.usage < DEAD).nonzero().flatten()
    if len(dead) and model.latest is not None:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        pick = torch.randint(len(model.latest), (len(dead),), generator=generator).to(model.latest.device)
        model.codebook[dead] = model.latest[pick]
        model.usage[dead] = 1.0
    if world > 1:
        torch.distributed.broadcast(model.codebook.data, 0)
        torch.distributed.broadcast(model.usage, 0)
    return len(dead)


def frames_of(clips: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """``uint8 [B, T, H, W, 3]`` → ``[B * T, 3, size, size]`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    return resize(x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2).float() / 255.0, size)


def save(model: VQVAE, path: Path, cfg: VqvaeTrainConfig) -> None:
    arrays = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    config = {"codes": cfg.model.codes, "code_dim": cfg.model.code_dim, "hidden": cfg.model.hidden, "image_size": cfg.model.image_size}
    run_files.atomic(path, lambda tmp: files.save(arrays, tmp, "vqvae", config))


def train(cfg: VqvaeTrainConfig) -> str:
    pairs = read_captions(cfg.data.captions)
    proc = start_processes(cfg.model.device)
    try:
        with _cpu_threads(proc.device):
            return str(_train(cfg, pairs, proc))
    finally:
        if proc.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: VqvaeTrainConfig, pairs: list, proc: Proc) -> Path:
    out = cfg.out_path()
    final = out / run_files.FINAL
    snapshot = to_dict(cfg)
    finished, resume_from = run_files.resume_point(out, snapshot, cfg.resume)
    if finished:
        return final
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.model.seed)
        model = VQVAE(cfg.model.codes, cfg.model.code_dim, cfg.model.hidden).to(proc.device)
    optimizer, names = make_optimizer(model, cfg.optim)
    schedule = Schedule(len(pairs), cfg.optim.batch_size, cfg.optim.grad_accum, cfg.seed, proc.rank, proc.world)
    total = cfg.optim.steps or cfg.optim.epochs * schedule.steps_per_epoch
    start, elapsed_before = 0, 0.0
    reader = ClipReader(pairs, cfg.data.sampling, cfg.data.cache, cfg.data.num_workers)
    batches = reader.micro_batches(schedule, 0 if resume_from is None else resume_from)
    size = cfg.model.image_size
    if resume_from is not None:
        from safetensors.torch import load_file

        load_tensors(model, load_file(str(run_files.weights_path(out, resume_from))), out)
        meta = ckpt.load_state(run_files.state_path(out, resume_from), optimizer, names, {})
        start, elapsed_before = int(meta["step"]), float(meta["elapsed"])
    else:  # the codebook from encoder outputs of the first batch (DDP then broadcasts rank 0's)
        with torch.no_grad():
            first, _, _ = next(ClipReader(pairs, cfg.data.sampling).micro_batches(schedule, 0))
            z = model.latents(frames_of(first, size, proc.device)).permute(0, 2, 3, 1).reshape(-1, cfg.model.code_dim)
            pick = torch.randint(len(z), (cfg.model.codes,), generator=torch.Generator().manual_seed(cfg.model.seed))
            model.codebook.copy_(z[pick.to(z.device)])
    runner: nn.Module = model
    if proc.world > 1:
        runner = nn.parallel.DistributedDataParallel(model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)

    if proc.main:
        run_files.open_run(out, snapshot, start)
    proc.barrier()

    accum = cfg.optim.grad_accum
    clips_per_step = cfg.optim.batch_size * accum * proc.world
    with contextlib.closing(batches), run_files.training_loop(out, cfg, total, start, elapsed_before, proc.main) as loop:
        for step in range(start, total):
            lr = lr_at(step, total, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for k in range(accum):
                clips, _, _ = next(batches)
                sync = k == accum - 1 or proc.world == 1
                with contextlib.nullcontext() if sync else runner.no_sync():
                    loss, parts = runner(frames_of(clips, size, proc.device), cfg.loss.beta)
                    (loss / accum).backward()
                loop.window.append({"loss": float(loss.detach()), "restarted": 0, **{n: float(v) for n, v in parts.items()}})
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(list(model.parameters()), cfg.optim.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loop.window[-1]["restarted"] = restart_dead_codes(model, cfg.seed, step, proc.world)
            done = step + 1
            if loop.step_done(done, lr, clips_per_step, accum):
                if proc.main:
                    save(model, run_files.weights_path(out, done), cfg)
                    ckpt.save_state(run_files.state_path(out, done), optimizer, names, {}, loop.checkpoint_meta(done))
                    loop.prune()
                proc.barrier()
    if proc.main:
        save(model, final, cfg)
    proc.barrier()
    return final
