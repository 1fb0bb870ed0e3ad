"""VIMPAC's two losses in torch; ``jax/losses.py`` holds their twins, value for value.

- Masked-token prediction: cross-entropy of the masked tokens' codes, averaged over the masked tokens of
  the global batch (the reference's ``CrossEntropyLoss`` with the other labels set to -100).
- Contrastive: SimCLR's NT-Xent between the [CLS] projections of a video's two clips, as the reference's
  ``DistributedNCELoss`` (features L2-normalised, temperature 0.2, each clip against both clips of every
  other video, the loss multiplied by the temperature).

Across processes both are losses of the global batch: the per-token sums and the projections are
gathered with ``vfeval_videofirst.torch.losses.gather`` (every process computes the global loss; its
own rows carry the gradient, scaled so that DDP's averaging leaves the global loss's gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vfeval_videofirst.torch.losses import gather

LARGE = 1e9
"""What the reference subtracts from a clip's similarity with itself."""


def mlm_loss(logits: torch.Tensor, codes: torch.Tensor, masked: torch.Tensor, distributed: bool) -> torch.Tensor:
    """logits ``[B, N, V]``, codes ``[B, N]``, masked ``bool [B, N]`` → the mean cross-entropy over masked tokens."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten().long(), reduction="none")
    total = (ce * masked.flatten().float()).sum()[None]
    count = masked.sum().float()[None]
    if distributed:
        total, count = gather(total), gather(count)
    return total.sum() / count.sum().clamp(min=1)


def nce_loss(first: torch.Tensor, second: torch.Tensor, temperature: float, distributed: bool) -> torch.Tensor:
    """first, second ``[B, P]``: the projections of each video's two clips → NT-Xent x temperature."""
    a, b = F.normalize(first.float(), dim=-1), F.normalize(second.float(), dim=-1)
    if distributed:
        a, b = gather(a), gather(b)
    n = len(a)
    self_mask = torch.eye(n, device=a.device) * LARGE
    labels = torch.arange(n, device=a.device)
    ab, ba = a @ b.T / temperature, b @ a.T / temperature
    aa, bb = a @ a.T / temperature - self_mask, b @ b.T / temperature - self_mask
    loss = F.cross_entropy(torch.cat([ab, aa], 1), labels) + F.cross_entropy(torch.cat([ba, bb], 1), labels)
    return loss * temperature


def vimpac_loss(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    codes: torch.Tensor,
    masked: torch.Tensor,
    cfg,
    distributed: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """inputs, codes ``[B, 2, T, H, W]`` (corrupted and true codes of each video's two clips), masked
    ``bool`` of the same shape → (weighted total, its parts). ``cfg`` is the ``loss`` section."""
    b = inputs.shape[0]
    flat = inputs.transpose(0, 1).flatten(0, 1)  # [2B, ...]: every first clip, then every second (the reference's order)
    proj, logits = model(flat)
    target = codes.transpose(0, 1).flatten(0, 1).flatten(1)
    where = masked.transpose(0, 1).flatten(0, 1).flatten(1)
    mlm = mlm_loss(logits, target, where, distributed)
    nce = nce_loss(proj[:b], proj[b:], cfg.temperature, distributed)
    return cfg.mlm_weight * mlm + cfg.nce_weight * nce, {"mlm": mlm.detach(), "nce": nce.detach()}
