"""LLaMA-2 with M2UGen's bias tuning, rank-16 LoRA, per-head tanh gates and prefix injection.

Module and parameter names follow Meta's LLaMA and the official M2UGen state dict
(``llama.layers.N.attention.wq`` ...), so official checkpoints load without renaming.

Differences from the official code (behaviour-preserving except where noted):
- the KV cache is allocated per generation (``setup_cache``) for the real batch and length, on the
  model's device and dtype; ``start_pos`` is honoured, so decoding is one token per step;
- left padding: ``key_valid`` marks real tokens, positions count real tokens only (RoPE), so a padded
  row computes what it would compute alone;
- a prefix-only adapter ([1, 1, dim]) broadcasts over the batch (the official code needs batch 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


# ----------------------------------------------------------------------------------------------
# Rotary embeddings (Meta convention: interleaved pairs (x0, x1), (x2, x3), ...)


def precompute_freqs_cis(head_dim: int, end: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """complex64 [end, head_dim // 2]: exp(i * pos * theta^(-2k / head_dim))."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    t = torch.arange(end, device=device, dtype=torch.float32)
    angles = torch.outer(t, freqs)  # [end, head_dim // 2]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x [B, L, H, hd]; freqs_cis [B, L, hd // 2] complex -> x rotated, same dtype."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # [B, L, H, hd/2]
    out = torch.view_as_real(xc * freqs_cis.unsqueeze(2)).flatten(3)
    return out.type_as(x)


def permute_meta_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder wq/wk rows (or their bias) from Meta's interleaved RoPE pairs to HF's rotate-half halves.

    Within each head, Meta row 2i / 2i+1 (pair i) become HF rows i / i + head_dim/2.
    """
    rows = w.shape[0]
    head_dim = rows // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest)


def permute_hf_to_meta(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of ``permute_meta_to_hf``: HF (rotate-half) wq/wk rows -> Meta interleaved rows."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(rows, *rest)


# ----------------------------------------------------------------------------------------------


class KVCache(nn.Module):
    """Keys/values of one layer: [B, max_len, H, hd]. Not part of the state dict."""

    def __init__(self, batch: int, max_len: int, n_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, max_len, n_heads, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # wv(adapter) of this generation's adapter (the adapter is fixed while decoding)
        self.adapter_src: torch.Tensor | None = None
        self.adapter_v: torch.Tensor | None = None

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Write k/v [B, L, H, hd] at start_pos; return all keys/values so far [B, start_pos + L, H, hd]."""
        end = start_pos + k.shape[1]
        if end > self.k.shape[1]:
            raise ValueError(f"KV cache holds {self.k.shape[1]} positions, asked to write up to {end}")
        self.k[:, start_pos:end] = k
        self.v[:, start_pos:end] = v
        return self.k[:, :end], self.v[:, :end]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dim, self.n_heads = cfg.dim, cfg.n_heads
        self.head_dim = dim // cfg.n_heads
        self.w_lora = cfg.w_lora
        self.wq = nn.Linear(dim, dim, bias=cfg.w_bias)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=cfg.w_bias)
        if cfg.w_lora:
            r = cfg.lora_rank
            for name in ("q", "k", "v", "o"):
                setattr(self, f"lora_w{name}_l1", nn.Linear(dim, r, bias=False))
                setattr(self, f"lora_w{name}_l2", nn.Linear(r, dim, bias=False))
        self.gate = nn.Parameter(torch.zeros(1, self.n_heads, 1, 1))
        self.cache: KVCache | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Official init: biases and LoRA l2 start at zero (the module is then an exact LLaMA)."""
        for lin in (self.wq, self.wo):
            if lin.bias is not None:
                lin.bias.zero_()
        if self.w_lora:
            for name in ("q", "k", "v", "o"):
                getattr(self, f"lora_w{name}_l2").weight.zero_()

    def _adapter_values(self, adapter: torch.Tensor) -> torch.Tensor:
        """wv(adapter) (base wv only, as official); computed once per generation when a cache is set."""
        c = self.cache
        if c is None:
            return self.wv(adapter.to(self.wv.weight.dtype))
        if c.adapter_src is not adapter:
            c.adapter_src, c.adapter_v = adapter, self.wv(adapter.to(self.wv.weight.dtype))
        return c.adapter_v

    def _lora(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"lora_w{name}_l2")(getattr(self, f"lora_w{name}_l1")(x))

    def forward(
        self,
        x: torch.Tensor,  # [B, L, dim]
        freqs_cis: torch.Tensor,  # [B, L, hd/2] complex
        mask: torch.Tensor,  # [B, 1, L, S] bool, True = attend
        start_pos: int,
        adapter: torch.Tensor | None = None,  # [B or 1, La, dim]
    ) -> torch.Tensor:
        B, L, _ = x.shape
        H, hd = self.n_heads, self.head_dim
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
        if self.w_lora:
            xq = xq + self._lora("q", x)
            xk = xk + self._lora("k", x)
            xv = xv + self._lora("v", x)
        xq = apply_rotary_emb(xq.view(B, L, H, hd), freqs_cis)
        xk = apply_rotary_emb(xk.view(B, L, H, hd), freqs_cis)
        xv = xv.view(B, L, H, hd)

        if self.cache is not None:
            keys, values = self.cache.update(start_pos, xk, xv)  # [B, S, H, hd]
        else:
            if start_pos != 0:
                raise ValueError("start_pos > 0 needs a KV cache (call setup_cache first)")
            keys, values = xk, xv

        q = xq.transpose(1, 2)  # [B, H, L, hd]
        k = keys.transpose(1, 2)  # [B, H, S, hd]
        v = values.transpose(1, 2)
        # softmax(q k^T / sqrt(hd) + mask) v in one fused kernel (softmax accumulated in fp32)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, hd]

        if adapter is not None:
            ab, la, _ = adapter.shape
            gate = torch.tanh(self.gate).to(out.dtype)  # [1, H, 1, 1]
            adapter_v = self._adapter_values(adapter).view(ab, la, H, hd).transpose(1, 2)  # [ab, H, La, hd]
            if la == 1:
                # official: the same per-head vector is added to every position
                out = out + gate * adapter_v
            else:
                adapter_k = self.wk(adapter.to(self.wk.weight.dtype)).view(ab, la, H, hd).transpose(1, 2)
                a_scores = torch.matmul(q, adapter_k.transpose(2, 3)) / math.sqrt(hd)  # [B, H, L, La]
                a_probs = F.softmax(a_scores.float(), dim=-1).type_as(q)
                out = out + torch.matmul(gate * a_probs, adapter_v)

        out = out.transpose(1, 2).reshape(B, L, H * hd)
        o = self.wo(out)
        if self.w_lora:
            o = o + self._lora("o", out)
        return o


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dim, hidden = cfg.dim, cfg.ffn_hidden_dim
        self.w_lora = cfg.w_lora
        self.w1 = nn.Linear(dim, hidden, bias=cfg.w_bias)
        self.w2 = nn.Linear(hidden, dim, bias=cfg.w_bias)
        self.w3 = nn.Linear(dim, hidden, bias=cfg.w_bias)
        if cfg.w_lora:
            r = cfg.lora_rank
            self.lora_w1_l1 = nn.Linear(dim, r, bias=False)
            self.lora_w1_l2 = nn.Linear(r, hidden, bias=False)
            self.lora_w2_l1 = nn.Linear(hidden, r, bias=False)
            self.lora_w2_l2 = nn.Linear(r, dim, bias=False)
            self.lora_w3_l1 = nn.Linear(dim, r, bias=False)
            self.lora_w3_l2 = nn.Linear(r, hidden, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        for lin in (self.w1, self.w2, self.w3):
            if lin.bias is not None:
                lin.bias.zero_()
        if self.w_lora:
            for i in (1, 2, 3):
                getattr(self, f"lora_w{i}_l2").weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1, h3 = self.w1(x), self.w3(x)
        if self.w_lora:
            h1 = h1 + self.lora_w1_l2(self.lora_w1_l1(x))
            h3 = h3 + self.lora_w3_l2(self.lora_w3_l1(x))
        h = F.silu(h1) * h3
        out = self.w2(h)
        if self.w_lora:
            out = out + self.lora_w2_l2(self.lora_w2_l1(h))
        return out


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, cfg):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, freqs_cis, mask, start_pos, adapter=None):
        h = x + self.attention(self.attention_norm(x), freqs_cis, mask, start_pos, adapter)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """LLaMA-2 stack. ``forward`` returns (fp32 logits, last-layer pre-norm hidden states)."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("Transformer needs cfg.vocab_size > 0 (fill it from the tokenizer first)")
        if cfg.dim % cfg.n_heads != 0 or (cfg.dim // cfg.n_heads) % 2 != 0:
            raise ValueError(f"dim {cfg.dim} must split into {cfg.n_heads} heads of even size")
        self.cfg = cfg
        self.n_layers = cfg.n_layers
        self.head_dim = cfg.dim // cfg.n_heads
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, cfg) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # complex RoPE table: a plain attribute (not a buffer: absent from the state dict, never cast)
        self._freqs_cis: torch.Tensor | None = None

    # -- RoPE and caches ---------------------------------------------------------------------
    def freqs_cis(self, device) -> torch.Tensor:
        """[2 * max_seq_len, head_dim / 2] complex64 on ``device`` (computed lazily, as official)."""
        f = self._freqs_cis
        if f is None or f.device != torch.device(device) or f.is_meta:
            f = precompute_freqs_cis(self.head_dim, 2 * self.cfg.max_seq_len, self.cfg.rope_theta, device=device)
            self._freqs_cis = f
        return f

    def setup_cache(self, batch: int, max_len: int):
        """Allocate a KV cache for ``batch`` rows and ``max_len`` positions on the weights' device/dtype."""
        if self.has_cache:
            raise RuntimeError("a KV cache is already set up: another generation is running on this model "
                               "(one generation at a time per model instance)")
        w = self.tok_embeddings.weight
        for layer in self.layers:
            layer.attention.cache = KVCache(batch, max_len, self.cfg.n_heads, self.head_dim, w.dtype, w.device)

    def clear_cache(self):
        for layer in self.layers:
            layer.attention.cache = None

    @property
    def has_cache(self) -> bool:
        return self.layers[0].attention.cache is not None

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor | None = None,  # [B, L] long
        *,
        embeds: torch.Tensor | None = None,  # [B, L, dim] instead of tokens
        start_pos: int = 0,
        adapters: list[torch.Tensor | None] | None = None,  # one per layer
        key_valid: torch.Tensor | None = None,  # [B, start_pos + L] bool, False = left padding
        logits_for: str = "last",  # "last" -> [B, vocab]; "all" -> [B, L, vocab]; "none"
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run positions [start_pos, start_pos + L) (attending to the cache when one is set up).

        Returns (logits fp32, h) with h the last block's output before the final norm, [B, L, dim].
        """
        if (tokens is None) == (embeds is None):
            raise ValueError("pass exactly one of tokens or embeds")
        h = self.tok_embeddings(tokens) if tokens is not None else embeds.to(self.tok_embeddings.weight.dtype)
        B, L, _ = h.shape
        S = start_pos + L
        device = h.device
        if key_valid is None:
            key_valid = torch.ones(B, S, dtype=torch.bool, device=device)
        if key_valid.shape != (B, S):
            raise ValueError(f"key_valid must be [B={B}, start_pos+L={S}], got {list(key_valid.shape)}")
        if S > 2 * self.cfg.max_seq_len:
            raise ValueError(f"sequence of {S} positions exceeds the RoPE table (2 * max_seq_len)")
        key_valid = key_valid.to(device)

        # positions count real tokens only, so left padding does not shift RoPE
        positions = (key_valid.long().cumsum(-1) - 1).clamp(min=0)[:, start_pos:]  # [B, L]
        freqs = self.freqs_cis(device)[positions]  # [B, L, hd/2]

        q_pos = torch.arange(start_pos, S, device=device)
        k_pos = torch.arange(S, device=device)
        causal = k_pos[None, :] <= q_pos[:, None]  # [L, S]
        # a padded query attends to itself only, so its softmax stays finite
        mask = (causal[None] & key_valid[:, None, :]) | (k_pos[None, :] == q_pos[:, None])[None]
        mask = mask[:, None]  # [B, 1, L, S]

        if adapters is not None and len(adapters) != self.n_layers:
            raise ValueError(f"adapters must list one entry per layer ({self.n_layers}), got {len(adapters)}")
        for i, layer in enumerate(self.layers):
            a = adapters[i] if adapters is not None else None
            h = layer(h, freqs, mask, start_pos, a)

        if logits_for == "none":
            return None, h
        if logits_for == "last":
            logits = self.output(self.norm(h[:, -1]))
        elif logits_for == "all":
            logits = self.output(self.norm(h))
        else:
            raise ValueError(f"logits_for must be 'last', 'all' or 'none', got {logits_for!r}")
        return logits.float(), h


def build_adapters(
    cfg,
    prefix_query: torch.Tensor,  # [n_prefix, dim]
    audio_feats: torch.Tensor | None = None,  # [B, 1, dim]
    image_feats: torch.Tensor | None = None,
    video_feats: torch.Tensor | None = None,
) -> list[torch.Tensor | None]:
    """Per-layer adapters, official layout.

    Per-modality (prefix_query has 3 * query_layer rows): the top 3*q layers get, in order, audio,
    image, video: ``feature + prefix_query[i]`` or ``prefix_query[i]`` alone when that modality is
    absent. Legacy (prefix_query has cfg.legacy_prefix_layers rows): the summed features (zeros if
    none) + prefix_query[i] into the top legacy_prefix_layers layers. Lower layers get None.
    Each adapter is [B or 1, 1, dim].
    """
    n_rows, dim = prefix_query.shape
    adapters: list[torch.Tensor | None] = [None] * cfg.n_layers
    pq = prefix_query.reshape(n_rows, 1, 1, dim)  # entry i: [1, 1, dim]
    feats = [audio_feats, image_feats, video_feats]
    for f in feats:
        if f is not None and (f.dim() != 3 or f.shape[1:] != (1, dim)):
            raise ValueError(f"modality features must be [B, 1, {dim}], got {list(f.shape)}")
    if cfg.legacy_prefix:
        n = cfg.legacy_prefix_layers
        if n_rows != n or n > cfg.n_layers:
            raise ValueError(f"legacy layout needs prefix_query [{n}, dim] and >= {n} layers; "
                             f"got {n_rows} rows and {cfg.n_layers} layers")
        present = [f for f in feats if f is not None]
        summed = sum(present[1:], present[0]) if present else None
        for i in range(n):
            adapters[cfg.n_layers - n + i] = pq[i] if summed is None else summed + pq[i]
        return adapters
    q = cfg.query_layer
    if n_rows != 3 * q or 3 * q > cfg.n_layers:
        raise ValueError(f"per-modality layout needs prefix_query [{3 * q}, dim] and >= {3 * q} layers; "
                         f"got {n_rows} rows and {cfg.n_layers} layers")
    first = cfg.n_layers - 3 * q
    for m, f in enumerate(feats):
        for j in range(q):
            i = m * q + j
            adapters[first + i] = pq[i] if f is None else f + pq[i]
    return adapters
