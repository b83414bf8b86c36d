"""LLaMA-2 with M2UGen's bias tuning, rank-16 LoRA, per-head tanh gates and prefix injection.

Module and parameter names follow Meta's LLaMA and the official M2UGen state dict
(``llama.layers.N.attention.wq`` ...), so official checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) computed in fp32, cast back, times a learned weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight
