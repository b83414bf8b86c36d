"""Text decoding for M2UGen: the official sampling semantics with a KV cache.

Official loop (``M2UGen.generate``, reference §3.1): every step re-runs the whole sequence; sampling
is softmax(logits / T) then nucleus top-p (``sample_top_p``), argmax when T == 0; it stops when the
last tokens decode to ``"\\n###"``; the hidden state (last layer, before the final norm) of the
position that *predicts* each ``[AUDk]`` token is gathered, the list restarting at ``[AUD0]``; the
reply is cut at the first newline token.

Here the prompt is prefilled once and each step feeds one token (``recompute=False``), rows are
left-padded for batch > 1, EOS also stops a row, and sampling draws from a seeded
``torch.Generator``. ``recompute=True`` keeps the official O(N^2) algorithm for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    stop_reason: str  # "stop_text" | "eos" | "length"
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


class _AudGather:
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


@torch.no_grad()
def generate(
    llama: Transformer,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.6,
    top_p: float = 0.8,
    adapters: list[torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    audio_token_ids: list[int] | None = None,
    stop_text: str = STOP_TEXT,
    stop_on_eos: bool = True,
    on_step: Callable[[list[list[int]]], None] | None = None,
    recompute: bool = False,
) -> list[Generation]:
    """Decode up to ``max_new_tokens`` per prompt (bounded by ``max_seq_len``).

    prompts: token ids incl. BOS, one list per row (rows are left-padded). adapters: per-layer,
    batch 1 or len(prompts). on_step(tokens_so_far per row) is called after every step; an exception
    from it propagates. recompute=True runs the official whole-sequence recompute at every step.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    max_seq_len = llama.cfg.max_seq_len
    B = len(prompts)
    P = max(len(p) for p in prompts)
    if P >= max_seq_len:
        raise ValueError(f"prompt of {P} tokens leaves no room in the context of {max_seq_len} tokens")
    total = min(max_seq_len, P + max_new_tokens)
    device = llama.tok_embeddings.weight.device
    pad_id = 0
    eos_id = tokenizer.eos_token_id
    newline_id = tokenizer.convert_tokens_to_ids("<0x0A>")

    tokens = torch.full((B, total), pad_id, dtype=torch.long, device=device)
    valid = torch.ones(B, total, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p):P] = torch.tensor(p, dtype=torch.long, device=device)
        valid[b, : P - len(p)] = False

    generated: list[list[int]] = [[] for _ in range(B)]
    gathers = [_AudGather(list(audio_token_ids or [])) for _ in range(B)]
    stop_reason = ["length"] * B
    done = [False] * B

    if not recompute:
        llama.setup_cache(B, total)
    try:
        if recompute:
            logits, h = llama(tokens[:, :P], adapters=adapters, key_valid=valid[:, :P])
        else:
            logits, h = llama(tokens[:, :P], start_pos=0, adapters=adapters, key_valid=valid[:, :P])
        cur = P
        while True:
            nxt = sample_next(logits, temperature, top_p, generator)  # [B]
            nxt_list = nxt.tolist()
            for b in range(B):
                if done[b]:
                    nxt_list[b] = pad_id
                    continue
                t = nxt_list[b]
                gathers[b].step(t, h[b, -1], len(generated[b]))
                generated[b].append(t)
                if stop_on_eos and t == eos_id:
                    done[b], stop_reason[b] = True, "eos"
                elif _ends_with_stop(tokenizer, generated[b], stop_text):
                    done[b], stop_reason[b] = True, "stop_text"
            tokens[:, cur] = torch.tensor(nxt_list, dtype=torch.long, device=device)
            cur += 1
            if on_step is not None:
                on_step(generated)
            if all(done) or cur >= total:
                break
            if recompute:
                logits, h = llama(tokens[:, :cur], adapters=adapters, key_valid=valid[:, :cur])
            else:
                logits, h = llama(tokens[:, cur - 1:cur], start_pos=cur - 1, adapters=adapters,
                                  key_valid=valid[:, :cur])
    finally:
        llama.clear_cache()

    results = []
    for b in range(B):
        gen = generated[b]
        reply = gen[: gen.index(newline_id)] if newline_id in gen else list(gen)
        if stop_reason[b] == "eos" and reply and reply[-1] == eos_id:
            reply = reply[:-1]
        results.append(Generation(
            prompt_tokens=list(prompts[b]),
            tokens=gen,
            reply_tokens=reply,
            text=tokenizer.decode(reply, skip_special_tokens=False),
            aud_hidden=gathers[b].result(),
            stop_reason=stop_reason[b],
            aud_positions=list(gathers[b].positions) if gathers[b].result() is not None else [],
        ))
    return results


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
