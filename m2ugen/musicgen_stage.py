"""The MusicGen stage of continuous batching: ``LoopRow``s join and leave the running decode at every step.

The same decoding as ``MusicGenLoop.run`` (delay pattern, per-row guidance, length, generator, audio
prompt, chroma prefix, transformers' warpers), scheduled per step instead of per batch:

- a slot pool of ``slots`` cache rows (``MusicGenStep``'s buffers, shared with ``MusicGenLoop.run``), set
  up whenever the stage starts from idle, for the rows then waiting: cache length rounded up to ``POOL_MULTIPLE`` positions (so later, longer rows fit),
  cross-attention length at least the T5 prompt's 128 tokens. A guided row takes two adjacent slots
  (conditional, null branch), an unguided one one slot. A row that does not fit the pool waits until the
  stage drains (and the rows behind it wait with it: first come, first served);
- a joining row is prefilled into its own slots alone (``MusicGenStep.forward(first=...)``, a view of the
  cache; the running rows' slots are not touched): ``prefill_chunk`` positions per step in all while rows
  are decoding, whole while none is;
- every step samples each row that has its next logits (guided per row, then warped and softmaxed for all
  rows in one call; only the draw is per row, from its own generator) and runs one decode step over slots [0, S), S the
  smallest fixed size (1, 2, 4, 8, 16, ...) covering the highest slot in use: a compiled step sees a few
  shapes, compiled once each (``warm_up``). Free and prefilling slots in that range are fed a dummy at a
  position their owner writes before it reads it. Eager steps attend only up to the furthest written
  position and cross-attend only up to the longest kept prompt position (``kept_length``);
- a row leaves the step it samples its last token (its slots are free at once), or when its ``on_step``
  raises (a cancel: that row alone).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from m2ugen.musicgen_loop import FREE, LoopResult, LoopRow, MusicGenLoop, _round_up, delay_pattern, sinusoids, warpers

POOL_MULTIPLE = 256  # cache positions (about 5 s of MusicGen tokens)
MIN_CROSS = 128  # cross-attention positions: the T5 prompt's padded length


def bucket(n: int, slots: int) -> int:
    b = 1
    while b < n:
        b *= 2
    return min(b, slots)


def kept_length(conds: list[torch.Tensor], masks: list[torch.Tensor | None]) -> int:
    """1 + the last cross-attention position any slot keeps (at least 1; no mask keeps its whole ``cond``):
    the positions past it weigh exactly 0 (T5 prompts are padded to 128 positions; a short one keeps a few)."""
    last = [int(c.shape[0]) if m is None else int(m.nonzero().max()) + 1 if m.any() else 1
            for c, m in zip(conds, masks)]
    return max(last, default=1)


@dataclass(eq=False)
class StageRow:
    row: LoopRow
    tokens: torch.Tensor  # [K, L] the delayed sequence (the pattern where known)
    free: torch.Tensor  # [K, L] bool: positions the model fills
    length: int
    first: int  # the prompt positions 0 .. first - 1 are prefilled; the first sample goes to ``first``
    conds: list[torch.Tensor]  # per slot of the row: its conditioning
    masks: list[torch.Tensor | None]
    slot: int | None = None  # its first slot (the null branch, if guided, is slot + 1)
    prefix: list[int] = field(default_factory=list)  # per slot: decoder-prefix positions (Melody)
    hidden: torch.Tensor | None = None  # [n, width, D] the prefill input, positions added
    width: int = 1  # prefill positions (set when it joins)
    last: list[int] = field(default_factory=list)  # per slot: the prefill position whose logits are sampled
    got: dict[int, torch.Tensor] = field(default_factory=dict)  # per slot: those logits, as they come
    prefilled: int = 0
    cross_len: int | None = None  # its conditioning's cross-attention positions (None: Melody's prefix)
    logits: torch.Tensor | None = None  # [n, K, V] pending sample
    pos: int = 0  # where its next sampled token goes
    done: int = 0
    result: LoopResult = field(default_factory=LoopResult)

    @property
    def n(self) -> int:
        return 2 if self.row.guided else 1

    def needs(self, cross: bool) -> tuple[int, int]:
        """(cache positions, cross-attention positions) this row needs."""
        prefix = 0 if cross else max(int(c.shape[0]) for c in self.conds)
        return prefix + self.length, max(int(c.shape[0]) for c in self.conds) if cross else 0


class MusicGenStage:
    def __init__(self, loop: MusicGenLoop, slots: int, prefill_chunk: int = 32):
        if slots < 2 or prefill_chunk < 1:
            raise ValueError(f"need slots >= 2 (a guided row takes two) and prefill_chunk >= 1, got {slots}, "
                             f"{prefill_chunk}")
        self.loop, self.n_slots, self.chunk = loop, slots, prefill_chunk
        self.step_module = loop.step_module
        self.slots: list[StageRow | None] = [None] * slots
        self.waiting: deque[StageRow] = deque()
        self.pool: tuple[int, int] | None = None  # (cache length, cross length) of the set-up cache
        self.min_length = 0  # the pool's least length (``warm_up``'s: the compiled steps' shape)
        self.table: torch.Tensor | None = None
        self.steps = 0
        self._pad: torch.Tensor | None = None  # a free slot's input: the pad id in every codebook

    # --- rows ----------------------------------------------------------------------------------------
    def admit(self, row: LoopRow) -> StageRow:
        loop = self.loop
        tp = 0 if row.prompt_codes is None else int(row.prompt_codes.shape[-1])
        length = 1 + tp + row.new_tokens
        pattern = delay_pattern(loop.num_codebooks, loop.audio_channels, length, loop.pad_id, row.prompt_codes)
        device = next(loop.model.parameters()).device
        conds = [row.cond] + ([row.uncond] if row.guided else [])
        masks = [row.cond_mask] + ([row.uncond_mask] if row.guided else [])
        sr = StageRow(row=row, tokens=pattern.clone().to(device), free=(pattern == FREE).to(device), length=length,
                      first=tp + 1, conds=conds, masks=masks)
        self.waiting.append(sr)
        return sr

    def cancel(self, sr: StageRow, error: BaseException) -> None:
        sr.result.error = sr.result.error or error
        self._leave(sr)

    @property
    def idle(self) -> bool:
        return not self.waiting and all(s is None for s in self.slots)

    def _leave(self, sr: StageRow) -> None:
        if sr in self.waiting:
            self.waiting.remove(sr)
        if sr.slot is not None:
            for s in range(sr.slot, sr.slot + sr.n):
                if self.slots[s] is sr:
                    self.slots[s] = None
        sr.slot = None

    def _free_run(self, n: int) -> int | None:
        for s in range(self.n_slots - n + 1):
            if all(x is None for x in self.slots[s:s + n]):
                return s
        return None

    # --- the pool -------------------------------------------------------------------------------------
    def _setup_pool(self) -> None:
        """Size the cache for the rows waiting now (the stage is idle: nothing running is touched)."""
        cross = self.step_module.cross
        need = [sr.needs(cross) for sr in self.waiting]
        length = _round_up(max([n for n, _ in need] + [self.min_length]), max(POOL_MULTIPLE, self.loop.length_multiple))
        lc = max([MIN_CROSS] + [c for _, c in need]) if cross else 0
        model = self.loop.model
        ref = next(model.decoder.parameters())
        states = keep = None
        if cross:
            states = torch.zeros(self.n_slots, lc, self.waiting[0].conds[0].shape[-1], device=ref.device,
                                 dtype=self.waiting[0].conds[0].dtype)
            keep = torch.zeros(self.n_slots, lc, dtype=torch.bool, device=ref.device)
        self.step_module.setup_cache(self.n_slots, length, states, keep)
        self.table = sinusoids(self.loop._decoder.embed_positions, length, ref.dtype, ref.device)
        self.do_sample = bool(model.generation_config.do_sample)
        self.warpers = warpers(model.generation_config)
        self.pool = (length, lc)

    def _fits(self, sr: StageRow) -> bool:
        n, c = sr.needs(self.step_module.cross)
        return n <= self.pool[0] and c <= self.pool[1]

    def _join(self, sr: StageRow) -> None:
        """Its slots' conditioning and its prefill input (no compute on the other slots)."""
        step = self.step_module
        dtype = self.table.dtype
        if step.cross:
            lc = max(int(c.shape[0]) for c in sr.conds)
            sr.cross_len = kept_length(sr.conds, sr.masks)
            states = sr.conds[0].new_zeros(sr.n, lc, sr.conds[0].shape[-1])
            keep = torch.zeros(sr.n, lc, dtype=torch.bool, device=states.device)
            for j, (c, m) in enumerate(zip(sr.conds, sr.masks)):
                states[j, : c.shape[0]] = c
                keep[j, : c.shape[0]] = m
            step.set_cross(sr.slot, states, keep)
        sr.prefix = [0 if step.cross else int(c.shape[0]) for c in sr.conds]
        emb = step.embed(sr.tokens[None, :, : sr.first])[0]
        seq = [emb if step.cross else torch.cat([c.to(dtype), emb], dim=0) for c in sr.conds]
        width = max(x.shape[0] for x in seq)
        hidden = torch.zeros(sr.n, width, seq[0].shape[-1], device=emb.device, dtype=dtype)
        for j, x in enumerate(seq):
            hidden[j, : x.shape[0]] = x
        sr.hidden = hidden + self.table[torch.arange(width, device=emb.device)][None]
        sr.width = width
        sr.last = [x.shape[0] - 1 for x in seq]
        sr.logits = None
        sr.pos = sr.first

    # --- one step -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[StageRow]:
        """Admit waiting rows that fit, prefill joining rows (``chunk`` positions in all while rows decode,
        else whole), sample, decode one token for every running row. -> the rows that left this step (``result.tokens`` or ``result.error``)."""
        left: list[StageRow] = []
        if self.idle:
            return left
        if all(s is None for s in self.slots):  # idle until now: the decoder's cache may have served others
            self._setup_pool()
        while self.waiting and self._fits(self.waiting[0]):
            sr = self.waiting[0]
            at = self._free_run(sr.n)
            if at is None:
                break
            self.waiting.popleft()
            sr.slot = at
            for s in range(at, at + sr.n):
                self.slots[s] = sr
            self._guarded(sr, self._join, left)
        rows = list(dict.fromkeys(s for s in self.slots if s is not None))
        # prefill: ``chunk`` positions a step in all while rows are decoding, else no limit
        budget = self.chunk if any(sr.prefilled >= sr.width for sr in rows) else None
        for sr in [sr for sr in rows if sr.prefilled < sr.width]:
            if budget is not None and budget <= 0:
                break
            n = sr.width - sr.prefilled if budget is None else min(budget, sr.width - sr.prefilled)
            self._guarded(sr, lambda sr, n=n: self._prefill_chunk(sr, n), left)
            if budget is not None:
                budget -= n
        sampling = [sr for sr in rows if sr.logits is not None and sr.slot is not None]
        for sr in sampling:  # progress first (as the loop does); raising ends that row alone
            self._guarded(sr, self._progress, left)
        sampling = [sr for sr in sampling if sr.slot is not None]
        if sampling:
            probs = self._scores(sampling)
            k = self.loop.num_codebooks
            for i, sr in enumerate(sampling):
                self._guarded(sr, lambda sr, p=probs[i * k:(i + 1) * k]: self._place(sr, p), left)
        running = [sr for sr in rows if sr.slot is not None and sr.prefilled >= sr.width and sr.logits is None]
        if running:
            self._decode(running)
        return left

    def _guarded(self, sr: StageRow, fn, left: list) -> None:
        try:
            fn(sr)
        except Exception as e:  # a cancel from on_step, a bad input: this row ends alone
            sr.result.error = e
        if sr.result.error is not None or sr.result.tokens is not None:
            self._leave(sr)
            left.append(sr)

    def _prefill_chunk(self, sr: StageRow, n: int) -> None:
        a = sr.prefilled
        b = min(sr.width, a + n)
        pos = torch.arange(a, b, device=sr.hidden.device)[None].expand(sr.n, b - a)
        out = self.step_module(sr.hidden[:, a:b], pos, first=sr.slot, upto=b,
                               cross_upto=sr.cross_len)  # [n, K, b - a, V]
        for j, last in enumerate(sr.last):  # each slot's last prompt position, as it comes
            if a <= last < b:
                sr.got[j] = out[j, :, last - a]
        sr.prefilled = b
        if b == sr.width:
            sr.logits = torch.stack([sr.got[j] for j in range(sr.n)])
            sr.hidden, sr.got = None, {}  # the prefill input is no longer needed

    @staticmethod
    def _progress(sr: StageRow) -> None:
        if sr.row.on_step is not None:
            sr.row.on_step(sr.done + 1)

    def _scores(self, batch: list[StageRow]) -> torch.Tensor:
        """[len(batch) * K, V]: every sampling row's guided scores, warped in one call (temperature, top-k and
        top-p act on each line alone, so each row's lines are what they are alone) and, when sampling, their
        probabilities; only the draw itself stays per row (its own generator)."""
        parts = []
        for sr in batch:
            logits, sr.logits = sr.logits.float(), None
            scores = logits[0]
            if sr.row.guided:
                scores = logits[1] + (logits[0] - logits[1]) * sr.row.guidance_scale
            parts.append(scores)
        scores = torch.cat(parts)
        for warp in self.warpers:
            scores = warp(None, scores)
        return F.softmax(scores, dim=-1) if self.do_sample else scores

    def _place(self, sr: StageRow, scores: torch.Tensor) -> None:
        """Draw (or take the best of) ``scores`` [K, V] and put it at the row's next position."""
        row = sr.row
        if self.do_sample:
            new = torch.multinomial(scores, 1, generator=row.generator)[:, 0]
        else:
            new = scores.argmax(-1)
        j = sr.pos
        sr.tokens[:, j] = torch.where(sr.free[:, j], new, sr.tokens[:, j])
        sr.pos += 1
        sr.done += 1
        if sr.done == row.new_tokens:
            sr.result.tokens = sr.tokens

    def _decode(self, running: list[StageRow]) -> None:
        step = self.step_module
        table = self.table
        device = table.device
        top = max(sr.slot + sr.n for sr in running)
        S = bucket(top, self.n_slots)
        # built as lists, one tensor each (not a small tensor write per slot)
        cols = [self._pad_column(device)] * S
        where = [0] * S
        for s in range(S):  # a prefilling slot's dummy goes where its next chunk writes
            sr = self.slots[s]
            if sr is not None and sr not in running:
                where[s] = sr.prefilled
        for sr in running:
            p = sr.pos - 1  # the token just placed
            col = sr.tokens[:, p]
            for j in range(sr.n):
                cols[sr.slot + j] = col
                where[sr.slot + j] = sr.prefix[j] + p
        fed = torch.stack(cols)  # [S, K]
        pos = torch.tensor(where, dtype=torch.long, device=device)[:, None]
        hidden = step.embed(fed[:, :, None]) + table[pos]
        if self.loop.compile:  # one shape for the whole pool: the whole cache length
            logits = self.loop._step_fn()(hidden, pos)[:, :, 0]
        else:  # eager: attend only as far as the furthest slot has written, and the longest conditioning
            cross = max((sr.cross_len for sr in running), default=None) if step.cross else None
            logits = step(hidden, pos, upto=int(pos.max()) + 1, cross_upto=cross)[:, :, 0]
        if step.keys_0.device.type == "cuda" and self.loop.compile:  # CUDA graphs reuse the output buffer
            logits = logits.clone()
        for sr in running:
            sr.logits = logits[sr.slot:sr.slot + sr.n]
        self.steps += 1

    def _pad_column(self, device) -> torch.Tensor:
        col = self._pad
        if col is None or col.device != device:
            col = self._pad = torch.full((self.loop.num_codebooks,), self.loop.pad_id, dtype=torch.long, device=device)
        return col

    def warm_up(self, length: int, cross_len: int = MIN_CROSS) -> None:
        """Set up a pool of ``length`` positions and run the decode step at every fixed size once (each
        compiled once when the loop compiles its step); later pools are at least this long, so rows up to
        ``length`` positions run the warmed shapes."""
        step = self.step_module
        ref = next(self.loop.model.decoder.parameters())
        length = _round_up(length, max(POOL_MULTIPLE, self.loop.length_multiple))
        states = keep = None
        if step.cross:
            dim = self.loop.model.decoder.config.hidden_size
            states = torch.zeros(self.n_slots, cross_len, dim, device=ref.device, dtype=ref.dtype)
            keep = torch.zeros(self.n_slots, cross_len, dtype=torch.bool, device=ref.device)
            keep[:, 0] = True
        with torch.inference_mode():
            step.setup_cache(self.n_slots, length, states, keep)
            table = sinusoids(self.loop._decoder.embed_positions, length, ref.dtype, ref.device)
            for S in sorted({bucket(n, self.n_slots) for n in range(1, self.n_slots + 1)}):
                fed = torch.full((S, self.loop.num_codebooks, 1), self.loop.pad_id, dtype=torch.long,
                                 device=ref.device)
                pos = torch.zeros(S, 1, dtype=torch.long, device=ref.device)
                self.loop._step_fn()(step.embed(fed) + table[pos], pos)
        self.pool = None  # the next rows set the pool up again
        self.min_length = length
