"""Understanding bridges: encoder features -> one LLaMA-width vector per input.

Official layout (``mu_mert_*``, ``iu_vit_*``, ``iu_vivit_*`` in ``M2UGen/llama/m2ugen.py``):
Conv1d(k=1) aggregation over the layer/token axis -> L2 normalise -> Linear -> three pre-RMSNorm
SwiGLU residual blocks without biases. The top-level model holds one bridge per modality and its
loader maps ``mu_mert_agg.weight`` -> ``mu_mert.agg.weight`` and so on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2ugen.llama import RMSNorm


class UnderstandingBridge(nn.Module):
    """[B, in_tokens, in_dim] encoder features -> [B, 1, dim] adapter input for the LLaMA."""

    def __init__(self, in_tokens: int, in_dim: int, dim: int, feature_scaler: int = 1, eps: float = 1e-6):
        super().__init__()
        self.in_tokens = in_tokens
        self.in_dim = in_dim
        self.dim = dim
        hidden = dim * feature_scaler
        self.agg = nn.Conv1d(in_tokens, 1, kernel_size=1)
        self.proj = nn.Linear(in_dim, dim)
        # Attribute names match the official ``*_norm_k`` / ``*_fj_k`` keys (k = block, j = linear).
        self.norm_1 = RMSNorm(dim, eps)
        self.norm_2 = RMSNorm(dim, eps)
        self.norm_3 = RMSNorm(dim, eps)
        self.f1_1 = nn.Linear(dim, hidden, bias=False)
        self.f2_1 = nn.Linear(hidden, dim, bias=False)
        self.f3_1 = nn.Linear(dim, hidden, bias=False)
        self.f1_2 = nn.Linear(dim, hidden, bias=False)
        self.f2_2 = nn.Linear(hidden, dim, bias=False)
        self.f3_2 = nn.Linear(dim, hidden, bias=False)
        self.f1_3 = nn.Linear(dim, hidden, bias=False)
        self.f2_3 = nn.Linear(hidden, dim, bias=False)
        self.f3_3 = nn.Linear(dim, hidden, bias=False)

    def _block(self, h: torch.Tensor, k: int) -> torch.Tensor:
        norm = getattr(self, f"norm_{k}")
        f1, f2, f3 = (getattr(self, f"f{j}_{k}") for j in (1, 2, 3))
        n = norm(h)
        return h + f2(F.silu(f1(n)) * f3(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_tokens or x.shape[2] != self.in_dim:
            raise ValueError(
                f"bridge input must be [B, {self.in_tokens}, {self.in_dim}], got {list(x.shape)}"
            )
        x = x.to(self.agg.weight.dtype)
        pooled = self.agg(x).squeeze(1)  # [B, in_dim]
        pooled = F.normalize(pooled, dim=-1)
        h = self.proj(pooled.unsqueeze(1))  # [B, 1, dim]
        for k in (1, 2, 3):
            h = self._block(h, k)
        return h
