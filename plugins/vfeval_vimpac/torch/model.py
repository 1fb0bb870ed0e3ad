"""The VIMPAC transformer (Tan et al. 2021, "VIMPAC: Video Pre-Training via Masked Token Prediction and
Contrastive Learning") in torch; ``jax/model.py`` is its block-for-block twin under the same tensor names.

Input: a clip's codes ``int [B, T, H, W]`` (one token map per frame, ``vfeval_vimpac/tokenizer.py``),
masked ones replaced by the [MASK] id ``vocab`` (``vfeval_vimpac/masking.py``). Each code is embedded,
a temporal and a spatial position embedding are added, a [CLS] token goes first, and pre-LN blocks (the
videofirst encoder's ``Block``, so the backbone is the same size and the same code) run over the whole
sequence. Two heads read the final features:

- the masked-token head (BERT's ``BertLMPredictionHead``, as the reference): dense, GELU, LayerNorm, then
  the code embeddings (tied, the [MASK] row left out) plus a bias → logits over the ``vocab`` codes;
- the [CLS] head: a two-layer MLP (Linear, ReLU, Linear) to ``proj_dim``, for the contrastive loss. The
  reference's head has 4096 hidden units and BatchNorm; here it is ``width`` wide without BatchNorm, so
  that a sample's features never depend on the others in its batch (and two processes equal one).

Tensor names (``D`` width, ``V`` vocab): ``token.weight [V + 1, D]``, ``cls [D]``, ``pos_time [T, D]``,
``pos_space [H * W, D]``, ``blocks.<i>.*`` (as ``vfeval_videofirst/checkpoint.py``'s video blocks),
``ln_post.*``, ``mlm.dense.*``, ``mlm.ln.*``, ``mlm.bias [V]``, ``head.fc1.*``, ``head.fc2.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from vfeval_videofirst.torch.model import Block, init_weights, resample_time


class MlmHead(nn.Module):
    def __init__(self, width: int, vocab: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """x ``[..., D]``, table the code embeddings ``[V, D]`` → logits ``[..., V]``."""
        return self.ln(F.gelu(self.dense(x))) @ table.T + self.bias


class ClsHead(nn.Module):
    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class Vimpac(nn.Module):
    """Codes ``[B, T, H, W]`` → features, masked-token logits and the projected [CLS]."""

    def __init__(
        self, *, width: int, depth: int, heads: int, mlp: int, vocab: int, grid: tuple[int, int, int], proj_dim: int
    ) -> None:
        super().__init__()
        nt, nh, nw = grid
        self.vocab = vocab
        self.token = nn.Embedding(vocab + 1, width)  # the codes, then [MASK]
        self.cls = nn.Parameter(torch.zeros(width))
        self.pos_time = nn.Parameter(torch.zeros(nt, width))
        self.pos_space = nn.Parameter(torch.zeros(nh * nw, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp, "gelu") for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)
        self.mlm = MlmHead(width, vocab)
        self.head = ClsHead(width, proj_dim)
        self.apply(init_weights)
        for p in (self.cls, self.pos_time, self.pos_space):
            nn.init.trunc_normal_(p, std=0.02)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``int [B, T, H, W]`` → ``[B, 1 + T * H * W, D]`` after the final norm, [CLS] first."""
        b, nt, nh, nw = codes.shape
        if nh * nw != self.pos_space.shape[0]:
            raise ValueError(f"token maps of {nh}x{nw}; the model was built for {self.pos_space.shape[0]} positions")
        x = self.token(codes.long()).reshape(b, nt, nh * nw, -1)
        x = (x + self.pos_space + resample_time(self.pos_time, nt)[:, None]).flatten(1, 2)
        x = torch.cat([self.cls.expand(b, 1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``int [B, T, H, W]`` → (projected [CLS] ``[B, proj_dim]``, logits ``[B, T * H * W, vocab]``)."""
        x = self.features(codes)
        return self.head(x[:, 0]), self.mlm(x[:, 1:], self.token.weight[: self.vocab])

    def embed(self, codes: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """The feature a probe reads: the final [CLS] (``cls``) or the mean of the tokens (``mean``), ``[B, D]``."""
        x = self.features(codes)
        return x[:, 0] if pool == "cls" else x[:, 1:].mean(1)
