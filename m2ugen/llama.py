"""LLaMA-2 with M2UGen's bias tuning, rank-16 LoRA, per-head tanh gates and prefix injection.

Module and parameter names follow Meta's LLaMA and the official M2UGen state dict
(``llama.layers.N.attention.wq`` ...), so official checkpoints load without renaming.

Differences from the official code (behaviour-preserving except where noted):
- the KV cache is sized for the request (its positions rounded up to ``KV_BLOCK``) rather than
  reserved at ``max_seq_len``, grows only when a generation needs more rows or positions, and is kept on
  the model's device and dtype for later generations; ``start_pos`` is honoured, so decoding is one
  token per step;
- ``decode_step`` is a single-token step of static shapes (the cache column and RoPE positions are
  tensors, the mask is built from them), so ``compile_decode`` (``torch.compile``, CUDA graphs on GPU)
  compiles it once rather than per position (gpt-fast style);
- left padding: ``key_valid`` marks real tokens, positions count real tokens only (RoPE), so a padded
  row computes what it would compute alone;
- a prefix-only adapter ([1, 1, dim]) broadcasts over the batch (the official code needs batch 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# KV cache positions are allocated in blocks of this many (a request of 60 tokens takes 256 columns,
# not max_seq_len): few distinct cache shapes for compiled decode steps, no memory held for positions
# no request has asked for (LLaMA-2 7B, bf16: 0.5 MiB per position and row)
KV_BLOCK = 256


def decode_mask(key_valid: torch.Tensor, cache_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, S] additive mask of one decode step: row b attends the valid cache columns up to its
    ``cache_pos[b]`` (additive, built once per step: CPU attention is several times slower with a bool mask
    at L = 1)."""
    k_pos = torch.arange(key_valid.shape[1], device=key_valid.device)
    attend = (key_valid & (k_pos[None, :] <= cache_pos[:, None]))[:, None, None, :]
    return torch.zeros(attend.shape, dtype=dtype, device=key_valid.device).masked_fill(~attend, float("-inf"))


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


def rope_table(freqs_cis: torch.Tensor) -> torch.Tensor:
    """The complex table as real (cos, sin) pairs: [..., head_dim // 2, 2] float32 (compile-friendly)."""
    return torch.view_as_real(freqs_cis)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x [B, L, H, hd]; freqs_cis [B, L, hd // 2] complex, or its ``rope_table`` [B, L, hd // 2, 2].

    Each pair (x0, x1) is multiplied by (cos + i sin) in real arithmetic (the same maths as the
    complex product; real tensors keep ``torch.compile`` on its fast path). Returns x's dtype.
    """
    f = rope_table(freqs_cis) if freqs_cis.is_complex() else freqs_cis
    cos, sin = f[..., 0].unsqueeze(2), f[..., 1].unsqueeze(2)  # [B, L, 1, hd/2]
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(3)
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
    """Keys/values of one layer: [max_batch, max_len, H, hd], zero-initialised. Not part of the state dict.

    A generation of B rows uses rows [:B]. Two ways to write:
    - ``start_pos`` an int (prefill, the dynamic path): positions [start_pos, start_pos + L) are written
      and the keys/values so far come back, [B, start_pos + L, H, hd];
    - ``start_pos`` a tensor [1] (``decode_step``): one column is written and the whole cache comes back,
      [B, max_len, H, hd] (static shapes; the caller's mask hides the columns not yet written).
    """

    def __init__(self, batch: int, max_len: int, n_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, max_len, n_heads, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start_pos: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        B = k.shape[0]
        if isinstance(start_pos, torch.Tensor):
            if start_pos.numel() == 1:  # one column for every row (left-padded batch)
                self.k[:B].index_copy_(1, start_pos, k)
                self.v[:B].index_copy_(1, start_pos, v)
            else:  # a column per row (continuous batching: each slot at its own position)
                rows = torch.arange(B, device=k.device)
                self.k[rows, start_pos] = k[:, 0]
                self.v[rows, start_pos] = v[:, 0]
            return self.k[:B], self.v[:B]
        end = start_pos + k.shape[1]
        if end > self.k.shape[1]:
            raise ValueError(f"KV cache holds {self.k.shape[1]} positions, asked to write up to {end}")
        self.k[:B, start_pos:end] = k
        self.v[:B, start_pos:end] = v
        return self.k[:B, :end], self.v[:B, :end]

    def rows(self, start: int, n: int, upto: int | None = None) -> "KVCache":
        """A view of rows [start, start + n) (and columns [0, upto)) sharing this cache's storage: a slot's
        prefill writes there; a decode step of rows that have written fewer columns than the cache holds
        attends to the view, not to the columns nobody has written yet."""
        view = KVCache.__new__(KVCache)
        nn.Module.__init__(view)
        view.register_buffer("k", self.k[start:start + n, :upto], persistent=False)
        view.register_buffer("v", self.v[start:start + n, :upto], persistent=False)
        return view

    @torch.no_grad()
    def keep_rows(self, rows: torch.Tensor):
        """Move rows ``rows`` (ascending indices) to the front: the batch shrinks to len(rows)."""
        n = rows.numel()
        self.k[:n] = self.k.index_select(0, rows)
        self.v[:n] = self.v.index_select(0, rows)


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

    def adapter_kv(self, adapter: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(keys or None, values) of an adapter [ab, La, dim] as [ab, H, La, hd] (base wk/wv only, as official).

        Keys are None for a one-token adapter: its value is added to every position (no softmax).
        """
        ab, la, _ = adapter.shape
        H, hd = self.n_heads, self.head_dim
        a = adapter.to(self.wv.weight.dtype)
        values = self.wv(a).view(ab, la, H, hd).transpose(1, 2)
        keys = None if la == 1 else self.wk(a).view(ab, la, H, hd).transpose(1, 2)
        return keys, values

    def _lora(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"lora_w{name}_l2")(getattr(self, f"lora_w{name}_l1")(x))

    def forward(
        self,
        x: torch.Tensor,  # [B, L, dim]
        freqs_cis: torch.Tensor,  # [B, L, hd/2] complex or its rope_table [B, L, hd/2, 2]
        mask: torch.Tensor,  # [B, 1, L, S] bool, True = attend (or additive: 0 / -inf)
        start_pos: int | torch.Tensor,  # int: dynamic write; tensor [1]: one cache column (decode_step)
        adapter: torch.Tensor | tuple | None = None,  # [B or 1, La, dim], or its adapter_kv(...)
    ) -> torch.Tensor:
        xq, xk, xv = self.project(x, freqs_cis)
        return self.project_out(self.attend(xq, xk, xv, mask, start_pos, adapter))

    def project(self, x: torch.Tensor, freqs_cis: torch.Tensor):
        """x [B, L, dim] -> (q, k, v) [B, L, H, hd], q and k rotated."""
        B, L, _ = x.shape
        H, hd = self.n_heads, self.head_dim
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
        if self.w_lora:
            xq = xq + self._lora("q", x)
            xk = xk + self._lora("k", x)
            xv = xv + self._lora("v", x)
        xq = apply_rotary_emb(xq.view(B, L, H, hd), freqs_cis)
        xk = apply_rotary_emb(xk.view(B, L, H, hd), freqs_cis)
        return xq, xk, xv.view(B, L, H, hd)

    def attend(self, xq, xk, xv, mask, start_pos, adapter=None, cache: "KVCache | None" = None) -> torch.Tensor:
        """Write (k, v) to the cache (``cache``, else the layer's), attend -> [B, L, H * hd] (before wo)."""
        B, L, H, hd = xq.shape
        cache = cache if cache is not None else self.cache
        if cache is not None:
            keys, values = cache.update(start_pos, xk, xv)  # [B, S, H, hd]
        else:
            if isinstance(start_pos, torch.Tensor) or start_pos != 0:
                raise ValueError("start_pos > 0 needs a KV cache (call setup_cache first)")
            keys, values = xk, xv

        q = xq.transpose(1, 2)  # [B, H, L, hd]
        k = keys.transpose(1, 2)  # [B, H, S, hd]
        v = values.transpose(1, 2)
        # softmax(q k^T / sqrt(hd) + mask) v in one fused kernel (softmax accumulated in fp32)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, L, hd]

        if adapter is not None:
            adapter_k, adapter_v = adapter if isinstance(adapter, tuple) else self.adapter_kv(adapter)
            gate = torch.tanh(self.gate).to(out.dtype)  # [1, H, 1, 1]
            if adapter_k is None:
                # official: the same per-head vector is added to every position
                out = out + gate * adapter_v
            else:
                a_scores = torch.matmul(q, adapter_k.transpose(2, 3)) / math.sqrt(hd)  # [B, H, L, La]
                a_probs = F.softmax(a_scores.float(), dim=-1).type_as(q)
                out = out + torch.matmul(gate * a_probs, adapter_v)
        return out.transpose(1, 2).reshape(B, L, H * hd)

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
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
        self._rope: torch.Tensor | None = None
        self._kv_store: list[KVCache] | None = None  # the kept cache (plain list: not submodules)
        self._decode_compiled = None

    # -- materialising a model built on the meta device ---------------------------------------
    def blocks(self) -> list[nn.Module]:
        """The parts that hold the weights, in order: embeddings, each layer, the final norm, the output head."""
        return [self.tok_embeddings, *self.layers, self.norm, self.output]

    @torch.no_grad()
    def materialize_(self, device, on_block=None) -> "Transformer":
        """Give a meta-built stack real tensors one block at a time (each in the dtype it was built in),
        with the official init (linears/embeddings as PyTorch's defaults, RMSNorm 1, gates 0, biases and
        LoRA l2 0); ``on_block(block)`` runs on each block before the next is made (e.g. to quantize it)."""
        for block in self.blocks():
            if not any(t.is_meta for t in block.parameters()):
                continue
            block.to_empty(device=device)
            for m in reversed(list(block.modules())):  # every module after its children
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.reset_parameters()
                elif isinstance(m, RMSNorm):
                    m.weight.fill_(1.0)
                elif isinstance(m, Attention):
                    m.gate.zero_()
                    m.reset_parameters()
                elif isinstance(m, FeedForward):
                    m.reset_parameters()
            if on_block is not None:
                on_block(block)
        return self

    # -- RoPE and caches ---------------------------------------------------------------------
    def freqs_cis(self, device) -> torch.Tensor:
        """[2 * max_seq_len, head_dim / 2] complex64 on ``device`` (computed lazily, as official)."""
        f = self._freqs_cis
        if f is None or f.device != torch.device(device) or f.is_meta:
            f = precompute_freqs_cis(self.head_dim, 2 * self.cfg.max_seq_len, self.cfg.rope_theta, device=device)
            self._freqs_cis, self._rope = f, None
        return f

    def rope(self, device) -> torch.Tensor:
        """``freqs_cis`` as real (cos, sin) pairs: [2 * max_seq_len, head_dim / 2, 2] float32."""
        f = self.freqs_cis(device)
        if self._rope is None:
            self._rope = rope_table(f).contiguous()
        return self._rope

    def setup_cache(self, batch: int, max_len: int | None = None):
        """Take the KV cache for a generation of ``batch`` rows and up to ``max_len`` positions.

        The cache is allocated for ``max_len`` positions rounded up to ``KV_BLOCK`` (``cfg.max_seq_len``
        when ``max_len`` is None) on the weights' device and dtype, and kept after ``clear_cache`` for the
        next generation; it is reallocated (larger) only when a generation needs more rows or positions,
        or the weights moved. ``reserve_cache(max_batch)`` allocates it up front. ``release_cache`` frees it.
        """
        if self.has_cache:
            raise RuntimeError("a KV cache is already set up: another generation is running on this model "
                               "(one generation at a time per model instance)")
        self.reserve_cache(batch, max_len)
        self.bind_cache()

    def bind_cache(self, slot: int | None = None, upto: int | None = None):
        """Point every layer at the kept cache: all of it, or (``slot``) a one-row view of row ``slot``
        (a continuous batch prefills one joining row into its own slot; the others are not touched);
        ``upto``: only its columns [0, upto) (an eager decode step whose rows have written fewer: the
        columns past them are masked anyway, and reading them is most of a many-row step's attention)."""
        for layer, cache in zip(self.layers, self._kv_store):
            if slot is None and upto is None:
                layer.attention.cache = cache
            else:
                layer.attention.cache = cache.rows(0 if slot is None else slot,
                                                   cache.k.shape[0] if slot is None else 1, upto)

    def reserve_cache(self, max_batch: int, max_len: int | None = None):
        """Make sure the kept cache holds ``max_batch`` rows and ``max_len`` positions (rounded up to
        ``KV_BLOCK``, at most ``max(max_len, max_seq_len)``; None: ``max_seq_len``)."""
        w = self.tok_embeddings.weight
        want_len = self.cfg.max_seq_len if max_len is None else min(-(-max_len // KV_BLOCK) * KV_BLOCK,
                                                                    max(max_len, self.cfg.max_seq_len))
        store = self._kv_store
        if store is not None:
            k = store[0].k
            if k.dtype == w.dtype and k.device == w.device and k.shape[0] >= max_batch and k.shape[1] >= want_len:
                return
            max_batch, want_len = max(max_batch, k.shape[0]), max(want_len, k.shape[1])
            self.release_cache()
        self._kv_store = [KVCache(max_batch, want_len, self.cfg.n_heads, self.head_dim, w.dtype, w.device)
                          for _ in self.layers]

    def clear_cache(self):
        """End the generation: the layers no longer see a cache (the allocation is kept for the next one)."""
        for layer in self.layers:
            layer.attention.cache = None

    def release_cache(self):
        """Free the kept KV cache."""
        self.clear_cache()
        self._kv_store = None

    @property
    def has_cache(self) -> bool:
        return self.layers[0].attention.cache is not None

    @property
    def cache_len(self) -> int:
        """Positions of the cache in use (the width of ``decode_step``'s ``key_valid``)."""
        if not self.has_cache:
            raise RuntimeError("no KV cache is set up (call setup_cache first)")
        return self.layers[0].attention.cache.k.shape[1]

    def keep_cache_rows(self, rows: torch.Tensor):
        """Compact the batch in the cache: rows ``rows`` (ascending) become rows 0..len(rows)-1."""
        for layer in self.layers:
            layer.attention.cache.keep_rows(rows)

    # -- static-shape decoding -----------------------------------------------------------------
    def adapter_kv(self, adapters: list[torch.Tensor | None] | None) -> list[tuple | None] | None:
        """Per-layer (keys or None, values) of the adapters, computed once per generation for ``decode_step``."""
        if adapters is None:
            return None
        if len(adapters) != self.n_layers:
            raise ValueError(f"adapters must list one entry per layer ({self.n_layers}), got {len(adapters)}")
        return [None if a is None else layer.attention.adapter_kv(a) for layer, a in zip(self.layers, adapters)]

    def decode_step(
        self,
        tokens: torch.Tensor,  # [B, 1] long
        cache_pos: torch.Tensor,  # [1] or [B] long: the cache column this token is written to (per row)
        rope_pos: torch.Tensor,  # [B] long: its RoPE position (real tokens before it)
        key_valid: torch.Tensor,  # [B, cache_len] bool: False = left padding (later columns: any)
        adapter_kv: list[tuple | None] | None = None,  # from adapter_kv(adapters)
        *,
        eager: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row through the cache with static shapes -> (fp32 logits [B, V], h [B, dim]).

        Attends to the cache columns <= cache_pos that ``key_valid`` marks (``cache_pos`` [B]: each row at its
        own column, as the slots of a continuous batch are); computes what
        ``forward(tokens, start_pos=cache_pos, key_valid=key_valid[:, :cache_pos + 1])`` computes.
        Runs the compiled step after ``compile_decode()`` (unless ``eager``). Compiled outputs may be overwritten by the
        next call (CUDA graphs): use or copy them before the next step.
        """
        if not self.has_cache:
            raise RuntimeError("decode_step needs a KV cache (call setup_cache first)")
        if key_valid.shape != (tokens.shape[0], self.cache_len):
            raise ValueError(f"key_valid must be [B={tokens.shape[0]}, cache_len={self.cache_len}], "
                             f"got {list(key_valid.shape)}")
        rope = self.rope(tokens.device)[rope_pos].unsqueeze(1)  # [B, 1, hd/2, 2]
        step = self._decode_compiled if self._decode_compiled is not None and not eager else self._decode_impl
        return step(tokens, cache_pos, rope, key_valid, adapter_kv)

    def _decode_impl(self, tokens, cache_pos, rope, key_valid, adapter_kv):
        h = self.tok_embeddings(tokens)  # [B, 1, dim]
        mask = decode_mask(key_valid, cache_pos, h.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, cache_pos, adapter_kv[i] if adapter_kv is not None else None)
        h = h[:, -1]
        return self.output(self.norm(h)).float(), h

    def compile_decode(self, mode: str | None = "auto", **compile_kwargs):
        """Compile ``decode_step`` with ``torch.compile`` (once; later calls are no-ops).

        mode "auto": "reduce-overhead" (CUDA graphs) on CUDA, the default mode elsewhere. Shapes are
        static: one compilation per batch size (rows dropped from a batch give a new size; the continuous
        engine, m2ugen/engine.py, pads its batches to a few fixed sizes instead).
        """
        if self._decode_compiled is None:
            if mode == "auto":
                mode = "reduce-overhead" if self.tok_embeddings.weight.is_cuda else None
            self._decode_compiled = torch.compile(self._decode_impl, mode=mode, fullgraph=True, dynamic=False,
                                                  **compile_kwargs)
        return self

    def eager_decode(self):
        """Drop the compiled step: ``decode_step`` runs eagerly again."""
        self._decode_compiled = None
        return self

    @property
    def decode_compiled(self) -> bool:
        return self._decode_compiled is not None

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
