"""Contrastive losses of the trainer, the gathering of embeddings across processes, and order negatives.

- InfoNCE (CLIP, Radford et al. 2021): softmax cross-entropy over the batch, both ways, learned temperature.
- Sigmoid (SigLIP, Zhai et al. 2023): every (video, text) pair a binary problem, learned temperature and bias.
- Order negatives: a caption that lists events with temporal connectives ("..., then ...") is rewritten
  with its events in another order: the same words, so only the order tells it from the true caption.
  Videos must prefer their caption over such rewrites (of theirs and of every other caption in the
  batch). Without them nothing in a batch asks for order: captions that list the same events in another
  order almost never meet, and a bag of events tells every pair apart. Hard negative captions made by
  rearranging a caption are NegCLIP's (Yuksekgonul et al. 2023, "When and why vision-language models
  behave like bags-of-words"); here only whole clauses move, between the connectives, so a rewrite reads
  like any other caption and grammar gives it away to no one.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

CONNECTIVES = re.compile(
    r"(,\s+(?:and\s+)?then\s+|,\s+after that,?\s+|,\s+followed by\s+|\.\s+then,?\s+|;\s+(?:and\s+)?then\s+)",
    re.IGNORECASE,
)
"""Where a caption is cut into events: ", then", ", and then", ", after that", ", followed by", ". Then", "; then"."""


def reorder(caption: str, rng: random.Random) -> str | None:
    """``caption`` with its clauses (the text between temporal connectives) in another order, connectives
    kept in place; None when it lists fewer than two different events."""
    body = caption.rstrip(".!? ")
    end = caption[len(body) :]  # the final stop stays at the end
    parts = CONNECTIVES.split(body)
    clauses, joints = parts[0::2], parts[1::2]
    if len(set(clauses)) < 2:
        return None
    capital = caption[:1].isupper()
    if capital:
        clauses = [c[:1].lower() + c[1:] for c in clauses]
    order = list(range(len(clauses)))
    while [clauses[i] for i in order] == clauses:
        rng.shuffle(order)
    out = clauses[order[0]] + "".join(j + clauses[i] for j, i in zip(joints, order[1:]))
    return (out[:1].upper() + out[1:] if capital else out) + end


def infonce(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over matching pairs. video, text: ``[B, E]`` → scalar.

    ``negatives`` ``[N, E]`` are extra texts that compete as captions of every video (video→text only);
    ``valid`` ``[N]`` bool marks the rows that are real negatives.
    """
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scale = logit_scale.exp()
    logits = scale * video @ text.T  # [B, B], matches on the diagonal
    target = torch.arange(len(logits), device=logits.device)
    to_video = F.cross_entropy(logits.T, target)
    if negatives is not None:
        extra = scale * video @ F.normalize(negatives, dim=-1).T  # [B, N]
        if valid is not None:
            extra = extra.masked_fill(~valid[None, :], float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return (F.cross_entropy(logits, target) + to_video) / 2


def sigmoid_loss(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    bias: torch.Tensor,
    negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise logistic loss, summed over pairs and divided by B. video, text: ``[B, E]`` → scalar.

    ``negatives`` ``[N, E]`` (rows marked by ``valid``) add ``B x N`` pairs that are all non-matching.
    """
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scale = logit_scale.exp()
    logits = scale * video @ text.T + bias  # [B, B]
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
    loss = -F.logsigmoid(signs * logits).sum()
    if negatives is not None:
        extra = -F.logsigmoid(-(scale * video @ F.normalize(negatives, dim=-1).T + bias))  # [B, N]
        loss = loss + (extra if valid is None else extra * valid[None, :]).sum()
    return loss / len(logits)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def gather(x: torch.Tensor) -> torch.Tensor:
    """``[b, ...]`` of every process → ``[world * b, ...]``, in rank order.

    Only this process's rows carry gradient. Every process computes the same global loss, so the
    gradient of its own rows is exact; DDP then averages parameter gradients over the processes, which
    the factor ``world`` undoes, leaving the gradient of the global loss. Rows without gradient (masks)
    are gathered as they are.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    if x.requires_grad:
        parts[rank] = _ScaleGrad.apply(x, float(world))
    return torch.cat(parts)
