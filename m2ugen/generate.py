"""Text decoding for M2UGen: the official sampling semantics with a KV cache.

Official loop (``M2UGen.generate``, reference §3.1): every step re-runs the whole sequence; sampling
is softmax(logits / T) then nucleus top-p (``sample_top_p``), argmax when T == 0; it stops when the
last tokens decode to ``"\\n###"``; the hidden state (last layer, before the final norm) of the
position that *predicts* each ``[AUDk]`` token is gathered, the list restarting at ``[AUD0]``; the
reply is cut at the first newline token.

Here the prompt is prefilled once and each step feeds one token through the model's static-shape
``decode_step`` (``recompute=False``; compiled with ``compile=True`` or ``llama.compile_decode()``), rows
are left-padded for batch > 1, EOS also stops a row, and sampling draws from a seeded
``torch.Generator``. ``recompute=True`` keeps the official O(N^2) algorithm for tests and benchmarks.

Rows are independent: each has its own ``max_new_tokens``, ``temperature``, ``top_p`` and generator,
and row b of a batch gives the tokens it gives alone (same seed). A row that stops (or that
``on_step`` cancels) leaves the batch at once: the KV cache and adapters are compacted to the rows
still running, so finished rows cost no more work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from m2ugen.llama import Transformer

STOP_TEXT = "\n###"


@dataclass
class Generation:
    """One row's result."""

    prompt_tokens: list[int]
    tokens: list[int]  # every generated token, including the stop sequence / EOS
    reply_tokens: list[int]  # tokens up to the first newline (official cut), EOS removed
    text: str  # decode(reply_tokens), [AUDk] kept literally (official)
    aud_hidden: torch.Tensor | None  # [8, dim] states predicting [AUD0..7], when all 8 were produced
    stop_reason: str  # "stop_text" | "eos" | "length" | "cancelled"
    aud_positions: list[int] = field(default_factory=list)  # indices into ``tokens`` of gathered [AUD]


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling as in Meta's LLaMA: probs [B, V] -> token ids [B, 1].

    Sort descending, drop every entry whose preceding cumulative mass already exceeds p,
    renormalise, draw one sample.
    """
    probs_sorted, idx = torch.sort(probs, dim=-1, descending=True)
    cum = torch.cumsum(probs_sorted, dim=-1)
    probs_sorted = probs_sorted.masked_fill(cum - probs_sorted > p, 0.0)
    probs_sorted = probs_sorted / probs_sorted.sum(dim=-1, keepdim=True)
    choice = torch.multinomial(probs_sorted, num_samples=1, generator=generator)  # [B, 1]
    return torch.gather(idx, -1, choice)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator=None) -> torch.Tensor:
    """logits [B, V] fp32 -> next ids [B]; greedy when temperature == 0."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return sample_top_p(probs, top_p, generator).squeeze(-1)


class AudGather:
    """Official [AUD] gathering: keep h when the sampled token is the next expected [AUDk]."""

    def __init__(self, audio_ids: list[int]):
        self.audio_ids = audio_ids
        self.expect = 0
        self.states: list[torch.Tensor] = []
        self.positions: list[int] = []

    def step(self, token: int, h: torch.Tensor, position: int):
        if not self.audio_ids or token != self.audio_ids[self.expect]:
            return
        if self.expect == 0:
            self.states, self.positions = [], []
        self.states.append(h.clone())
        self.positions.append(position)
        self.expect = (self.expect + 1) % len(self.audio_ids)

    def result(self) -> torch.Tensor | None:
        if self.audio_ids and len(self.states) == len(self.audio_ids):
            return torch.stack(self.states)  # [8, dim]
        return None


def _ends_with_stop(tokenizer, tokens: list[int], stop_text: str) -> bool:
    if not stop_text or not tokens:
        return False
    tail = tokenizer.decode(tokens[-4:], skip_special_tokens=False)
    return tail.endswith(stop_text)


def _per_row(value, n: int, name: str) -> list:
    """One value for every row, or a list/tuple of exactly n values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} lists {len(value)} values for {n} prompts")
        return list(value)
    return [value] * n


def _sample_rows(logits: torch.Tensor, temps: list[float], top_ps: list[float], gens: list) -> list[int]:
    """Next token of each row [n, V]: rows sharing (temperature, top_p, generator) draw in one call.

    A row with its own generator therefore draws exactly as it would alone.
    """
    groups: dict[tuple, list[int]] = {}
    for j, key in enumerate(zip(temps, top_ps, (id(g) for g in gens))):
        groups.setdefault(key, []).append(j)
    out = [0] * len(temps)
    for js in groups.values():
        j0 = js[0]
        sel = logits[j0:j0 + 1] if len(js) == 1 else logits[js]
        for j, t in zip(js, sample_next(sel, temps[j0], top_ps[j0], gens[j0]).tolist()):
            out[j] = t
    return out


@torch.no_grad()
def generate(
    llama: Transformer,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int | list[int],
    temperature: float | list[float] = 0.6,
    top_p: float | list[float] = 0.8,
    adapters: list[torch.Tensor | None] | None = None,
    generator: torch.Generator | list[torch.Generator | None] | None = None,
    audio_token_ids: list[int] | None = None,
    stop_text: str = STOP_TEXT,
    stop_on_eos: bool = True,
    on_step: Callable[[list[list[int]]], Iterable[int] | None] | None = None,
    recompute: bool = False,
    compile: bool | None = None,
) -> list[Generation]:
    """Decode up to ``max_new_tokens`` per prompt (bounded by ``max_seq_len`` minus the row's prompt).

    prompts: token ids incl. BOS, one list per row (rows are left-padded). ``max_new_tokens``,
    ``temperature``, ``top_p`` and ``generator``: one value for all rows or a list with one per row;
    a row with its own generator gives the tokens it gives alone. adapters: per-layer, batch 1 or
    len(prompts). on_step(tokens_so_far per row) is called after every step; it may return row
    indices to cancel (they stop at once, stop_reason "cancelled", tokens so far kept; the others go
    on unchanged); an exception from it propagates. recompute=True runs the official whole-sequence
    recompute at every step. compile: True compiles the decode step (``llama.compile_decode()``, once
    per model), False runs it eagerly, None (default) keeps the model's setting (eager unless compiled).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    B = len(prompts)
    max_new = _per_row(max_new_tokens, B, "max_new_tokens")
    temps = _per_row(temperature, B, "temperature")
    top_ps = _per_row(top_p, B, "top_p")
    gens = _per_row(generator, B, "generator")
    for n in max_new:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {n!r}")
    for t, p in zip(temps, top_ps):
        if not t >= 0 or not 0 < p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {t}, {p}")
    if adapters is not None:
        for a in adapters:
            if a is not None and a.shape[0] not in (1, B):
                raise ValueError(f"an adapter has batch {a.shape[0]}; it must be 1 or the number of prompts ({B})")
    max_seq_len = llama.cfg.max_seq_len
    P = max(len(p) for p in prompts)
    if P >= max_seq_len:
        raise ValueError(f"prompt of {P} tokens leaves no room in the context of {max_seq_len} tokens")
    # a row ends at its own max_new_tokens or when its own prompt + reply fill the context
    limits = [min(n, max_seq_len - len(p)) for n, p in zip(max_new, prompts)]
    total = P + max(limits)  # columns of the left-padded batch
    device = llama.tok_embeddings.weight.device
    pad_id = 0
    eos_id = tokenizer.eos_token_id
    if compile is True:
        llama.compile_decode()

    tokens = torch.full((B, total), pad_id, dtype=torch.long, device=device)
    valid = torch.ones(B, total, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p):P] = torch.tensor(p, dtype=torch.long, device=device)
        valid[b, : P - len(p)] = False
    prompt_len = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)

    generated: list[list[int]] = [[] for _ in range(B)]
    gathers = [AudGather(list(audio_token_ids or [])) for _ in range(B)]
    stop_reason = ["length"] * B
    done = [False] * B
    active = list(range(B))  # original rows of the running batch, in order
    per_row_adapters = B > 1 and adapters is not None and any(a is not None and a.shape[0] == B for a in adapters)

    def rows_of(a, rows):
        """The batch rows ``rows`` of a per-row tensor (batch-1 tensors broadcast and stay as they are)."""
        return a if a is None or a.shape[0] == 1 else a.index_select(0, rows)

    eager = compile is False
    if not recompute:
        llama.setup_cache(B, total)
    try:
        if recompute:
            logits, h = llama(tokens[:, :P], adapters=adapters, key_valid=valid[:, :P])
        else:
            logits, h = llama(tokens[:, :P], start_pos=0, adapters=adapters, key_valid=valid[:, :P])
            step_valid = torch.ones(B, llama.cache_len, dtype=torch.bool, device=device)
            step_valid[:, :total] = valid
            adapter_kv = llama.adapter_kv(adapters)
        h_last = h[:, -1]
        rows = torch.arange(B, device=device)  # ``active`` on the device
        cur = P  # column of the token sampled next
        while True:
            nxt = _sample_rows(logits, [temps[b] for b in active], [top_ps[b] for b in active],
                               [gens[b] for b in active])
            for j, b in enumerate(active):
                t = nxt[j]
                gathers[b].step(t, h_last[j], len(generated[b]))
                generated[b].append(t)
                reason = stop_after(tokenizer, generated[b], limits[b], eos_id if stop_on_eos else None, stop_text)
                if reason is not None:
                    done[b], stop_reason[b] = True, reason
            tokens[rows, cur] = torch.tensor(nxt, dtype=torch.long, device=device)
            cur += 1
            if on_step is not None:
                for b in on_step(generated) or ():
                    if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < B:
                        raise ValueError(f"on_step returned {b!r}: row indices are ints in [0, {B})")
                    if not done[b]:
                        done[b], stop_reason[b] = True, "cancelled"
            keep = [j for j, b in enumerate(active) if not done[b]]
            if not keep:
                break
            if len(keep) < len(active):  # compact the batch to the rows still running
                keep_t = torch.tensor(keep, dtype=torch.long, device=device)
                active = [active[j] for j in keep]
                rows = torch.tensor(active, dtype=torch.long, device=device)
                if not recompute:
                    llama.keep_cache_rows(keep_t)
                    step_valid = step_valid.index_select(0, keep_t)
                    if per_row_adapters:
                        adapter_kv = [None if kv is None else tuple(rows_of(x, keep_t) for x in kv)
                                      for kv in adapter_kv]
            if recompute:
                row_adapters = None if adapters is None else [rows_of(a, rows) for a in adapters]
                logits, h = llama(tokens[rows, :cur], adapters=row_adapters, key_valid=valid[rows, :cur])
                h_last = h[:, -1]
            else:
                n_real = prompt_len.index_select(0, rows) + (cur - P)  # real tokens so far, incl. the new one
                logits, h_last = llama.decode_step(
                    tokens[rows, cur - 1:cur], torch.tensor([cur - 1], device=device), n_real - 1,
                    step_valid, adapter_kv, eager=eager)
                if llama.decode_compiled and not eager:  # CUDA graphs reuse their output buffers at the next step
                    logits, h_last = logits.clone(), h_last.clone()
    finally:
        if not recompute:
            llama.clear_cache()

    return [generation(tokenizer, prompts[b], generated[b], stop_reason[b], gathers[b]) for b in range(B)]


def stop_after(tokenizer, generated: list[int], limit: int, eos_id: int | None, stop_text: str = STOP_TEXT) -> str | None:
    """Why a row stops after its latest token ("eos", "stop_text", "length"), or None: it goes on."""
    if eos_id is not None and generated[-1] == eos_id:
        return "eos"
    if _ends_with_stop(tokenizer, generated, stop_text):
        return "stop_text"
    if len(generated) >= limit:
        return "length"
    return None


def generation(tokenizer, prompt: list[int], gen: list[int], stop_reason: str, gather: "AudGather") -> Generation:
    """One row's ``Generation``: the reply cut at the first newline (official), EOS removed."""
    newline_id = tokenizer.convert_tokens_to_ids("<0x0A>")
    reply = gen[: gen.index(newline_id)] if newline_id in gen else list(gen)
    if stop_reason == "eos" and reply and reply[-1] == tokenizer.eos_token_id:
        reply = reply[:-1]
    hidden = gather.result()
    return Generation(prompt_tokens=list(prompt), tokens=gen, reply_tokens=reply,
                      text=tokenizer.decode(reply, skip_special_tokens=False), aud_hidden=hidden,
                      stop_reason=stop_reason, aud_positions=list(gather.positions) if hidden is not None else [])


def reference_generate(llama: Transformer, tokenizer, prompts: list[list[int]], **kwargs) -> list[Generation]:
    """The official algorithm: the whole sequence is recomputed at every step (O(N^2) token-forwards)."""
    return generate(llama, tokenizer, prompts, recompute=True, **kwargs)


@torch.no_grad()
def teacher_force_hidden(
    llama: Transformer,
    prefix: list[int],
    appended: list[int],
    adapters: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Hidden states [len(appended), dim] of the positions that predict each appended token.

    Runs prefix + appended once (no cache); position len(prefix) - 1 + i predicts appended[i].
    """
    if not prefix:
        raise ValueError("teacher forcing needs a non-empty prefix")
    ids = list(prefix) + list(appended)
    if len(ids) > llama.cfg.max_seq_len:
        raise ValueError(f"{len(ids)} tokens exceed the context of {llama.cfg.max_seq_len} tokens")
    device = llama.tok_embeddings.weight.device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    _, h = llama(x, adapters=adapters, logits_for="none")  # [1, N, dim]
    start = len(prefix) - 1
    return h[0, start:start + len(appended)]
