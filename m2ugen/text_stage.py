"""The LLaMA stage of continuous batching: rows join and leave the running decode at every step.

A slot pool: the model's kept KV cache has ``slots`` rows; a joining row takes a free slot and is
prefilled into it alone (``Transformer.bind_cache(slot)``: a one-row view, the other slots untouched), in
chunks: while rows are decoding, at most ``prefill_chunk`` prompt tokens per ``step`` in all (default
``PREFILL_CHUNK``: about one decode step's time), so joining never stalls the running rows for more than
that; while none decodes (nothing to stall), every joining row is prefilled whole at once. Eager (not
compiled), the joining chunk rides in the decode step's own forward (``fused_step``: the decode rows and
the chunk's tokens go through each linear layer as one matrix, so the weights are read once per step
instead of twice; each part attends as it does alone), and the step reads only the cache columns written so
far (``bind_cache(upto=...)``, a column window of the pool: at 4 rows, reading the whole pool was most of the
step's attention). Each running row sits at its own cache column (no left padding:
``decode_step`` with a per-row ``cache_pos``), so a row computes what it computes alone. Every step runs
one ``decode_step`` over slots ``[0, S)`` with S the smallest of ``BUCKETS`` that covers the highest
slot in use: a compiled step (``llama.compile_decode()``) sees a handful of shapes, each compiled once
(``warm_up``). Slots in the range that are free, or still prefilling, are fed a dummy token at a column
their owner overwrites before it reads it. A finished row leaves at once; its slot is free the same step.

Per-row adapters (the row's own audio / image / video prefix) are computed once when the row joins and
kept per slot (``adapter_kv``), so the decode step reads them as views, never copies.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from m2ugen.generate import AudGather, Generation, generation, sample_next, stop_after
from m2ugen.llama import Transformer, decode_mask

BUCKETS = (1, 2, 4, 8)  # decode batch sizes (a larger pool adds its own size)
PREFILL_CHUNK = {"cuda": 32, "cpu": 32}  # prompt tokens of a joining row prefilled per step, per device type:
# about one engine step's time. Measured (mid LLaMA 8 x 1024 and MusicGen 12 x 512, fp32, 1 CPU thread,
# benchmarks/bench_serving.py's config, a loaded box, medians of 6 interleaved): an engine step of 4 rows is a
# LLaMA step of 4 (198 ms) and a MusicGen step of 8 slots (121 ms); folded into the LLaMA step (``fused_step``)
# 8 / 16 / 32 prompt tokens add 65 / 133 / 231 ms, so 32 stall the running rows for less than one step.
# Run apart (a compiled step cannot fold) a chunk costs a weight read more: 8 / 16 / 32 tokens 403 / 531 /
# 738 ms beside a 394 ms LLaMA step of 4. On a GPU both are bound by reading the weights: 32 tokens cost
# about one step.


def prefill_chunk(device: torch.device | str) -> int:
    return PREFILL_CHUNK.get(torch.device(device).type, PREFILL_CHUNK["cuda"])


def bucket(n: int, slots: int) -> int:
    """The smallest fixed decode size >= n (the pool's size when none is)."""
    return next((b for b in BUCKETS if b >= n and b <= slots), slots)


@dataclass(eq=False)
class TextRow:
    """One row of the LLaMA stage: its prompt, sampling settings, adapters, and what it made so far."""

    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator | None
    adapters: list[torch.Tensor | None] | None = None  # per layer, [1, La, dim] or None
    on_step: Callable[[list[int]], None] | None = None  # after every token; raising ends this row alone
    audio_token_ids: list[int] = field(default_factory=list)
    # state
    slot: int | None = None
    prefilled: int = 0  # prompt tokens in the cache
    generated: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None  # [1, V] of the next token, pending its sample
    h_last: torch.Tensor | None = None  # [1, dim]: the state that predicts it
    gather: AudGather | None = None
    limit: int = 0
    result: Generation | None = None
    error: BaseException | None = None

    @property
    def column(self) -> int:
        """The cache column of the latest token (the one the next decode feeds)."""
        return len(self.ids) + len(self.generated) - 1


class TextStage:
    def __init__(self, llama: Transformer, tokenizer, slots: int, prefill_chunk: int | None = None,
                 stop_text: str | None = None):
        if prefill_chunk is None:
            prefill_chunk = globals()["prefill_chunk"](llama.tok_embeddings.weight.device)
        if slots < 1 or prefill_chunk < 1:
            raise ValueError(f"need slots >= 1 and prefill_chunk >= 1, got {slots}, {prefill_chunk}")
        self.llama, self.tokenizer = llama, tokenizer
        self.n_slots, self.chunk = slots, prefill_chunk
        self.stop_text = stop_text
        self.slots: list[TextRow | None] = [None] * slots
        self.waiting: deque[TextRow] = deque()  # no slot yet, in arrival order
        self._adapter_store: list[tuple | None] | None = None
        self._bound = False
        self.steps = 0  # decode steps run (for tests and benchmarks)

    # --- rows --------------------------------------------------------------------------------------
    def admit(self, row: TextRow) -> None:
        """Queue a row; it takes a slot at the next step with one free."""
        P = len(row.ids)
        if P == 0 or P >= self.llama.cfg.max_seq_len:
            raise ValueError(f"a prompt of {P} tokens does not fit the context of {self.llama.cfg.max_seq_len}")
        row.limit = min(row.max_new_tokens, self.llama.cfg.max_seq_len - P)
        row.gather = AudGather(list(row.audio_token_ids))
        self.waiting.append(row)

    def cancel(self, row: TextRow, error: BaseException) -> None:
        """End a row now (its slot is free at once)."""
        row.error = row.error or error
        self._leave(row)

    @property
    def idle(self) -> bool:
        return not self.waiting and all(r is None for r in self.slots)

    @property
    def free_slots(self) -> int:
        return self.slots.count(None) - len(self.waiting)

    def _leave(self, row: TextRow) -> None:
        if row in self.waiting:
            self.waiting.remove(row)
        if row.slot is not None and self.slots[row.slot] is row:
            self.slots[row.slot] = None
        row.slot = None

    # --- the cache -----------------------------------------------------------------------------------
    def _bind(self) -> None:
        if not self._bound:
            if self.llama.has_cache:
                raise RuntimeError("the LLaMA's KV cache is in use by another generation")
            self.llama.reserve_cache(self.n_slots)
            self.llama.bind_cache()
            self._bound = True

    @contextlib.contextmanager
    def unbound(self):
        """The model's cache unbound for a while (a cacheless forward, e.g. teacher forcing), slots kept."""
        bound = self._bound
        if bound:
            self.llama.clear_cache()
        try:
            yield
        finally:
            if bound:
                self.llama.bind_cache()

    def release(self) -> None:
        """Unbind the model's cache (the allocation is kept); call when idle or to let the model be used."""
        if self._bound:
            self.llama.clear_cache()
            self._bound = False
            self._adapter_store = None

    def _store_adapters(self, row: TextRow) -> None:
        """The row's adapter keys / values into its slot of the per-slot store."""
        kv = self.llama.adapter_kv(row.adapters)
        if kv is None:
            return
        if self._adapter_store is None:
            self._adapter_store = [None if x is None else tuple(
                None if t is None else t.new_zeros((self.n_slots, *t.shape[1:])) for t in x) for x in kv]
        for store, x in zip(self._adapter_store, kv):
            if (store is None) != (x is None):
                raise ValueError("every row of a continuous batch needs adapters on the same layers")
            if x is None:
                continue
            for dst, src in zip(store, x):
                if (dst is None) != (src is None) or (src is not None and dst.shape[1:] != src.shape[1:]):
                    raise ValueError("every row of a continuous batch needs adapters of the same shape")
                if src is not None:
                    dst[row.slot] = src[0]

    # --- one step ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[TextRow]:
        """Admit waiting rows into free slots, prefill joining rows (``chunk`` tokens in all while rows
        decode, else whole), sample every row that has its next logits, decode one token for every running
        row. -> the rows that left this step
        (``result`` or ``error`` set)."""
        if self.idle:
            self.release()
            return []
        self._bind()
        left: list[TextRow] = []
        while self.waiting and None in self.slots:
            row = self.waiting.popleft()
            row.slot = self.slots.index(None)
            self.slots[row.slot] = row
            try:
                self._store_adapters(row)
            except Exception as e:
                row.error = e
                self._leave(row)
                left.append(row)
        # prefill: ``chunk`` tokens a step in all while rows are decoding (they wait for it), else no limit.
        # Eager, the chunk of the first joining row rides in the decode step's forward (``fused_step``).
        decoding = any(r is not None and r.prefilled == len(r.ids) for r in self.slots)
        joining = [r for r in self.slots if r is not None and r.prefilled < len(r.ids)]
        fold = joining[0] if decoding and joining and not self.llama.decode_compiled else None
        budget = self.chunk if decoding else None
        for row in [] if fold is not None else joining:
            if budget is not None and budget <= 0:
                break
            n = len(row.ids) - row.prefilled if budget is None else min(budget, len(row.ids) - row.prefilled)
            self._guarded(row, self._prefill_chunk, row, n, left)
            if budget is not None:
                budget -= n
        for row in [r for r in self.slots if r is not None and r.logits is not None]:
            self._guarded(row, self._sample, row, left)
        running = [r for r in self.slots if r is not None and r.prefilled == len(r.ids) and r.logits is None
                   and r.result is None]
        n = 0 if fold is None else min(self.chunk, len(fold.ids) - fold.prefilled)
        if running and fold is not None:
            try:
                self._decode(running, fold, n)
            except Exception:  # the fused forward failed: the decode alone (its errors are the stage's), then
                self._decode(running)  # the chunk alone, so that a failing joining row ends alone
                self._guarded(fold, self._prefill_chunk, fold, n, left)
        elif running:
            self._decode(running)
        elif fold is not None:  # every decoding row left at its sample: the chunk alone
            self._guarded(fold, self._prefill_chunk, fold, n, left)
        if self.idle:
            self.release()
        return left

    def _guarded(self, row: TextRow, fn, *args) -> None:
        left = args[-1]
        try:
            fn(*args[:-1])
        except Exception as e:  # a cancel from on_step, a bad input: this row ends alone
            row.error = e
        if row.error is not None or row.result is not None:
            self._leave(row)
            left.append(row)

    def _prefill_chunk(self, row: TextRow, n: int) -> None:
        a = row.prefilled
        b = min(len(row.ids), a + n)
        device = self.llama.tok_embeddings.weight.device
        x = torch.tensor([row.ids[a:b]], dtype=torch.long, device=device)
        self.llama.bind_cache(row.slot)
        try:
            logits, h = self.llama(x, start_pos=a, adapters=row.adapters,
                                   key_valid=torch.ones(1, b, dtype=torch.bool, device=device))
        finally:
            self.llama.bind_cache()
        self._joined(row, logits, h[:, -1], b - a)

    def _sample(self, row: TextRow) -> None:
        logits, h, row.logits = row.logits, row.h_last, None
        t = int(sample_next(logits, row.temperature, row.top_p, row.generator)[0])
        row.gather.step(t, h[0], len(row.generated))
        row.generated.append(t)
        reason = stop_after(self.tokenizer, row.generated, row.limit, self.tokenizer.eos_token_id,
                            *(() if self.stop_text is None else (self.stop_text,)))
        if row.on_step is not None:
            row.on_step(row.generated)
        if reason is not None:
            row.result = generation(self.tokenizer, row.ids, row.generated, reason, row.gather)

    def _decode(self, running: list[TextRow], join: TextRow | None = None, n: int = 0) -> None:
        """One decode step of ``running``; with ``join``, ``n`` more prompt tokens of that joining row ride
        in the same forward (``fused_step``: the weights are read once for both)."""
        llama = self.llama
        device = llama.tok_embeddings.weight.device
        S = bucket(max(r.slot for r in running) + 1, self.n_slots)
        tokens = torch.zeros(S, 1, dtype=torch.long, device=device)
        pos = torch.zeros(S, dtype=torch.long, device=device)
        for s in range(S):  # free or prefilling slots: a dummy at a column their owner writes before reading
            r = self.slots[s]
            if r is not None and r.prefilled < len(r.ids):
                pos[s] = r.prefilled
        columns = []
        for r in running:
            tokens[r.slot, 0] = r.generated[-1]
            pos[r.slot] = r.column
            columns.append(r.column)
        kv = None if self._adapter_store is None else [
            None if x is None else tuple(None if t is None else t[:S] for t in x) for x in self._adapter_store]
        # eager: the step reads only the columns written so far (the furthest row's, a dummy's, the chunk's)
        upto = None
        if not llama.decode_compiled:
            written = columns + [r.prefilled for r in self.slots[:S] if r is not None and r.prefilled < len(r.ids)]
            if join is not None:
                written.append(min(len(join.ids), join.prefilled + n) - 1)
            upto = max(written) + 1
            llama.bind_cache(upto=upto)
        try:
            valid = torch.ones(S, llama.cache_len, dtype=torch.bool, device=device)
            if join is not None:
                logits, h, jl, jh = fused_step(llama, tokens, pos, valid, kv, join, n)
                self._joined(join, jl, jh, n)
            else:
                logits, h = llama.decode_step(tokens, pos, pos, valid, kv)
        finally:
            if upto is not None:
                llama.bind_cache()
        if llama.decode_compiled:  # CUDA graphs reuse their output buffers at the next step
            logits, h = logits.clone(), h.clone()
        for r in running:
            r.logits, r.h_last = logits[r.slot:r.slot + 1], h[r.slot:r.slot + 1]
        self.steps += 1

    def _joined(self, row: TextRow, logits: torch.Tensor, h: torch.Tensor, n: int) -> None:
        """``n`` more prompt tokens of ``row`` are in its slot; its first logits when that was the last."""
        row.prefilled = min(len(row.ids), row.prefilled + n)
        if row.prefilled == len(row.ids):
            row.logits, row.h_last = logits, h

    @torch.no_grad()
    def warm_up(self, adapters: list[torch.Tensor | None] | None = None) -> None:
        """Run the decode step once at every fixed size (compiles each once when the step is compiled);
        ``adapters``: a row's adapters (the per-slot store's shapes, so the warmed step is the one used)."""
        self._bind()
        try:
            if adapters is not None:
                self._store_adapters(TextRow(ids=[0], max_new_tokens=1, temperature=0.0, top_p=1.0,
                                             generator=None, adapters=adapters, slot=0))
            device = self.llama.tok_embeddings.weight.device
            for S in sorted({bucket(n, self.n_slots) for n in range(1, self.n_slots + 1)}):
                z = torch.zeros(S, dtype=torch.long, device=device)
                kv = None
                if self._adapter_store is not None:
                    kv = [None if x is None else tuple(None if t is None else t[:S] for t in x)
                          for x in self._adapter_store]
                self.llama.decode_step(z[:, None], z, z, torch.ones(S, self.llama.cache_len, dtype=torch.bool,
                                                                      device=device), kv)
        finally:
            self.release()


def fused_step(llama: Transformer, tokens: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
               adapter_kv: list[tuple | None] | None, row: TextRow, n: int):
    """One eager forward of a decode step (``tokens`` [S, 1] at cache columns ``pos``, as ``decode_step``)
    and the next ``n`` prompt tokens of the joining ``row`` into its slot (as ``llama(ids, start_pos=...)``
    on a one-row view of the cache): the linear layers see both as one [S + n] matrix, so the weights are
    read once, while each part attends exactly as it does alone (the decode rows to their cache columns,
    the chunk causally to its slot's). The decode part writes first, so a dummy the step feeds the joining
    slot lands where the chunk then writes.
    -> (logits [S, V], h [S, dim], the chunk's last logits [1, V], its h [1, dim])."""
    S = tokens.shape[0]
    a = row.prefilled
    b = min(len(row.ids), a + n)
    device = tokens.device
    ids = torch.tensor(row.ids[a:b], dtype=torch.long, device=device)
    cols = torch.arange(a, b, device=device)
    x = llama.tok_embeddings(torch.cat([tokens[:, 0], ids]))[None]  # [1, S + C, dim]
    rope = llama.rope(device)[torch.cat([pos, cols])][None]  # [1, S + C, hd/2, 2]
    d_mask = decode_mask(valid, pos, x.dtype)  # as decode_step
    c_mask = (torch.arange(b, device=device)[None, :] <= cols[:, None])[None, None]  # as forward: causal
    for i, layer in enumerate(llama.layers):
        att = layer.attention
        q, k, v = att.project(layer.attention_norm(x), rope)
        d = att.attend(q[0, :S, None], k[0, :S, None], v[0, :S, None], d_mask, pos,
                       adapter_kv[i] if adapter_kv is not None else None)  # [S, 1, dim]
        c = att.attend(q[:, S:], k[:, S:], v[:, S:], c_mask, a,
                       row.adapters[i] if row.adapters is not None else None, cache=att.cache.rows(row.slot, 1))
        h = x + att.project_out(torch.cat([d.view(1, S, -1), c], dim=1))
        x = h + layer.feed_forward(layer.ffn_norm(h))
    last = torch.cat([x[0, :S], x[0, -1:]])  # the decode rows' states, the chunk's last
    logits = llama.output(llama.norm(last)).float()
    return logits[:S], last[:S], logits[S:], last[S:]
