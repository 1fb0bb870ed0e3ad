"""Contrastive losses of the trainer, the gathering of embeddings across processes, and order negatives.

- InfoNCE (CLIP, Radford et al. 2021): softmax cross-entropy over the batch, both ways, learned temperature.
- Sigmoid (SigLIP, Zhai et al. 2023): every (video, text) pair a binary problem, learned temperature and bias.
- Order negatives: the rewrites of ``vfeval_videofirst.batching.reorder`` (shared with the JAX trainer)
  enter both losses as extra texts that compete as captions of every video.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def infonce(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE. video ``[B, E]``, text ``[K, E]`` → scalar.

    ``positives`` ``[B, K]`` bool marks which texts are captions of which video (None: the diagonal,
    CLIP's one caption per video). A text that is a caption of several videos in the batch ("the last
    shape to appear was blue") is no negative for any of them: every positive pair is scored against
    the negatives of its row (video → text) and of its column (text → video) only, and the loss is the
    mean over positive pairs of both. With one caption per video this is exactly CLIP's loss.

    ``negatives`` ``[N, E]`` are extra texts that compete as captions of every video (video → text
    only); ``valid`` ``[N]`` or ``[B, N]`` bool marks where they are real negatives.
    """
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scale = logit_scale.exp()
    logits = scale * video @ text.T  # [B, K]
    if positives is None:
        positives = torch.eye(len(video), len(text), dtype=torch.bool, device=logits.device)
    extra = None
    if negatives is not None:
        extra = scale * video @ F.normalize(negatives, dim=-1).T  # [B, N]
        if valid is not None:
            extra = extra.masked_fill(~(valid if valid.dim() == 2 else valid[None, :]), float("-inf"))
    to_text = _positive_pairs_loss(logits, positives, extra)
    to_video = _positive_pairs_loss(logits.T, positives.T, None)
    return (to_text + to_video) / 2


def _positive_pairs_loss(logits: torch.Tensor, positives: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """Mean over positive pairs (i, k) of ``-log(exp(l_ik) / (exp(l_ik) + sum of exp over row i's negatives))``."""
    negatives = logits.masked_fill(positives, float("-inf"))
    if extra is not None:
        negatives = torch.cat([negatives, extra], dim=1)
    rest = torch.logsumexp(negatives, dim=1, keepdim=True)  # [B, 1]; -inf for a row without negatives
    per_pair = torch.logaddexp(logits, rest) - logits
    return per_pair[positives].mean()


def sigmoid_loss(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    bias: torch.Tensor,
    positives: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise logistic loss, summed over pairs and divided by B. video ``[B, E]``, text ``[K, E]``
    → scalar.

    ``positives`` ``[B, K]`` bool marks the matching pairs (None: the diagonal); every other pair is a
    non-match. ``negatives`` ``[N, E]`` (where ``valid``, ``[N]`` or ``[B, N]``) add non-matching pairs.
    """
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scale = logit_scale.exp()
    logits = scale * video @ text.T + bias  # [B, K]
    if positives is None:
        positives = torch.eye(len(video), len(text), dtype=torch.bool, device=logits.device)
    signs = 2 * positives.to(logits.dtype) - 1  # +1 for matching pairs, -1 elsewhere
    loss = -F.logsigmoid(signs * logits).sum()
    if negatives is not None:
        extra = -F.logsigmoid(-(scale * video @ F.normalize(negatives, dim=-1).T + bias))  # [B, N]
        if valid is not None:
            extra = extra * (valid if valid.dim() == 2 else valid[None, :])
        loss = loss + extra.sum()
    return loss / len(video)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def gather_padded(x: torch.Tensor, fill: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``gather`` for ``[n, ...]`` whose ``n`` differs between processes: each pads to the largest ``n``
    with ``fill``. Returns the gathered rows and ``bool [world * max n]``, True for the real ones."""
    n = torch.tensor([len(x)], device=x.device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    pad = int(n) - len(x)
    real = torch.arange(int(n), device=x.device) < len(x)
    if pad:
        x = torch.cat([x, x.new_full((pad, *x.shape[1:]), fill)])
    return gather(x), gather(real.to(torch.uint8)).bool()


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
