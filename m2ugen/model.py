"""The top-level M2UGen model: encoders -> bridges -> LLaMA (+ adapters) -> [AUD] states -> music decoder.

Attribute names follow the official state dict where a module owns weights (``llama``, ``mu_mert``,
``iu_vit``, ``iu_vivit``, ``prefix_query``, ``output_projector``); the frozen encoders and the music
decoder live in lazy holders (``music_encoder``, ``image_encoder``, ``video_encoder``, ``decoder``)
that are *not* registered as submodules: they load their own weights when first used.

Public API: docs/model-api.md.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from m2ugen.bridges import UnderstandingBridge
from m2ugen.config import GATE_INITS, PROMPT_TEMPLATE, M2UGenConfig
from m2ugen.generate import Generation, generate, teacher_force_hidden
from m2ugen.lean import default_dtype
from m2ugen.llama import Transformer, build_adapters
from m2ugen.projector import OutputProjector
from m2ugen.tokenizer import audio_token_ids, load_tokenizer

logger = logging.getLogger("m2ugen")

_AUD_RE = re.compile(r"\[AUD\d+\]")
CONTINUATIONS = ("new", "with_source")  # chat(mode="continue"): the new material alone, or source + new


@dataclass
class Event:
    """Progress report passed to ``chat(on_event=...)``; stage in encoding | thinking | generating."""

    stage: str
    fraction: float
    text: str = ""


@dataclass
class Reply:
    """What ``chat`` returns. ``audio`` is float32 [channels, samples] or None."""

    text: str  # the reply without [AUDk] tokens
    audio: np.ndarray | None
    sample_rate: int
    seed: int = 0
    raw_text: str = ""  # the reply as decoded, [AUDk] kept (what the official code feeds the decoder)
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "text"  # the edit mode the audio was made with (see M2UGen.chat)


@dataclass
class ChatRequest:
    """One ``chat`` request (the arguments of ``M2UGen.chat``), for ``M2UGen.chat_batch``."""

    prompt: str
    audio: Any = None
    image: Any = None
    video: Any = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    conditioning: str = "text"
    duration_s: float = 10.0
    want_audio: bool | None = None
    on_event: Callable[[Event], None] | None = None
    mode: str = "text"
    continuation: str = "new"
    chroma: Any = None
    vocoder: str = "encodec"
    music_hint: str | None = None


@dataclass
class _Row:
    """One request on its way through ``chat_batch``: its plan, then what each step made of it."""

    req: ChatRequest
    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    want_audio: bool | None
    duration_s: float
    emit: Callable[[Event], None]
    adapters: list = field(default_factory=list)
    raw_text: str = ""
    hidden: torch.Tensor | None = None
    decode_music: bool = False
    keep: int = 0
    audio: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    sample_rate: int = 0

    def result(self) -> "Reply | BaseException":
        if self.error is not None:
            return self.error
        return Reply(text=_clean(self.raw_text), audio=self.audio, sample_rate=self.sample_rate, seed=self.seed,
                     raw_text=self.raw_text, timings=self.timings, mode=self.req.mode)


def _live(rows: list) -> list["_Row"]:
    return [r for r in rows if not isinstance(r, BaseException) and r.error is None]


def _stack_adapters(per_row: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """Per-row adapters (each layer [1, 1, dim] or None for every row alike) -> per-layer [B, 1, dim]."""
    if len(per_row) == 1:
        return per_row[0]
    out: list[torch.Tensor | None] = []
    for layer in zip(*per_row):
        if all(a is None for a in layer):
            out.append(None)
        else:
            out.append(torch.cat([a.expand(1, *a.shape[1:]) for a in layer], dim=0))
    return out


def _llama_dtype(cfg: M2UGenConfig) -> torch.dtype:
    dtype = getattr(torch, cfg.dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"cfg.dtype {cfg.dtype!r} is not a torch floating dtype")
    return dtype


def _set_plain(obj: nn.Module, name: str, value: Any):
    """Keep a holder as a plain attribute (never a registered submodule, never in the state dict)."""
    object.__setattr__(obj, name, value)


class M2UGen(nn.Module):
    def __init__(self, cfg: M2UGenConfig, tokenizer=None, *, llama_device: str | torch.device | None = None):
        """The model with random weights; the LLaMA's made directly in ``cfg.dtype`` (no fp32 copy to cast),
        on ``llama_device`` when given (``"meta"``: to be materialised block by block, see ``from_config``)."""
        super().__init__()
        if tokenizer is None:
            if cfg.tokenizer_path is None and not cfg.is_tiny:
                logger.warning("config %r has no tokenizer_path: using the tiny tokenizer, which only suits "
                               "shape checks; real weights need LLaMA-2's tokenizer.model", cfg.name)
            tokenizer = load_tokenizer(cfg)
        if cfg.vocab_size == 0:
            cfg = cfg.replace(vocab_size=len(tokenizer))
        if cfg.vocab_size < len(tokenizer):
            raise ValueError(f"cfg.vocab_size {cfg.vocab_size} is smaller than the tokenizer ({len(tokenizer)})")
        self.cfg = cfg
        _set_plain(self, "tokenizer", tokenizer)
        self.audio_token_ids = audio_token_ids(tokenizer)

        with default_dtype(_llama_dtype(cfg)), (torch.device(llama_device) if llama_device else nullcontext()):
            self.llama = Transformer(cfg)
        self.mu_mert = UnderstandingBridge(cfg.mert_layers, cfg.mert_dim, cfg.dim, cfg.feature_scaler,
                                           cfg.bridge_norm_eps)
        self.iu_vit = UnderstandingBridge(cfg.vit_tokens, cfg.vit_dim, cfg.dim, cfg.feature_scaler,
                                          cfg.bridge_norm_eps)
        self.iu_vivit = UnderstandingBridge(cfg.vivit_tokens, cfg.vivit_dim, cfg.dim, cfg.feature_scaler,
                                            cfg.bridge_norm_eps)
        self.prefix_query = nn.Embedding(cfg.n_prefix, cfg.dim)
        self.output_projector = OutputProjector(
            cfg.dim, cfg.output_dim, cfg.num_gen_audio_tokens, cfg.num_output_tokens, cfg.projector_dim,
            cfg.projector_heads, cfg.projector_layers, cfg.projector_ffn,
        )

        from m2ugen import decoders, encoders

        _set_plain(self, "music_encoder", encoders.MusicEncoder(cfg))
        _set_plain(self, "image_encoder", encoders.ImageEncoder(cfg))
        _set_plain(self, "video_encoder", encoders.VideoEncoder(cfg))
        _set_plain(self, "decoder", decoders.build_decoder(cfg))

    # ------------------------------------------------------------------------------------------
    # construction and loading

    @classmethod
    def from_config(cls, cfg: M2UGenConfig, device: str | torch.device | None = None, tokenizer=None,
                    int8: bool = False) -> "M2UGen":
        """Random weights (official init: [AUD] input-embedding rows 1.0, LoRA l2 zero; gates per
        ``cfg.gate_init``: zero as official, or seeded random so that every input reaches the text). No downloads.

        Every LLaMA tensor is made once, in ``cfg.dtype``. ``int8``: the LLaMA is built on the meta device and
        materialised one block at a time, each block's projections quantized (``m2ugen.quant``) before the
        next is made, so the bf16/fp32 LLaMA never exists whole."""
        if cfg.gate_init not in GATE_INITS:
            raise ValueError(f"cfg.gate_init must be one of {', '.join(map(repr, GATE_INITS))}, got {cfg.gate_init!r}")
        if int8:
            from m2ugen.quant import quantize_llama_int8

            target = torch.device(device) if device is not None else torch.get_default_device()
            if target.type == "meta":
                raise ValueError("from_config(int8=True) needs a real device, not meta")
            model = cls(cfg, tokenizer=tokenizer, llama_device="meta")
            with torch.no_grad():
                model.llama.materialize_(target, on_block=lambda block: quantize_llama_int8(model.llama, only=block))
        else:
            model = cls(cfg, tokenizer=tokenizer)
        with torch.no_grad():
            model.llama.tok_embeddings.weight[model.audio_token_ids] = 1.0
            if cfg.gate_init == "random":
                model._random_gates()
        model.place(device)
        model.log_gate_report()
        return model.eval()

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "M2UGen":
        """Load real weights; see ``m2ugen.checkpoint.from_pretrained`` for the accepted sources."""
        from m2ugen import checkpoint

        model = checkpoint.from_pretrained(cls, *args, **kwargs)
        model.log_gate_report()
        return model

    def load_reference_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True):
        """Load a state dict with the official key names (``module.`` prefix allowed)."""
        from m2ugen import checkpoint

        result = checkpoint.load_reference_state_dict(self, sd, strict)
        self.log_gate_report()
        return result

    def place(self, device: str | torch.device | None = None) -> "M2UGen":
        """Cast the LLaMA to ``cfg.dtype`` (bridges/projector/prefix_query stay fp32, as official) and
        move everything to ``device`` (None: stay where built, e.g. on the meta device)."""
        from m2ugen.quant import llama_is_int8

        if not llama_is_int8(self.llama):  # an int8 LLaMA keeps its quantized projections as they are
            self.llama.to(_llama_dtype(self.cfg))
        if device is not None:
            self.to(device)
        return self

    def _apply(self, fn, recurse=True):
        # model.to(device) / .cuda(): the lazy holders follow the weights' device
        out = super()._apply(fn, recurse)
        dev = self.device
        if dev.type != "meta":
            for holder in self.holders():
                _move_holder(holder, dev)
        return out

    def set_submodel_dtype(self, dtype: torch.dtype) -> None:
        """The sub-models (encoders, music decoder) in ``dtype``: set before they load, cast if loaded
        (bf16 on a GPU: every matmul at the memory-bandwidth rate of half the bytes)."""
        for holder in self.holders():
            if hasattr(holder, "dtype"):
                holder.dtype = dtype
            if getattr(holder, "loaded", False) and isinstance(getattr(holder, "model", None), nn.Module):
                holder.model.to(dtype)

    def compile_decode(self) -> None:
        """Compile the per-token decode steps: the LLaMA's and (MusicGen decoders) the music decoder's."""
        self.llama.compile_decode()
        if hasattr(self.decoder, "compile"):
            self.decoder.compile = True

    def holders(self) -> list[Any]:
        """The lazy, non-module parts: music/image/video encoders and the music decoder."""
        return [h for h in (getattr(self, n, None) for n in ("music_encoder", "image_encoder", "video_encoder",
                                                             "decoder")) if h is not None]

    def preload(self, *names: str) -> None:
        """Build lazy parts now instead of at first use, e.g. ``preload("decoder", "music_encoder")``
        in a server, so the first request does not pay for loading them."""
        known = ("music_encoder", "image_encoder", "video_encoder", "decoder")
        for name in names:
            if name not in known:
                raise ValueError(f"preload: unknown part {name!r}; choose from {', '.join(known)}")
            t0 = time.perf_counter()
            getattr(self, name).load()
            logger.info("loaded %s in %.1f s", name, time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------------
    # properties

    @property
    def config(self) -> M2UGenConfig:
        return self.cfg

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def device(self) -> torch.device:
        return self.llama.tok_embeddings.weight.device

    @property
    def sample_rate(self) -> int:
        return int(self.decoder.sample_rate)

    def decoder_info(self) -> dict[str, Any]:
        """What the loaded music decoder is and can do, for a server to report (reads only its config)."""
        return {
            "kind": self.decoder.kind,  # "MusicGen" | "MusicGen-Melody" | "AudioLDM2"
            "music_decoder": self.cfg.music_decoder,
            "source": self.cfg.decoder_path or "tiny random",
            "channels": int(self.decoder.channels),
            "sample_rate": self.sample_rate,
            "modes": list(self.decoder.modes),  # edit modes chat(mode=...) accepts with this decoder
        }

    # ------------------------------------------------------------------------------------------
    # gates

    def _random_gates(self, seed: int = 11) -> None:
        """Seeded N(0, 1) gates (|tanh| ~ 0.6 on average): the adapters of every layer reach the output."""
        g = torch.Generator().manual_seed(seed)
        for layer in self.llama.layers:
            gate = layer.attention.gate
            if not gate.is_meta:
                gate.copy_(torch.randn(gate.shape, generator=g))

    def gate_report(self) -> dict[str, Any]:
        """tanh(gate) statistics over every layer/head; ``all_zero`` means modality inputs cannot affect text."""
        gates = [layer.attention.gate for layer in self.llama.layers]
        if any(g.is_meta for g in gates):
            return {"n_layers": len(gates), "all_zero": None, "note": "weights not materialised"}
        g = torch.tanh(torch.stack([x.detach().float().flatten() for x in gates]))  # [n_layers, n_heads]
        per_layer = g.abs().mean(dim=1)
        return {
            "n_layers": g.shape[0],
            "n_heads": g.shape[1],
            "min": float(g.min()),
            "max": float(g.max()),
            "mean_abs": float(g.abs().mean()),
            "per_layer_mean_abs": [float(x) for x in per_layer],
            "nonzero_layers": [i for i, x in enumerate(per_layer.tolist()) if x > 0],
            "all_zero": bool(torch.count_nonzero(g) == 0),
        }

    def log_gate_report(self) -> dict[str, Any]:
        rep = self.gate_report()
        if rep.get("all_zero") is None:
            return rep
        logger.info("attention gates tanh(gate): min %.4g max %.4g mean|.| %.4g, non-zero in %d of %d layers",
                    rep["min"], rep["max"], rep["mean_abs"], len(rep["nonzero_layers"]), rep["n_layers"])
        if rep["all_zero"]:
            logger.warning("every attention gate is zero: image/video/music inputs have no effect on the text "
                           "(the prefix adapters are multiplied by tanh(0) = 0)")
        return rep

    # ------------------------------------------------------------------------------------------
    # encoding

    def _bridge(self, bridge: UnderstandingBridge, feats: torch.Tensor, what: str) -> torch.Tensor:
        """Encoder output [T, D] or [B, T, D] -> [B, 1, dim] LLaMA-space features."""
        if not isinstance(feats, torch.Tensor):
            raise ValueError(f"{what} features must be a torch.Tensor, got {type(feats).__name__}")
        if feats.dim() == 2:
            feats = feats.unsqueeze(0)
        if feats.dim() != 3 or feats.shape[1:] != (bridge.in_tokens, bridge.in_dim):
            raise ValueError(f"{what} features must be [{bridge.in_tokens}, {bridge.in_dim}] (optionally batched), "
                             f"got {list(feats.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError(f"{what} features contain NaN or infinite values")
        p = bridge.agg.weight
        return bridge(feats.to(device=p.device, dtype=p.dtype))

    def encode_audio(self, audio) -> torch.Tensor:
        """(wave, sr) or a path -> [1, 1, dim]. MERT at 24 kHz mono; see m2ugen.encoders for windows."""
        from m2ugen import media

        wave = media.load_audio(audio, self.cfg.audio_sample_rate, self.cfg.max_audio_s)
        return self._bridge(self.mu_mert, self.music_encoder.encode(wave), "audio")

    def encode_image(self, image) -> torch.Tensor:
        return self._bridge(self.iu_vit, self.image_encoder.encode(image), "image")

    def encode_video(self, video) -> torch.Tensor:
        return self._bridge(self.iu_vivit, self.video_encoder.encode(video), "video")

    def adapters(self, audio_feats=None, image_feats=None, video_feats=None) -> list[torch.Tensor | None]:
        """Per-layer adapters from bridged features [B, 1, dim] (None = modality absent)."""
        return build_adapters(self.cfg, self.prefix_query.weight.float(), audio_feats, image_feats, video_feats)

    # ------------------------------------------------------------------------------------------
    # text

    def prompt_ids(self, prompt: str) -> list[int]:
        """The official prompt template with BOS; ValueError when empty or too long for the context."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        ids = self.tokenizer(PROMPT_TEMPLATE.format(instruction=prompt)).input_ids
        limit = self.cfg.max_seq_len
        if len(ids) >= limit:
            raise ValueError(f"prompt is {len(ids)} tokens with the template; the context limit is {limit} tokens "
                             f"(prompt + reply)")
        return ids

    @torch.no_grad()
    def next_token_logits(
        self,
        token_ids: torch.Tensor,
        audio_feats: torch.Tensor | None = None,
        image_feats: torch.Tensor | None = None,
        video_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits [B, vocab] (float32) after ``token_ids`` [B, T] (no padding; include BOS).

        ``*_feats`` are encoder outputs as ``model.music_encoder.encode`` / ``image_encoder.encode`` /
        ``video_encoder.encode`` return them ([tokens, dim], or batched [B or 1, tokens, dim]); they go
        through the bridges and into the adapter layers exactly as in ``chat``. With all gates zero (the
        official checkpoints, probably) the features cannot change the logits.
        """
        if not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 2 or token_ids.dtype != torch.long:
            raise ValueError("token_ids must be a [B, T] torch.long tensor")
        B, T = token_ids.shape
        if T == 0 or T > self.cfg.max_seq_len:
            raise ValueError(f"token_ids length must be 1..{self.cfg.max_seq_len}, got {T}")
        if token_ids.min() < 0 or token_ids.max() >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        feats = {}
        for name, bridge, x in (("audio", self.mu_mert, audio_feats), ("image", self.iu_vit, image_feats),
                                ("video", self.iu_vivit, video_feats)):
            if x is not None:
                f = self._bridge(bridge, x, name)
                if f.shape[0] not in (1, B):
                    raise ValueError(f"{name} features have batch {f.shape[0]}, tokens have batch {B}")
                feats[name] = f
        adapters = self.adapters(feats.get("audio"), feats.get("image"), feats.get("video"))
        logits, _ = self.llama(token_ids.to(self.device), adapters=adapters)
        return logits

    # ------------------------------------------------------------------------------------------
    # chat

    def _check_options(self, conditioning, duration_s, want_audio, max_new_tokens, temperature, top_p, seed):
        def real(x) -> bool:
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        def integer(x) -> bool:
            return isinstance(x, numbers.Integral) and not isinstance(x, bool)

        if conditioning not in ("text", "embedding"):
            raise ValueError(f"conditioning must be 'text' or 'embedding', got {conditioning!r}")
        if not real(duration_s) or duration_s <= 0:
            raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
        if want_audio not in (None, True, False):
            raise ValueError(f"want_audio must be None, True or False, got {want_audio!r}")
        if not integer(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not real(temperature) or temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not real(top_p) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if seed is not None and (not integer(seed) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    @torch.no_grad()
    def chat(
        self,
        prompt: str,
        audio=None,
        image=None,
        video=None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        conditioning: str = "text",
        duration_s: float = 10.0,
        want_audio: bool | None = None,
        on_event: Callable[[Event], None] | None = None,
        mode: str = "text",
        continuation: str = "new",
        chroma=None,
        vocoder: str = "encodec",
        music_hint: str | None = None,
    ) -> Reply:
        """One instruction -> Reply(text, audio, sample_rate, ...). See docs/model-api.md.

        conditioning="text" is the official inference: the decoder's text prompt is the reply as decoded,
        first line, with the literal "[AUD0]..[AUD7]" strings in it (kept for fidelity to the official
        outputs). conditioning="embedding" is what the paper trains for: output_projector(hidden states
        predicting [AUD0..7], their token embeddings) * cfg.embedding_scale conditions the decoder.
        want_audio: None decodes music only when the reply produced all eight [AUD] tokens; True appends
        them (teacher-forced through the LLM) when missing; False never decodes.

        mode (what the decoder hears of the source, ``audio``): "text" = the official behaviour (nothing);
        "continue" = MusicGen continues the source's last cfg.continue_prompt_s seconds; "melody" =
        MusicGen-Melody follows the source's chroma (or ``chroma``, [frames, 12] at 7.8125 frames per
        second, e.g. made from MIDI notes). continuation ("continue" only): "new" returns the
        ``duration_s`` of new material; "with_source" the re-decoded prompt followed by it. Modes other
        than "text" always make audio (want_audio None counts as True, False is refused).

        vocoder: "encodec" (MusicGen's own decoder) or "mbd" (Multi-Band Diffusion of the same codes).
        music_hint: facts for the music decoder alone, e.g. "120 bpm" (the project's tempo): appended to
        its text prompt in text conditioning ("<reply>, 120 bpm"); None (default) is the official prompt.
        """
        out = self.chat_batch([ChatRequest(
            prompt, audio=audio, image=image, video=video, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, conditioning=conditioning, duration_s=duration_s, want_audio=want_audio,
            on_event=on_event, mode=mode, continuation=continuation, chroma=chroma, vocoder=vocoder,
            music_hint=music_hint)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    @torch.no_grad()
    def chat_batch(self, requests: list["ChatRequest"]) -> list["Reply | BaseException"]:
        """Several ``chat`` requests run together: one batched LLaMA decode (rows left-padded, each with
        its own adapters, sampling settings, generator and stop), then one batched music decode of the
        rows that make audio (``decoder.generate_batch``: per-row guidance, length, seed, mode).

        Row i's result equals ``chat(**requests[i])`` alone (same seed, same tokens and audio), or the
        exception that request raised: an invalid request, or its ``on_event`` raising (a cancel) drops
        that row at once and leaves the others running.
        """
        rows: list[_Row | BaseException] = []
        for req in requests:
            try:
                rows.append(self._plan_row(req))
            except Exception as e:
                rows.append(e)
        # 1. encoding (per row: each has its own inputs)
        for row in _live(rows):
            self._guard(row, self._encode_row, row)
        # 2. thinking: one batched LLaMA decode
        live = list(_live(rows))
        if live:
            self._think(live)
        # 3. generating: one batched music decode
        music = [r for r in _live(rows) if r.decode_music]
        if music:
            self._generate_music(music)
        return [r if isinstance(r, BaseException) else r.result() for r in rows]

    def engine(self, max_rows: int = 4, prefill_chunk: int | None = None, finisher=None):
        """A continuous-batching engine over this model (``m2ugen.engine.Engine``): requests join and leave
        the running LLaMA and music decodes at every step; each row's result equals ``chat`` alone.
        ``finisher``: an executor that turns finished rows' codes into audio off the stepping thread."""
        from m2ugen.engine import Engine

        return Engine(self, max_rows=max_rows, prefill_chunk=prefill_chunk, finisher=finisher)

    # -- the steps of chat_batch (the engine runs the same steps row by row) -----------------------------
    def _plan_row(self, req: "ChatRequest") -> "_Row":
        cfg = self.cfg
        max_new_tokens = cfg.max_new_tokens if req.max_new_tokens is None else req.max_new_tokens
        temperature = cfg.temperature if req.temperature is None else req.temperature
        top_p = cfg.top_p if req.top_p is None else req.top_p
        self._check_options(req.conditioning, req.duration_s, req.want_audio, max_new_tokens, temperature, top_p,
                            req.seed)
        self._check_mode(req.mode, req.continuation, req.conditioning, req.audio, req.chroma, req.want_audio)
        want_audio = True if req.mode != "text" and req.want_audio is None else req.want_audio  # an edit makes audio
        ids = self.prompt_ids(req.prompt)
        max_new_tokens = int(max_new_tokens)
        if want_audio is True:
            room = cfg.max_seq_len - len(ids) - len(self.audio_token_ids)
            if room < 1:
                raise ValueError(f"prompt is {len(ids)} tokens; with the 8 [AUD] tokens it leaves no room in the "
                                 f"context limit of {cfg.max_seq_len} tokens")
            max_new_tokens = min(max_new_tokens, room)
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF if req.seed is None else int(req.seed)
        return _Row(req=req, ids=ids, max_new_tokens=max_new_tokens, temperature=float(temperature),
                    top_p=float(top_p), seed=seed, want_audio=want_audio, duration_s=float(req.duration_s),
                    emit=req.on_event if req.on_event is not None else (lambda event: None),
                    sample_rate=self.sample_rate)

    @staticmethod
    def _guard(row: "_Row", fn, *args) -> bool:
        """Run one row's step; an exception (a cancel from its on_event, a bad input) ends that row only."""
        try:
            fn(*args)
            return True
        except Exception as e:
            row.error = e
            return False

    def _encode_row(self, row: "_Row") -> None:
        t0 = time.perf_counter()
        req = row.req
        given = [(n, x) for n, x in (("audio", req.audio), ("image", req.image), ("video", req.video)) if x is not None]
        row.emit(Event("encoding", 0.0, ""))
        feats: dict[str, torch.Tensor] = {}
        for i, (name, x) in enumerate(given):
            feats[name] = getattr(self, f"encode_{name}")(x)
            row.emit(Event("encoding", (i + 1) / len(given), name))
        if not given:
            row.emit(Event("encoding", 1.0, ""))
        row.adapters = self.adapters(feats.get("audio"), feats.get("image"), feats.get("video"))
        row.timings["encoding"] = time.perf_counter() - t0

    def _think(self, rows: list["_Row"]) -> None:
        """One LLaMA decode for every live row, then the [AUD] states teacher-forced where missing."""
        t0 = time.perf_counter()
        streaming = [r.req.on_event is not None for r in rows]

        def on_step(tokens: list[list[int]]):
            dropped = []
            for b, row in enumerate(rows):
                if row.error is not None or not streaming[b]:
                    if row.error is not None:
                        dropped.append(b)
                    continue
                so_far = self.tokenizer.decode(tokens[b], skip_special_tokens=True).split("\n", 1)[0]  # official
                if not self._guard(row, row.emit, Event("thinking", min(1.0, len(tokens[b]) / row.max_new_tokens),
                                                        _clean(so_far))):
                    dropped.append(b)
            return dropped

        gens: list[Generation] = generate(
            self.llama, self.tokenizer, [r.ids for r in rows],
            max_new_tokens=[r.max_new_tokens for r in rows], temperature=[r.temperature for r in rows],
            top_p=[r.top_p for r in rows], adapters=_stack_adapters([r.adapters for r in rows]),
            generator=[torch.Generator(device=self.device).manual_seed(r.seed) for r in rows],
            audio_token_ids=self.audio_token_ids, on_step=on_step if any(streaming) else None,
        )
        for row, gen in zip(rows, gens):
            if row.error is None:
                self._guard(row, self._finish_reply, row, gen)
        for row in rows:
            row.timings["thinking"] = time.perf_counter() - t0

    def _finish_reply(self, row: "_Row", gen: Generation) -> None:
        """The reply's text and [AUD] states; the eight [AUD] tokens appended when audio is wanted (their
        states teacher-forced through the LLaMA for embedding conditioning; text conditioning never reads
        them, so it skips that pass)."""
        row.raw_text, row.hidden = gen.text, gen.aud_hidden  # [8, dim] or None
        if row.want_audio is True and row.hidden is None:
            reply = [t for t in gen.reply_tokens if t not in self.audio_token_ids]  # drop an incomplete run
            if row.req.conditioning == "embedding":  # only the projector reads the [AUD] states
                row.hidden = teacher_force_hidden(self.llama, row.ids + reply, self.audio_token_ids, row.adapters)
            row.raw_text = self.tokenizer.decode(reply + self.audio_token_ids, skip_special_tokens=False)
        row.decode_music = row.want_audio is True or (row.want_audio is None and row.hidden is not None)

    def _decode_row(self, row: "_Row") -> "DecodeRow":
        """The music decoder's request for one row (the edit mode's source, its text or embeddings)."""
        from m2ugen.decoders import DecodeRow

        cfg, req = self.cfg, row.req
        row.emit(Event("generating", 0.0, ""))
        target = int(round(row.duration_s * self.sample_rate))
        source, source_samples = self._source_inputs(req.mode, req.continuation, req.audio, req.chroma)
        row.keep = target + source_samples  # exactly duration_s of new material (after the source)
        kwargs: dict[str, Any] = dict(duration_s=self._decoder_duration(row.duration_s, target),
                                      guidance_scale=cfg.guidance_scale, seed=row.seed, vocoder=req.vocoder,
                                      on_progress=lambda f: row.emit(Event("generating", float(f), "")), **source)
        if cfg.music_decoder.startswith("musicgen"):  # MusicGen and its variants count length in tokens
            kwargs["tokens_per_s"] = cfg.musicgen_tokens_per_s
        if req.conditioning == "text":
            hint = req.music_hint
            return DecodeRow(text=row.raw_text if not hint else f"{row.raw_text.rstrip()}, {hint}", **kwargs)
        return DecodeRow(embeds=self.music_embeddings(row.hidden), **kwargs)

    def _generate_music(self, rows: list["_Row"]) -> None:
        t0 = time.perf_counter()
        requests = []
        for row in rows:
            try:
                requests.append(self._decode_row(row))
            except Exception as e:
                row.error = e
        rows = [r for r in rows if r.error is None]
        if not rows:
            return
        outs = self.decoder.generate_batch(requests)
        for row, out in zip(rows, outs):
            if isinstance(out, BaseException):
                row.error = out
                continue
            row.audio = np.asarray(out, dtype=np.float32)[:, :row.keep]
            if self._guard(row, row.emit, Event("generating", 1.0, "")):
                row.timings["generating"] = time.perf_counter() - t0

    def _check_mode(self, mode, continuation, conditioning, audio, chroma, want_audio) -> None:
        """Refuse, before any work, an edit mode that the decoder or the inputs cannot serve."""
        from m2ugen import decoders

        decoders.check_mode(self.decoder, mode)
        if continuation not in CONTINUATIONS:
            raise ValueError(f"continuation must be one of {', '.join(map(repr, CONTINUATIONS))}, got {continuation!r}")
        if continuation != "new" and mode != "continue":
            raise ValueError(f"continuation={continuation!r} needs mode='continue', got mode={mode!r}")
        if chroma is not None and mode != "melody":
            raise ValueError(f"chroma= is only used by mode='melody', got mode={mode!r}")
        if mode == "continue" and audio is None:
            raise ValueError("mode='continue' needs the source audio (audio=) to continue")
        if mode == "melody" and audio is None and chroma is None:
            raise ValueError("mode='melody' needs a source: audio= (its chroma is computed) or chroma=")
        if want_audio is False and mode != "text":
            raise ValueError(f"mode={mode!r} makes audio; it cannot be combined with want_audio=False")
        if conditioning == "embedding" and hasattr(self.decoder, "text_dim") \
                and self.cfg.output_dim != self.decoder.text_dim:
            raise ValueError(
                f"conditioning='embedding' needs the output projector's width (cfg.output_dim={self.cfg.output_dim}) "
                f"to match the decoder's text encoder ({self.decoder.text_dim} for {self.decoder.kind} "
                f"{self.cfg.decoder_path or 'tiny random'}, {self.decoder.channels} channel(s)): this projector "
                "was trained for another decoder; use conditioning='text'")

    def _source_inputs(self, mode: str, continuation: str, audio, chroma) -> tuple[dict[str, Any], int]:
        """(decoder kwargs of the edit mode, samples of source the result starts with): the source at the
        decoder's rate ("continue"), or its chroma ("melody")."""
        from m2ugen import chroma as chroma_features
        from m2ugen import media

        if mode == "continue":
            wave = media.load_audio(audio, self.sample_rate, self.cfg.max_audio_s, channels=self.decoder.channels)
            with_source = continuation == "with_source"
            kept = self.decoder.prompt_samples(wave.shape[-1]) if with_source else 0
            return {"prompt": wave, "with_prompt": with_source}, kept
        if mode == "melody":
            if chroma is None:
                wave = media.load_audio(audio, chroma_features.SAMPLE_RATE, self.cfg.max_audio_s)
                chroma = chroma_features.chroma_from_audio(wave, chroma_features.SAMPLE_RATE)
            return {"chroma": chroma_features.check_chroma(chroma)}, 0
        return {}, 0

    def _decoder_duration(self, duration_s: float, target: int) -> float:
        """Seconds to ask the decoder for so that it returns at least ``target`` samples.

        MusicGen's official length, int(51.2 * s) steps, loses K - 1 frames to the codebook delay
        pattern; ask for the few extra steps (the reply is then trimmed to exactly ``duration_s``).
        """
        num_samples = getattr(self.decoder, "num_samples", None)
        if not callable(num_samples):
            return float(duration_s)
        tps = self.cfg.musicgen_tokens_per_s
        ask = float(duration_s)
        for _ in range(64):
            if num_samples(ask, tps) >= target:
                break
            ask += 1.0 / tps
        return ask

    def music_embeddings(self, hidden: torch.Tensor) -> torch.Tensor:
        """[8, dim] (or [B, 8, dim]) [AUD] hidden states -> projector output * embedding_scale [B, Nq, out_dim]."""
        if hidden.dim() == 2:
            hidden = hidden.unsqueeze(0)
        p = self.output_projector.fc.weight
        aud = torch.tensor(self.audio_token_ids, device=self.device)
        aud_embs = self.llama.tok_embeddings(aud).unsqueeze(0).expand(hidden.shape[0], -1, -1)  # [B, 8, dim]
        out = self.output_projector(hidden.to(p.device, p.dtype), aud_embs.to(p.device, p.dtype))
        return out * self.cfg.embedding_scale


def _move_holder(holder: Any, device: torch.device):
    """Point a lazy holder at ``device``; move its model if it is already built."""
    if hasattr(holder, "to") and callable(holder.to):
        holder.to(device)
        return
    if getattr(holder, "device", None) is None or torch.device(holder.device) == device:
        return
    holder.device = device
    if getattr(holder, "loaded", False):
        holder.model.to(device)


def _clean(text: str) -> str:
    """Reply text without the [AUDk] tokens."""
    return re.sub(r"[ \t]{2,}", " ", _AUD_RE.sub("", text)).strip()
