"""MusicGen's decoding as our own loop over transformers' modules: batched rows, static KV cache.

transformers' ``MusicgenForConditionalGeneration.generate`` decodes one request at a time (one guidance
scale, one length, one RNG). This module runs many requests ("rows") in one loop, each with its own

- conditioning: MusicGen's cross-attention states (T5 of the text, or the caller's embeddings; rows may mix
  both and differ in length) or MusicGen-Melody's decoder prefix (chroma ++ text states);
- guidance scale (classifier-free guidance: a conditional and an unconditional *slot* per row when the
  scale is > 1, one slot otherwise; logits = uncond + scale * (cond - uncond), transformers' order);
- length (rows that reach their length stop sampling; their slots idle until the batch ends);
- audio prompt (EnCodec codes put into the delay pattern, prompts of different lengths);
- ``torch.Generator``: each row samples from its own RNG stream, so a row's codes do not depend on the
  other rows (and equal transformers' ``generate`` with ``torch.manual_seed(seed)`` at batch 1 on CPU).

The decoder runs on a preallocated KV cache ``[slots, heads, length, head_dim]`` per layer, written at
per-slot positions given as a tensor, so one decode step has fixed shapes for the whole loop and
``torch.compile`` compiles it once (``compile=True``; "reduce-overhead", i.e. CUDA graphs, on CUDA).
Not transformers' ``StaticCache``: its MusicGen decoder takes one past length for the whole batch
(``past_key_values.get_seq_length()`` for the positions), so rows with prompts of different lengths
could not share it; this cache takes a position per slot and runs the same modules' weights.

Facts reproduced from transformers 5.23 (``models/musicgen*/modeling_*.py``, read, not copied):

- delay pattern: codebook k of channel codebook index c (k, or k // 2 when stereo interleaves left/right)
  is shifted right by c; position j <= c and j >= L - Kc + 1 + c hold the pad id (= the decoder start id);
  the prompt codes of codebook k sit at positions c + 1 .. c + Tp; L = 1 + Tp + new tokens;
- the first forward ("prefill") takes positions 0 .. Tp, then one position per step; every sampled token
  is overridden by the pattern where the pattern is not free (-1);
- MusicGen: text states -> ``enc_to_dec_proj`` (when the widths differ) -> times the attention mask;
  the guidance null branch is all zeros with an all-zero mask; cross-attention masks padded text;
- MusicGen-Melody: no cross-attention; the decoder input is [chroma_length projected chroma frames
  (repeated / cut), text states] ++ token embeddings, without a padding mask; the null branch has
  zero text states and the null chroma (one-hot on pitch class 0);
- sampling: guidance, then temperature, top-k, top-p (generation_config), softmax, ``torch.multinomial``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

FREE = -1  # a delay-pattern position the model fills


# ----------------------------------------------------------------------------------------------
# the delay pattern


def delay_pattern(num_codebooks: int, audio_channels: int, length: int, pad_id: int,
                  prompt_codes: torch.Tensor | None = None) -> torch.Tensor:
    """[K, length] long: pad_id where the delay pattern pads, the prompt codes [K, Tp] where they are
    known (codebook k shifted right by its channel index + 1), FREE where the model samples."""
    kc = num_codebooks // audio_channels
    if length < 2 * kc - 1:
        raise ValueError(f"a MusicGen sequence of {length} positions is shorter than the delay pattern "
                         f"of {kc} codebooks needs ({2 * kc - 1})")
    out = torch.full((num_codebooks, length), FREE, dtype=torch.long)
    for k in range(num_codebooks):
        c = k // audio_channels
        if prompt_codes is not None:
            tp = prompt_codes.shape[-1]
            out[k, c + 1: c + 1 + tp] = prompt_codes[k, : max(0, length - c - 1)]
        out[k, : c + 1] = pad_id
        out[k, length - kc + 1 + c:] = pad_id
    return out


def undelay(tokens: torch.Tensor, audio_channels: int) -> torch.Tensor:
    """Codes [K, frames] from a finished delayed sequence [K, L]: frame f of codebook k is at j = f + c + 1."""
    k_total, length = tokens.shape
    kc = k_total // audio_channels
    frames = length - kc
    return torch.stack([tokens[k, k // audio_channels + 1: k // audio_channels + 1 + frames]
                        for k in range(k_total)])


# ----------------------------------------------------------------------------------------------
# rows and slots


@dataclass
class LoopRow:
    """One request as the loop sees it (built by ``MusicGenDecoder``)."""

    cond: torch.Tensor  # [Lc, D] cross-attention states (MusicGen) or decoder prefix (Melody)
    cond_mask: torch.Tensor | None  # [Lc] bool (MusicGen cross-attention), None for a prefix
    guidance_scale: float
    new_tokens: int
    generator: torch.Generator | None
    uncond: torch.Tensor | None = None  # the null branch, same shapes (guidance_scale > 1)
    uncond_mask: torch.Tensor | None = None
    prompt_codes: torch.Tensor | None = None  # [K, Tp]
    on_step: Callable[[int], None] | None = None  # called with the number of tokens sampled so far

    @property
    def guided(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale > 1


@dataclass
class LoopResult:
    tokens: torch.Tensor | None = None  # [K, L] the finished delayed sequence
    error: BaseException | None = None


@dataclass
class _Batch:
    """Which cache slots belong to which row: its conditional slot, its null-branch slot (or None)."""

    cond_slot: list[int] = field(default_factory=list)
    uncond_slot: list[int | None] = field(default_factory=list)
    slot_row: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# the decoder over transformers' modules


class MusicGenStep(nn.Module):
    """One forward of MusicGen's decoder (``MusicgenForCausalLM``) on a static KV cache.

    The cache is this module's buffers (as in gpt-fast), allocated by ``setup_cache`` for a batch:
    self-attention keys / values ``[slots, heads, length, head_dim]`` per layer and, for MusicGen, the
    cross-attention keys / values of the conditioning with an additive mask ``[slots, 1, 1, Lc]``.
    ``forward(hidden [S, T, D], pos [S, T])`` writes the new keys / values at ``pos`` (per slot),
    attends to cache positions <= pos and returns the logits [S, K, T, V]. With T = 1 every shape is
    fixed whatever the positions: one compiled graph (and one CUDA graph) for the whole loop.
    """

    def __init__(self, causal_lm: nn.Module):
        super().__init__()
        dec = causal_lm.model.decoder
        self.embed_tokens = dec.embed_tokens
        self.layers = dec.layers
        self.layer_norm = dec.layer_norm
        self.lm_heads = causal_lm.lm_heads
        attn = dec.layers[0].self_attn
        self.heads, self.head_dim, self.scaling = attn.num_heads, attn.head_dim, attn.scaling
        self.cross = hasattr(dec.layers[0], "encoder_attn")
        self.cache_shape: tuple[int, ...] | None = None

    def _put(self, name: str, value: torch.Tensor) -> None:
        """Buffer ``name`` := value, in place when the shape allows (a static address for CUDA graphs)."""
        buf = getattr(self, name, None)
        if buf is not None and buf.shape == value.shape and buf.dtype == value.dtype and buf.device == value.device:
            buf.copy_(value)
            return
        buf = torch.empty(value.shape, dtype=value.dtype, device=value.device).copy_(value)  # contiguous
        if buf.device.type == "cuda":
            torch._dynamo.mark_static_address(buf)
        self.register_buffer(name, buf, persistent=False)

    def setup_cache(self, slots: int, length: int, cross_states: torch.Tensor | None = None,
                    cross_keep: torch.Tensor | None = None) -> None:
        """Zero the self-attention cache for ``slots`` x ``length`` (reused when the shape is unchanged) and
        put the cross-attention keys / values of ``cross_states`` [S, Lc, D] (``cross_keep`` [S, Lc] bool)."""
        ref = next(self.parameters())
        shape = (slots, self.heads, length, self.head_dim)
        zeros = torch.zeros(shape, device=ref.device, dtype=ref.dtype)
        for i in range(len(self.layers)):
            self._put(f"keys_{i}", zeros)
            self._put(f"values_{i}", zeros)
        self.cache_shape = shape
        if not self.cross:
            return
        for i, layer in enumerate(self.layers):
            xattn = layer.encoder_attn
            self._put(f"cross_keys_{i}", self._heads(xattn.k_proj(cross_states)))
            self._put(f"cross_values_{i}", self._heads(xattn.v_proj(cross_states)))
        # additive, not boolean: the null branch masks every position (its states are zeros, so its
        # keys and values are zeros too and the attention output is exactly 0, without NaN)
        bias = torch.zeros(cross_keep.shape, device=ref.device, dtype=ref.dtype)
        bias.masked_fill_(~cross_keep, torch.finfo(ref.dtype).min)
        self._put("cross_bias", bias[:, None, None, :])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [S, K, T] -> [S, T, D]: the sum of the codebooks' embeddings (transformers' order)."""
        return sum(self.embed_tokens[k](tokens[:, k]) for k in range(tokens.shape[1]))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        s, t, _ = x.shape
        return x.view(s, t, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        s, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(s, t, self.heads * self.head_dim)

    def set_cross(self, first: int, states: torch.Tensor, keep: torch.Tensor) -> None:
        """The cross-attention keys / values of slots [first, first + n) := those of ``states`` [n, Lc, D]
        (``keep`` [n, Lc]), in place (the other slots are not touched; Lc at most the cache's)."""
        n, lc = keep.shape
        ref = next(self.parameters())
        for i, layer in enumerate(self.layers):
            xattn = layer.encoder_attn
            for name, proj in ((f"cross_keys_{i}", xattn.k_proj), (f"cross_values_{i}", xattn.v_proj)):
                buf = getattr(self, name)
                buf[first:first + n].zero_()
                buf[first:first + n, :, :lc] = self._heads(proj(states))
        bias = torch.full((n, self.cross_bias.shape[-1]), torch.finfo(ref.dtype).min, device=ref.device,
                          dtype=ref.dtype)
        bias[:, :lc].masked_fill_(keep, 0.0)
        self.cross_bias[first:first + n] = bias[:, None, None, :]

    def forward(self, hidden: torch.Tensor, pos: torch.Tensor, first: int = 0, upto: int | None = None,
                cross_upto: int | None = None) -> torch.Tensor:
        """``first``: the cache slot of ``hidden``'s first row (slots [first, first + S) are read and written);
        ``upto`` (eager callers): attend to cache positions < upto only (every position read is < upto);
        ``cross_upto`` (eager callers): cross-attend to conditioning positions < cross_upto only (every slot's
        unmasked positions are below it: the masked ones weigh exactly 0, so the result is the same, and a
        step no longer reads the whole padded cross cache, e.g. 128 positions for a prompt of 8 tokens)."""
        s, t, _ = hidden.shape
        length = self.cache_shape[2] if upto is None else upto
        slots = torch.arange(s, device=pos.device)[:, None].expand(s, t)
        visible = (torch.arange(length, device=pos.device)[None, None, :] <= pos[:, :, None])[:, None]  # [S,1,T,L]
        # additive, built once per forward (CPU attention is slower with a bool mask, and it is per layer)
        visible = torch.zeros(visible.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
            ~visible, float("-inf"))
        whole = first == 0 and s == self.cache_shape[0]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            keys, values = getattr(self, f"keys_{i}"), getattr(self, f"values_{i}")
            if not whole:
                keys, values = keys[first:first + s], values[first:first + s]
            h = layer.self_attn_layer_norm(hidden)
            q = self._heads(attn.q_proj(h))
            keys[slots, :, pos] = attn.k_proj(h).view(s, t, self.heads, self.head_dim)
            values[slots, :, pos] = attn.v_proj(h).view(s, t, self.heads, self.head_dim)
            if upto is not None:
                keys, values = keys[:, :, :upto], values[:, :, :upto]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=self.scaling)
            hidden = hidden + attn.out_proj(self._merge(out))
            if self.cross:
                xattn = layer.encoder_attn
                h = layer.encoder_attn_layer_norm(hidden)
                q = self._heads(xattn.q_proj(h))
                ck, cv, cb = getattr(self, f"cross_keys_{i}"), getattr(self, f"cross_values_{i}"), self.cross_bias
                if not whole:
                    ck, cv, cb = ck[first:first + s], cv[first:first + s], cb[first:first + s]
                if cross_upto is not None:
                    ck, cv, cb = ck[:, :, :cross_upto], cv[:, :, :cross_upto], cb[..., :cross_upto]
                out = F.scaled_dot_product_attention(q, ck, cv, attn_mask=cb, scale=self.scaling)
                hidden = hidden + xattn.out_proj(self._merge(out))
            h = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(h)))
        hidden = self.layer_norm(hidden)
        return torch.stack([head(hidden) for head in self.lm_heads], dim=1)


def sinusoids(embed_positions: nn.Module, length: int, dtype, device) -> torch.Tensor:
    """[length, D] MusicGen's sinusoidal positions (the module's own formula, any length)."""
    return embed_positions.get_embedding(length, embed_positions.embedding_dim).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# sampling


def warpers(generation_config) -> list[Callable]:
    """transformers' temperature / top-k / top-p warpers of the generation config, in generate's order."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    gc = generation_config
    out: list[Callable] = []
    if not gc.do_sample:
        return out
    if gc.temperature is not None and gc.temperature != 1.0:
        out.append(TemperatureLogitsWarper(gc.temperature))
    if gc.top_k is not None and gc.top_k != 0:
        out.append(TopKLogitsWarper(top_k=gc.top_k, min_tokens_to_keep=1))
    if gc.top_p is not None and gc.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=gc.top_p, min_tokens_to_keep=1))
    return out


# ----------------------------------------------------------------------------------------------
# the loop


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class MusicGenLoop:
    """Runs ``LoopRow``s of one MusicGen(-Melody) model together; see the module docstring."""

    def __init__(self, model: nn.Module, *, compile: bool | str | Callable = False, length_multiple: int | None = None):
        """``compile``: False (eager), True (torch.compile: inductor, "reduce-overhead" on CUDA) or a
        torch.compile backend (a name such as "aot_eager", or a callable: the same single graph)."""
        self.model = model
        dec_cfg = model.config.decoder
        self.num_codebooks = int(dec_cfg.num_codebooks)
        self.audio_channels = int(dec_cfg.audio_channels)
        self.pad_id = int(model.generation_config.pad_token_id)
        self.step_module = MusicGenStep(model.decoder)
        self.compile = compile
        # a compiled step is specialised on the cache length: round it up so that lengths share graphs
        self.length_multiple = length_multiple or (256 if compile else 1)
        self._compiled = None

    @property
    def _decoder(self) -> nn.Module:
        return self.model.decoder.model.decoder

    def _step_fn(self):
        if not self.compile:
            return self.step_module
        if self._compiled is None:
            if not isinstance(self.compile, bool):
                self._compiled = torch.compile(self.step_module, backend=self.compile, dynamic=False, fullgraph=True)
            else:
                device = next(self.model.parameters()).device
                mode = "reduce-overhead" if device.type == "cuda" else None
                self._compiled = torch.compile(self.step_module, mode=mode, dynamic=False, fullgraph=True)
        return self._compiled

    # --- set-up ------------------------------------------------------------------------------
    def _slots(self, rows: list[LoopRow]) -> _Batch:
        b = _Batch()
        for r, row in enumerate(rows):
            b.cond_slot.append(len(b.slot_row))
            b.slot_row.append(r)
        for r, row in enumerate(rows):  # null branches after all conditional ones (as transformers does)
            if row.guided:
                b.uncond_slot.append(len(b.slot_row))
                b.slot_row.append(r)
            else:
                b.uncond_slot.append(None)
        return b

    @torch.inference_mode()
    def run(self, rows: list[LoopRow]) -> list[LoopResult]:
        """Decode all rows; a row whose ``on_step`` raises is dropped (its result carries the error)."""
        if not rows:
            return []
        model, step = self.model, self.step_module
        device = next(model.parameters()).device
        dtype = next(model.decoder.parameters()).dtype
        b = self._slots(rows)
        n_slots = len(b.slot_row)
        self.do_sample = bool(model.generation_config.do_sample)
        self.warpers = warpers(model.generation_config)  # read per run: the config may change
        results = [LoopResult() for _ in rows]

        # per row: the delay pattern over its whole length; per slot: its conditioning
        prompt_len = [0 if row.prompt_codes is None else int(row.prompt_codes.shape[-1]) for row in rows]
        lengths = [1 + tp + row.new_tokens for tp, row in zip(prompt_len, rows)]
        patterns = [delay_pattern(self.num_codebooks, self.audio_channels, n, self.pad_id, row.prompt_codes)
                    for n, row in zip(lengths, rows)]
        slot_cond = [rows[r].cond if s == b.cond_slot[r] else rows[r].uncond for s, r in enumerate(b.slot_row)]
        slot_mask = [rows[r].cond_mask if s == b.cond_slot[r] else rows[r].uncond_mask
                     for s, r in enumerate(b.slot_row)]
        prefix = [0 if step.cross else int(c.shape[0]) for c in slot_cond]

        cache_len = max(p + lengths[r] for p, r in zip(prefix, b.slot_row))
        cache_len = _round_up(cache_len, self.length_multiple)
        step.setup_cache(n_slots, cache_len, *(self._cross_inputs(slot_cond, slot_mask) if step.cross else ()))
        table = sinusoids(self._decoder.embed_positions, cache_len, dtype, device)

        # tokens[r]: the row's delayed sequence, filled as it decodes (the pattern where known)
        tokens = [p.clone().to(device) for p in patterns]
        free = [(p == FREE).to(device) for p in patterns]

        # prefill: per slot [prefix ++ token embeddings of positions 0 .. Tp], right-padded
        first = [tp + 1 for tp in prompt_len]
        seq = []
        for s, r in enumerate(b.slot_row):
            emb = step.embed(tokens[r][None, :, : first[r]])[0]
            seq.append(emb if step.cross else torch.cat([slot_cond[s].to(dtype), emb], dim=0))
        width = max(x.shape[0] for x in seq)
        hidden = torch.zeros(n_slots, width, seq[0].shape[-1], device=device, dtype=dtype)
        for s, x in enumerate(seq):
            hidden[s, : x.shape[0]] = x
        pos = torch.arange(width, device=device)[None].expand(n_slots, width)
        hidden = hidden + table[pos]
        logits = step(hidden, pos)
        last = torch.tensor([x.shape[0] - 1 for x in seq], device=device)
        logits = logits[torch.arange(n_slots, device=device), :, last]  # [S, K, V]

        row_pos = list(first)  # per row: the position its next sampled token goes to
        active = [True] * len(rows)
        done = [0] * len(rows)
        step_fn = self._step_fn()
        total = max(row.new_tokens for row in rows)
        for i in range(total):
            self._sample_into(logits, b, rows, tokens, free, row_pos, active, done, results)
            if i == total - 1 or not any(active):
                break
            # each slot feeds its row's token just placed, at prefix + position (a finished row repeats
            # its last one: fixed shapes, the repeats are never read)
            feed_pos = [min(row_pos[r], lengths[r]) - 1 for r in b.slot_row]
            fed = torch.stack([tokens[r][:, p] for r, p in zip(b.slot_row, feed_pos)])  # [S, K]
            pos = torch.tensor([prefix[s] + p for s, p in enumerate(feed_pos)], device=device)[:, None]
            hidden = step.embed(fed[:, :, None]) + table[pos]
            logits = step_fn(hidden, pos)[:, :, 0]
        for r, row in enumerate(rows):
            if results[r].error is None:
                results[r].tokens = tokens[r]
        return results

    @staticmethod
    def _cross_inputs(conds: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every slot's (projected, masked) cross-attention states and mask, padded to one length."""
        lc = max(int(c.shape[0]) for c in conds)
        states = conds[0].new_zeros(len(conds), lc, conds[0].shape[-1])
        keep = torch.zeros(len(conds), lc, dtype=torch.bool, device=conds[0].device)
        for s, (c, m) in enumerate(zip(conds, masks)):
            states[s, : c.shape[0]] = c
            keep[s, : c.shape[0]] = m
        return states, keep

    def _sample_into(self, logits, b: _Batch, rows, tokens, free, row_pos, active, done, results) -> None:
        """Guide, warp and sample the next token of every active row; place it unless the pattern fixes it."""
        logits = logits.float()
        live = [r for r in range(len(rows)) if active[r]]
        for r in live:  # progress first (transformers calls it among the logits processors)
            row = rows[r]
            if row.on_step is not None:
                try:
                    row.on_step(done[r] + 1)
                except Exception as exc:  # the row is cancelled; the others go on
                    results[r].error = exc
                    active[r] = False
        live = [r for r in live if active[r]]
        if not live:
            return
        scores = []
        for r in live:
            cond = logits[b.cond_slot[r]]
            if rows[r].guided:
                uncond = logits[b.uncond_slot[r]]
                cond = uncond + (cond - uncond) * rows[r].guidance_scale
            scores.append(cond)
        scores = torch.cat(scores)  # [n * K, V]
        for warp in self.warpers:
            scores = warp(None, scores)
        k = self.num_codebooks
        if self.do_sample:
            probs = F.softmax(scores, dim=-1)
        for n, r in enumerate(live):
            if self.do_sample:
                new = torch.multinomial(probs[n * k: (n + 1) * k], 1, generator=rows[r].generator)[:, 0]
            else:
                new = scores[n * k: (n + 1) * k].argmax(-1)
            j = row_pos[r]
            tokens[r][:, j] = torch.where(free[r][:, j], new, tokens[r][:, j])
            row_pos[r] += 1
            done[r] += 1
            if done[r] == rows[r].new_tokens:
                active[r] = False
