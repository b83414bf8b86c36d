"""Output projector: the LLM's [AUD0..7] hidden states -> music-decoder conditioning.

Names follow the official ``output_projector.*`` keys: ``fc`` (LLaMA dim -> d_model), ``tfm``
(a PyTorch ``nn.Transformer``, post-norm, no dropout), ``model`` (d_model -> out_dim) and the learned
decoder queries ``query_embs``. MusicGen: 128 queries x 768 (T5 space); AudioLDM2: 1 x 137216.
"""

from __future__ import annotations

import torch
from torch import nn


class OutputProjector(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_input_tokens: int = 8,
        num_output_tokens: int = 128,
        d_model: int = 512,
        nhead: int = 4,
        num_layers: int = 4,
        dim_feedforward: int = 2048,
    ):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_input_tokens = num_input_tokens
        self.num_output_tokens = num_output_tokens
        self.fc = nn.Linear(in_dim, d_model)
        self.tfm = nn.Transformer(
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=num_layers,
            num_decoder_layers=num_layers,
            dim_feedforward=dim_feedforward,
            dropout=0.0,
            batch_first=True,
            norm_first=False,
        )
        self.model = nn.Linear(d_model, out_dim)
        self.query_embs = nn.Parameter(torch.randn(1, num_output_tokens, d_model))

    def forward(self, x: torch.Tensor, input_embs: torch.Tensor) -> torch.Tensor:
        """x: last-layer hidden states [B, 8, in_dim]; input_embs: [AUD] token embeddings [B, 8, in_dim]."""
        if x.shape != input_embs.shape:
            raise ValueError(f"projector inputs differ in shape: {list(x.shape)} vs {list(input_embs.shape)}")
        if x.dim() != 3 or x.shape[2] != self.in_dim:
            raise ValueError(f"projector input must be [B, N, {self.in_dim}], got {list(x.shape)}")
        dtype = self.fc.weight.dtype
        src = self.fc((x + input_embs).to(dtype))  # [B, 8, d_model]
        tgt = self.query_embs.repeat(x.shape[0], 1, 1)  # [B, Nq, d_model]
        return self.model(self.tfm(src=src, tgt=tgt))  # [B, Nq, out_dim]
