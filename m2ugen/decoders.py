"""Music decoders: MusicGen, MusicGen-Melody (transformers) and AudioLDM2 (diffusers), built lazily.

All take the same ``generate`` call and return float32 audio ``[channels, samples]``, conditioned by

- ``text=...``: the official inference (the LLM's reply is the decoder's text prompt);
- ``embeds=...``: the paper's conditioning (projector output, already scaled by the caller) with
  classifier-free guidance against an all-zero null condition;

and, per edit mode (``modes`` lists what a decoder can do; ``check_mode`` names what it cannot):

- ``"text"``: nothing else (the official behaviour: the source audio never reaches the decoder);
- ``"continue"`` (MusicGen, mono or stereo): ``prompt=`` audio at the decoder's rate is EnCodec-encoded
  and continued (transformers' ``generate(input_values=..., padding_mask=...)``; both guidance
  branches see the prompt codes); the new material is returned, or prompt + new material;
- ``"melody"`` (MusicGen-Melody): ``chroma=`` [frames, 12] (``m2ugen.chroma``) conditions the decoder
  with the text; without it the model's null chroma is used.

Stereo MusicGen checkpoints (``audio_channels=2``: 2 x K codebooks interleaved left/right) return
``[2, samples]`` of real stereo.

``on_progress(fraction)`` is called after every decoder step; an exception raised by it propagates
out of ``generate`` unchanged (that is how a running job is cancelled).

``generate_batch([DecodeRow(...), ...])`` takes the same arguments per row. MusicGen(-Melody) decodes
all rows in one loop of its own over transformers' modules (``m2ugen.musicgen_loop``: static KV cache,
per-row guidance, length, seed, prompt, chroma; ``compile=True`` compiles its step); a failing row gets its
exception as its result and the others run on. ``generate`` is that loop with one row and reproduces
transformers' ``generate`` (``engine="transformers"``) bit for bit on CPU. AudioLDM2 runs rows one by one.

MusicGen's codes become audio through its EnCodec decoder (``vocoder="encodec"``, the default) or
through Multi-Band Diffusion (``vocoder="mbd"``, m2ugen/mbd.py), each channel's codes on their own.

Tiny presets build tiny random sub-models and a tiny T5 SentencePiece tokenizer trained (once,
deterministically) from ``m2ugen/assets/tiny_t5_corpus.txt``; nothing touches the network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from m2ugen.config import M2UGenConfig
from m2ugen.submodel import LazySubmodel, load_into_empty

ASSETS = Path(__file__).resolve().parent / "assets"
TINY_T5_CORPUS = ASSETS / "tiny_t5_corpus.txt"
TEXT_MAX_LENGTH = 128  # official: T5 prompt padded / truncated to 128 tokens
NEGATIVE_PROMPT = "Low quality."  # official AudioLDM2 negative prompt

ProgressFn = Callable[[float], None] | None
VOCODERS = ("encodec", "mbd")  # how MusicGen's codes become audio

log = logging.getLogger("m2ugen.decoders")


@dataclass(kw_only=True)
class DecodeRow:
    """One request of ``generate_batch``: the keyword arguments of ``generate``, one row of a batch."""

    text: str | None = None
    embeds: torch.Tensor | None = None
    duration_s: float
    guidance_scale: float = 3.5
    seed: int | None = None
    tokens_per_s: float = 51.2
    prompt: np.ndarray | None = None
    with_prompt: bool = False
    chroma: np.ndarray | None = None
    vocoder: str = "encodec"
    mbd_steps: int | None = None
    on_progress: ProgressFn = None


# ----------------------------------------------------------------------------------------------
# tiny T5 tokenizer (offline)


def tiny_t5_tokenizer_dir(vocab_size: int = 96, corpus: Path = TINY_T5_CORPUS) -> Path:
    """Directory with a tiny unigram ``spiece.model`` (T5's kind), trained on first use, then cached.
    Ids follow T5: pad 0, eos 1, unk 2, no bos."""
    from m2ugen.tokenizer import trained_sentencepiece_dir

    return trained_sentencepiece_dir(
        corpus, "tiny-t5", "spiece.model",
        model_type="unigram", vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    )


def tiny_t5_tokenizer(max_vocab: int):
    """The tiny T5 tokenizer (``T5Tokenizer.from_pretrained(dir, extra_ids=0)``); its ids stay < max_vocab."""
    from transformers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(str(tiny_t5_tokenizer_dir()), extra_ids=0,
                                      model_max_length=TEXT_MAX_LENGTH)
    if len(tok) > max_vocab:
        raise ValueError(f"tiny T5 tokenizer has {len(tok)} ids but the text encoder only {max_vocab}")
    return tok


# ----------------------------------------------------------------------------------------------
# shared checks


def _check_request(text: str | None, embeds: torch.Tensor | None, duration_s: float) -> None:
    if (text is None) == (embeds is None):
        raise ValueError("give exactly one of text= or embeds= to the music decoder")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"decoder text must be a string, got {type(text).__name__}")
    if isinstance(duration_s, bool) or not isinstance(duration_s, numbers.Real) or not math.isfinite(duration_s) \
            or duration_s <= 0:
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")


def _check_vocoder(vocoder: str, allowed: tuple[str, ...] = VOCODERS, what: str = "MusicGen") -> None:
    if vocoder not in allowed:
        raise ValueError(f"vocoder for the {what} decoder must be one of {', '.join(allowed)}; got {vocoder!r}")


def _check_embeds(embeds: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if not isinstance(embeds, torch.Tensor):
        raise ValueError(f"{what} embeds must be a torch.Tensor, got {type(embeds).__name__}")
    if embeds.dim() == len(shape) - 1:
        embeds = embeds.unsqueeze(0)
    if tuple(embeds.shape) != shape:
        raise ValueError(f"{what} embeds must be {list(shape)}, got {list(embeds.shape)}")
    if not torch.isfinite(embeds).all():
        raise ValueError(f"{what} embeds contain NaN or inf")
    return embeds


MODES = ("text", "continue", "melody")
_MODE_NEEDS = {
    "continue": "a MusicGen decoder (music_decoder='musicgen', e.g. the presets tiny, tiny-stereo, musicgen-medium)",
    "melody": "a MusicGen-Melody decoder (music_decoder='musicgen-melody', e.g. the presets tiny-melody, "
              "musicgen-melody, musicgen-stereo-melody)",
}


def check_mode(decoder, mode: str) -> None:
    """ValueError unless ``decoder`` can do edit mode ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if mode not in decoder.modes:
        source = decoder.cfg.decoder_path or "tiny random"
        raise ValueError(f"mode={mode!r} is not possible with the loaded decoder {decoder.kind} ({source}), which "
                         f"does {', '.join(map(repr, decoder.modes))}; it needs {_MODE_NEEDS[mode]}")


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch's global RNG for the block only (transformers' sampling uses it); None: leave it alone."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(int(seed))
        yield


# ----------------------------------------------------------------------------------------------
# MusicGen


class _ProgressCounter:
    """A transformers logits processor that reports step / total after every decoder step."""

    def __init__(self, total: int, on_progress: Callable[[float], None]):
        self.total = max(1, total)
        self.step = 0
        self.on_progress = on_progress

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.step += 1
        self.on_progress(min(1.0, self.step / self.total))
        return scores


class _EmbedsAsEncoderOutput(nn.Module):
    """Stands in for MusicGen's T5 during one ``generate`` call.

    ``inputs_embeds`` come back unchanged as the encoder's hidden states, so MusicGen builds its
    classifier-free-guidance null branch (zeros) exactly as for text; ``input_ids`` still run the T5.
    """

    def __init__(self, t5: nn.Module):
        super().__init__()
        self.t5 = t5
        self.config = t5.config
        self.main_input_name = "input_ids"

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        if input_ids is None and inputs_embeds is not None:
            return BaseModelOutput(last_hidden_state=inputs_embeds)
        return self.t5(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)


_EMBED_POSITIONS = "decoder.model.decoder.embed_positions.weights"  # a Parameter in 4.35, a buffer in 5.x


def _responsive_random_init(model: nn.Module) -> None:
    """Make a random MusicGen's output depend on its inputs (tiny presets only).

    transformers' init leaves EnCodec codebooks (buffers) at zero, so every code decodes to the same
    audio, its std-0.02 decoder weights make a tiny decoder all but ignore its conditioning, and its
    EnCodec encoder gives (bias-dominated) codes that do not depend on the audio.
    Codebooks get N(0, 1) entries; decoder linears N(0, 1/fan_in), embeddings N(0, 1); encoder
    convolutions He-scaled weights and zero biases.
    """
    projections = [getattr(model, n) for n in ("enc_to_dec_proj", "audio_enc_to_dec_proj") if hasattr(model, n)]
    with torch.no_grad():
        for module in list(model.decoder.modules()) + projections:
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, module.in_features ** -0.5)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0)
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
        # the EnCodec encoder (mode "continue"): He-scaled convolutions without bias, so that different
        # sources give different codes (drawn last: the decoding path above is unchanged by it)
        for module in model.audio_encoder.encoder.modules():
            if isinstance(module, nn.Conv1d):
                norm = getattr(getattr(module, "parametrizations", None), "weight", None)
                if norm is not None:  # weight = g * v / |v| per output channel: |filter| = sqrt(2)
                    norm.original1.normal_()
                    norm.original0.fill_(2.0 ** 0.5)
                else:
                    module.weight.normal_(0.0, (2.0 / (module.in_channels * module.kernel_size[0])) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()


class MusicGenDecoder(LazySubmodel):
    """``MusicgenForConditionalGeneration`` + its processor (T5 tokenizer), lazily built; mono or stereo."""

    kind = "MusicGen"
    modes = ("text", "continue")
    _seed = 4

    @staticmethod
    def _hf_classes():
        """(config class, model class, decoder config class) of transformers."""
        from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

        return MusicgenConfig, MusicgenForConditionalGeneration, MusicgenDecoderConfig

    def __init__(self, cfg: M2UGenConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 compile: bool | str | Callable = False):
        super().__init__(cfg, device, dtype)
        self._config = None
        self._mbd = None
        self.compile = compile  # torch.compile the loop's decode step ("reduce-overhead" on CUDA), or a backend
        self._decode_loop = None

    def _path(self) -> str | None:
        return self.cfg.decoder_path

    @property
    def mbd(self):
        """The Multi-Band Diffusion models (``m2ugen.mbd``), built on the first ``vocoder="mbd"`` request."""
        if self._mbd is None:
            from m2ugen.mbd import mbd_for_decoder

            self._mbd = mbd_for_decoder(self.cfg, self._hf_config().audio_encoder, self.device, self.dtype)
        return self._mbd

    # --- construction ---------------------------------------------------------------------------
    def _hf_config(self):
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def _read_config(self):
        from transformers import EncodecConfig, T5Config

        config_class, _, decoder_class = self._hf_classes()
        d = self._pretrained_dir()
        if d is not None:
            return config_class.from_pretrained(d)
        c = self.cfg.decoder_config
        subs = ("text_encoder", "audio_encoder", "decoder")
        if not c or not all(k in c for k in subs):
            raise ValueError(f"{self.kind}: set cfg.decoder_path (weights) or cfg.decoder_config with "
                             "text_encoder / audio_encoder / decoder sub-configs")
        top = {k: v for k, v in c.items() if k not in subs}  # e.g. MusicGen-Melody's chroma_length
        return config_class(text_encoder=T5Config(**c["text_encoder"]), audio_encoder=EncodecConfig(**c["audio_encoder"]),
                            decoder=decoder_class(**c["decoder"]), **top)

    def _new_model(self, config) -> nn.Module:
        return self._hf_classes()[1](config)

    def _fix_generation_config(self, model: nn.Module) -> None:
        """Random models: the special ids of the real checkpoints (= codebook size) and their sampling."""
        gc = model.generation_config
        start = model.config.decoder.decoder_start_token_id
        if start is None:
            start = model.config.decoder.vocab_size
        gc.decoder_start_token_id = gc.pad_token_id = gc.bos_token_id = start
        gc.do_sample, gc.top_k = True, 250  # facebook/musicgen-* generation_config.json

    def _build(self) -> nn.Module:
        config = self._hf_config()
        if self._pending is not None:
            model = load_into_empty(lambda: self._new_model(config), self._pending)
            self._pending = None
            if self._pretrained_dir() is None:
                self._fix_generation_config(model)
            else:
                from transformers import GenerationConfig

                model.generation_config = GenerationConfig.from_pretrained(self._pretrained_dir())
        elif self._pretrained_dir() is not None:
            model = self._hf_classes()[1].from_pretrained(self._pretrained_dir(), dtype=self.dtype)
        else:
            with self.random_build():
                model = self._new_model(config)
                _responsive_random_init(model)
            self._fix_generation_config(model)
        model.eval().requires_grad_(False)
        return model.to(device=self.device, dtype=self.dtype)

    def _build_processor(self):
        from transformers import EncodecFeatureExtractor, MusicgenProcessor

        d = self._pretrained_dir()
        if d is not None:
            return MusicgenProcessor.from_pretrained(d)
        vocab = self._hf_config().text_encoder.vocab_size
        return MusicgenProcessor(
            feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=self.sample_rate),
            tokenizer=tiny_t5_tokenizer(vocab),
        )


    @property
    def sample_rate(self) -> int:
        return int(self._hf_config().audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> int:
        """EnCodec frames (decoder steps) per second: 50 for the 32 kHz model (hop 640 samples)."""
        return int(self._hf_config().audio_encoder.frame_rate)

    @property
    def text_dim(self) -> int:
        return int(self._hf_config().text_encoder.d_model)

    @property
    def channels(self) -> int:
        """Output channels: 2 for the stereo checkpoints (audio_channels=2), else 1."""
        return int(self._hf_config().decoder.audio_channels)

    @property
    def hop_length(self) -> int:
        """Samples per EnCodec frame (640 at 32 kHz)."""
        return self.sample_rate // self.frame_rate

    def _delay_steps(self) -> int:
        """Decoder steps lost to the delay pattern: K - 1 for K codebooks per channel."""
        dec = self._hf_config().decoder
        return dec.num_codebooks // dec.audio_channels - 1

    # --- official names --------------------------------------------------------------------------
    def expected_shapes(self) -> dict[str, torch.Size]:
        """Official ``generation_model.*`` names (prefix stripped, transformers 4.35) -> shapes; meta device."""
        shapes = super().expected_shapes()
        dec = self._hf_config().decoder
        shapes[_EMBED_POSITIONS] = torch.Size([dec.max_position_embeddings, dec.hidden_size])
        return shapes

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly check the official sub-dict and use it. ``embed_positions.weights`` (fixed sinusoids,
        recomputed by transformers 5.x) is shape-checked and dropped; it may also be absent."""
        sd = dict(sd)
        positions = sd.pop(_EMBED_POSITIONS, None)
        expected = self.expected_shapes()[_EMBED_POSITIONS]
        if positions is not None and tuple(positions.shape) != tuple(expected):
            raise ValueError(f"MusicGen state dict does not match the model: 1 mis-shaped key(s): {_EMBED_POSITIONS} "
                             f"(checkpoint {list(positions.shape)}, model {list(expected)})")
        super().load_state_dict(sd)

    # --- inference -----------------------------------------------------------------------------
    def _text_inputs(self, captions: list[str]) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=captions, padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True,
                                return_tensors="pt")
        return {k: inputs[k].to(self.device) for k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def text_embedding(self, captions: list[str]) -> torch.Tensor:
        """T5 last_hidden_state of the captions padded to 128 tokens -> [B, 128, D] (the training target / 10)."""
        if isinstance(captions, str) or not captions:
            raise ValueError("captions must be a non-empty list of strings")
        inputs = self._text_inputs(list(captions))
        return self.model.text_encoder(**inputs).last_hidden_state.float()

    def num_new_tokens(self, duration_s: float, tokens_per_s: float = 51.2) -> int:
        """Official length: ``int(tokens_per_s * duration_s)`` decoder steps."""
        n = int(tokens_per_s * duration_s)
        need = self._delay_steps() + 1
        if n < need:
            raise ValueError(f"duration_s={duration_s} gives {n} decoder steps; need at least {need}")
        # beyond dec.max_position_embeddings (30 s+ for the real models) transformers extends the
        # sinusoidal positions itself; quality past the training length is the model's, not checked here
        return n

    def num_samples(self, duration_s: float, tokens_per_s: float = 51.2) -> int:
        """New samples made by ``generate``: the delay pattern of K codebooks (per channel) costs K - 1
        steps, so (int(tokens_per_s * duration_s) - (K - 1)) frames of ``hop_length`` (640) samples."""
        return (self.num_new_tokens(duration_s, tokens_per_s) - self._delay_steps()) * self.hop_length

    def prompt_samples(self, source_samples: int) -> int:
        """Samples of a ``continue`` source that prompt MusicGen: its last ``cfg.continue_prompt_s``
        seconds at most, cut to whole EnCodec frames (so the continuation starts exactly there)."""
        if not self.cfg.continue_prompt_s > 0:
            raise ValueError(f"cfg.continue_prompt_s must be a positive number of seconds, got "
                             f"{self.cfg.continue_prompt_s!r}")
        limit = int(round(self.cfg.continue_prompt_s * self.sample_rate))
        return min(int(source_samples), limit) // self.hop_length * self.hop_length

    def _prompt_inputs(self, prompt) -> tuple[dict[str, torch.Tensor], int]:
        """Source audio [channels, samples] at ``sample_rate`` -> (generate kwargs, prompt samples used)."""
        p = prompt.detach().cpu().numpy() if isinstance(prompt, torch.Tensor) else np.asarray(prompt)
        if p.ndim == 1:
            p = p[None]
        if p.ndim != 2 or p.shape[0] not in (1, self.channels) or not np.issubdtype(p.dtype, np.floating):
            raise ValueError(f"continue: the prompt must be float audio [{self.channels}, samples] at "
                             f"{self.sample_rate} Hz, got {p.dtype} {list(p.shape)}")
        if not np.isfinite(p).all():
            raise ValueError("continue: the prompt audio contains NaN or inf")
        n = self.prompt_samples(p.shape[1])
        if n == 0:
            raise ValueError(f"continue: the source is {p.shape[1]} samples at {self.sample_rate} Hz; it needs at "
                             f"least one EnCodec frame ({self.hop_length} samples)")
        p = np.broadcast_to(p[:, p.shape[1] - n:], (self.channels, n))  # mono source -> both channels
        values = torch.from_numpy(np.array(p, dtype=np.float32))[None].to(self.device, self.dtype)
        mask = torch.ones(1, n, dtype=torch.long, device=self.device)
        return {"input_values": values, "padding_mask": mask}, n

    @torch.inference_mode()
    def generate(
        self,
        *,
        text: str | None = None,
        embeds: torch.Tensor | None = None,
        duration_s: float,
        guidance_scale: float = 3.5,
        seed: int | None = None,
        tokens_per_s: float = 51.2,
        on_progress: ProgressFn = None,
        prompt: np.ndarray | None = None,
        with_prompt: bool = False,
        chroma: np.ndarray | None = None,
        vocoder: str = "encodec",
        mbd_steps: int | None = None,
        engine: str = "loop",
    ) -> np.ndarray:
        """-> float32 [channels, samples] at ``sample_rate``; see the module docstring for the modes.

        ``prompt`` (mode "continue"): source audio [1 or channels, samples] at ``sample_rate``; its last
        ``prompt_samples(samples)`` samples are continued. The result is the ``num_samples(duration_s)``
        new samples, preceded by the re-decoded prompt when ``with_prompt``.
        ``chroma`` (mode "melody", MusicGen-Melody only): [frames, 12] at ``m2ugen.chroma.FRAME_RATE``.
        vocoder="mbd" decodes the codes with Multi-Band Diffusion (mbd_steps UNet calls per band, default
        the official 20; same length as EnCodec's); progress then runs to 0.5 over the tokens, to 1 over MBD.
        ``engine="loop"`` (default) is ``generate_batch`` with this one row; ``engine="transformers"`` runs
        transformers' own ``generate`` (the reference the loop is tested against).
        """
        row = DecodeRow(text=text, embeds=embeds, duration_s=duration_s, guidance_scale=guidance_scale, seed=seed,
                        tokens_per_s=tokens_per_s, prompt=prompt, with_prompt=with_prompt, chroma=chroma,
                        vocoder=vocoder, mbd_steps=mbd_steps, on_progress=on_progress)
        if engine == "transformers":
            return self._generate_transformers(row)
        if engine != "loop":
            raise ValueError(f"engine must be 'loop' or 'transformers', got {engine!r}")
        out = self.generate_batch([row])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    @torch.inference_mode()
    def generate_batch(self, rows: list[DecodeRow]) -> list[np.ndarray | BaseException]:
        """Decode all rows together in one loop (``m2ugen.musicgen_loop``); -> per row its audio (as
        ``generate`` returns it) or the exception that ended it.

        Every row keeps its own conditioning (text or embeds, mixed), guidance scale, length, seed (its own
        ``torch.Generator``: a row's result does not depend on the other rows), audio prompt and chroma.
        A row that fails its checks gets the ValueError; a row whose ``on_progress`` raises is dropped at
        once with that exception; the others run on unchanged. EnCodec decodes row by row; MBD too.
        An error of the loop itself (e.g. out of memory) raises from here.
        """
        results: list[np.ndarray | BaseException | None] = [None] * len(rows)
        prepared: list[tuple[int, Any, dict[str, Any]]] = []  # (index, LoopRow, finishing info)
        for i, row in enumerate(rows):
            try:
                prepared.append((i, *self._loop_row(row)))
            except Exception as exc:  # this row's bad input; the others go on
                results[i] = exc
        if prepared:
            outs = self._loop().run([lr for _, lr, _ in prepared])
            for (i, _, info), out in zip(prepared, outs):
                if out.error is not None:
                    results[i] = out.error
                    continue
                try:
                    results[i] = self._finish_row(rows[i], out.tokens, info)
                except Exception as exc:  # e.g. MBD's on_progress cancelling this row
                    results[i] = exc
        return results

    # --- the loop's rows ---------------------------------------------------------------------------
    def _loop(self):
        from m2ugen.musicgen_loop import MusicGenLoop

        model = self.model
        if self._decode_loop is None or self._decode_loop.model is not model \
                or self._decode_loop.compile != self.compile:
            self._decode_loop = MusicGenLoop(model, compile=self.compile)
        return self._decode_loop

    def _check_row(self, row: DecodeRow) -> int:
        """The row's checks (as ``generate`` made them) -> its new decoder tokens."""
        _check_request(row.text, row.embeds, row.duration_s)
        _check_vocoder(row.vocoder)
        if row.with_prompt and row.prompt is None:
            raise ValueError("with_prompt=True needs a prompt")
        g = row.guidance_scale
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(g):
            raise ValueError(f"guidance_scale must be a finite number, got {g!r}")
        if row.on_progress is not None and not callable(row.on_progress):
            raise ValueError("on_progress must be callable")
        return self.num_new_tokens(row.duration_s, row.tokens_per_s)

    def _encoder_states(self, row: DecodeRow) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 states of the text, or the embeddings [1, L, D]; their mask [1, L])."""
        if row.text is not None:
            inputs = self._text_inputs([row.text])
            return self.model.text_encoder(**inputs).last_hidden_state, inputs["attention_mask"]
        embeds = row.embeds
        n_q = embeds.shape[-2] if isinstance(embeds, torch.Tensor) and embeds.dim() >= 2 else 0
        embeds = _check_embeds(embeds, (1, max(n_q, 1), self.text_dim), self.kind).to(self.device, self.dtype)
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)

    def _conditioning(self, row: DecodeRow, guided: bool) -> dict[str, torch.Tensor | None]:
        """MusicGen: cross-attention states (projected, times the mask), cond and null branch computed
        as one batch exactly as transformers does; the null branch is zeros with an all-zero mask."""
        if row.chroma is not None:
            check_mode(self, "melody")
        model = self.model
        states, mask = self._encoder_states(row)
        if guided:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        dec = model.decoder.config
        if self.text_dim != dec.hidden_size and dec.cross_attention_hidden_size is None:
            states = model.enc_to_dec_proj(states)
        states = states * mask[..., None]
        keep = mask.bool()
        return dict(cond=states[0], cond_mask=keep[0], uncond=states[1] if guided else None,
                    uncond_mask=keep[1] if guided else None)

    def _prompt_codes(self, prompt) -> tuple[torch.Tensor, Any, int]:
        """EnCodec codes [K, Tp] of the prompt (transformers' own encoding), its audio scales, its samples."""
        check_mode(self, "continue")
        inputs, n = self._prompt_inputs(prompt)
        kw = self.model._prepare_audio_encoder_kwargs_for_generation(inputs["input_values"],
                                                                     {"padding_mask": inputs["padding_mask"]})
        return kw["decoder_input_ids"], kw["audio_scales"], n

    def _loop_row(self, row: DecodeRow):
        """-> (LoopRow, what finishing needs)."""
        from m2ugen.musicgen_loop import LoopRow

        n_new = self._check_row(row)
        guided = row.guidance_scale > 1
        codes, scales, n_prompt = (None, [None], 0) if row.prompt is None else self._prompt_codes(row.prompt)
        cond = self._conditioning(row, guided)
        seed = row.seed
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()).item())
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        share = 0.5 if row.vocoder == "mbd" else 1.0
        on_step = None
        if row.on_progress is not None:
            on_step = lambda n, f=row.on_progress: f(min(1.0, n / n_new) * share)  # noqa: E731
        loop_row = LoopRow(guidance_scale=float(row.guidance_scale), new_tokens=n_new, generator=generator,
                           prompt_codes=codes, on_step=on_step, **cond)
        return loop_row, dict(audio_scales=scales, n_prompt=n_prompt, share=share)

    def _finish_row(self, row: DecodeRow, tokens: torch.Tensor, info: dict[str, Any]) -> np.ndarray:
        """The finished delayed tokens [K, L] -> audio [channels, samples], trimmed as ``generate`` trims."""
        from m2ugen.musicgen_loop import undelay

        codes = undelay(tokens, self.channels)[None, None]  # [1, 1, K, frames]
        codec = self.model.audio_encoder
        channel_codes = [codes] if self.channels == 1 else [codes[:, :, ::2], codes[:, :, 1::2]]
        decoded = [(c, codec.decode(c, audio_scales=info["audio_scales"]).audio_values) for c in channel_codes]
        if row.vocoder == "mbd":
            share = info["share"]
            audio = self._mbd_decode(decoded, row.seed, row.mbd_steps, None if row.on_progress is None
                                     else (lambda f: row.on_progress(share + (1 - share) * f)))
        else:
            audio = torch.cat([a for _, a in decoded], dim=1)
        audio = audio[0].float().cpu().numpy()  # [channels, samples]
        return audio if row.with_prompt else audio[:, info["n_prompt"]:]

    def _generate_transformers(self, row: DecodeRow) -> np.ndarray:
        """transformers' ``generate`` (global RNG seeded by ``seed``, progress by a logits processor)."""
        from transformers import LogitsProcessorList

        text, embeds, on_progress, vocoder, seed = row.text, row.embeds, row.on_progress, row.vocoder, row.seed
        n_new = self._check_row(row)
        model = self.model
        kwargs: dict[str, Any] = dict(do_sample=True, guidance_scale=row.guidance_scale, max_new_tokens=n_new)
        share = 0.5 if vocoder == "mbd" else 1.0
        if on_progress is not None:
            counter = _ProgressCounter(n_new, lambda f: on_progress(f * share))
            kwargs["logits_processor"] = LogitsProcessorList([counter])
        mode_inputs, n_prompt = self._mode_inputs(row.prompt, row.chroma)
        kwargs.update(mode_inputs)

        record = _recorded_decodes(model.audio_encoder) if vocoder == "mbd" else contextlib.nullcontext([])
        with _seeded(seed, self.device), record as decoded:
            if text is not None:
                audio = model.generate(**self._text_inputs([text]), **kwargs)
            else:
                embeds, mask = self._encoder_states(row)
                t5 = model.text_encoder
                model.text_encoder = _EmbedsAsEncoderOutput(t5)
                try:
                    audio = model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
                finally:
                    model.text_encoder = t5
        if vocoder == "mbd":
            audio = self._mbd_decode(decoded, seed, row.mbd_steps, None if on_progress is None
                                     else (lambda f: on_progress(share + (1 - share) * f)))
        audio = audio[0].float().cpu().numpy()  # [channels, samples]
        return audio if row.with_prompt else audio[:, n_prompt:]

    def _mbd_decode(self, decoded: list[tuple[torch.Tensor, torch.Tensor]], seed: int | None, steps: int | None,
                    on_progress: ProgressFn) -> torch.Tensor:
        """MBD of each channel's codes ((codes [1, B, K, T], EnCodec audio [B, 1, N]) per channel, left first);
        every channel starts from the same seed, so equal codes give equal channels -> [B, channels, N]."""
        seed = int(seed) if seed is not None else int(torch.randint(0, 2 ** 31 - 1, ()).item())
        mbd = self.mbd.to(self.device)
        out = []
        for c, (codes, encodec_audio) in enumerate(decoded):
            generator = torch.Generator(device=self.device).manual_seed(seed)
            progress = None if on_progress is None else (lambda f, c=c: on_progress((c + f) / len(decoded)))
            out.append(mbd.tokens_to_wav(codes[0], self.model.audio_encoder, encodec_audio=encodec_audio,
                                         steps=steps, generator=generator, on_progress=progress))
        return torch.cat(out, dim=1)

    def _mode_inputs(self, prompt, chroma) -> tuple[dict[str, Any], int]:
        """(extra ``generate`` kwargs, prompt samples) of the edit mode: the EnCodec prompt of "continue"."""
        if chroma is not None:
            check_mode(self, "melody")
        if prompt is None:
            return {}, 0
        check_mode(self, "continue")
        return self._prompt_inputs(prompt)


class MusicGenMelodyDecoder(MusicGenDecoder):
    """``MusicgenMelodyForConditionalGeneration``: text + chroma conditioning (mono or stereo checkpoints).

    The chroma (``m2ugen.chroma``: [frames, 12] at 7.8125 frames per second) is projected to the
    decoder's width and put in front of the T5 states; transformers repeats a shorter one (and cuts a
    longer one) to ``chroma_length`` frames, and gives the guidance null branch a null chroma.
    The processor is the T5 tokenizer alone (transformers' melody feature extractor needs torchaudio).
    """

    kind = "MusicGen-Melody"
    modes = ("text", "melody")
    _seed = 6

    @staticmethod
    def _hf_classes():
        from transformers import (
            MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration,
        )

        return MusicgenMelodyConfig, MusicgenMelodyForConditionalGeneration, MusicgenMelodyDecoderConfig

    def _build_processor(self):
        d = self._pretrained_dir()
        if d is not None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(d, model_max_length=TEXT_MAX_LENGTH)
        return tiny_t5_tokenizer(self._hf_config().text_encoder.vocab_size)

    @property
    def chroma_length(self) -> int:
        """Chroma frames the decoder attends to (235 = 30 s for the real checkpoints)."""
        return int(self._hf_config().chroma_length)

    def _chroma_features(self, chroma) -> torch.Tensor:
        from m2ugen.chroma import check_chroma

        c = check_chroma(chroma, int(self._hf_config().num_chroma))
        return torch.from_numpy(c)[None].to(self.device, self.dtype)

    def _mode_inputs(self, prompt, chroma) -> tuple[dict[str, Any], int]:
        if prompt is not None:
            check_mode(self, "continue")
        if chroma is None:
            return {}, 0
        return {"input_features": self._chroma_features(chroma)}, 0

    def _conditioning(self, row, guided: bool) -> dict[str, torch.Tensor | None]:
        """MusicGen-Melody: the decoder prefix [chroma_length chroma frames ++ text states], cond and null
        branch as one batch exactly as transformers builds them (null: zero text, one-hot null chroma)."""
        model, cfg = self.model, self._hf_config()
        states, mask = self._encoder_states(row)
        if self.text_dim != model.decoder.config.hidden_size:
            states = model.enc_to_dec_proj(states)
        if guided:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        states = states * mask[..., None]
        audio = None if row.chroma is None else self._chroma_features(row.chroma)
        null = torch.zeros_like(audio) if audio is not None else \
            torch.zeros((1, 1, cfg.num_chroma), device=self.device, dtype=self.dtype)
        null[:, :, 0] = 1
        audio = null if audio is None else audio
        if guided:
            audio = torch.cat([audio, null])
        if cfg.num_chroma != model.decoder.config.hidden_size:
            audio = model.audio_enc_to_dec_proj(audio)
        if audio.shape[1] < cfg.chroma_length:
            audio = audio.repeat(1, int(math.ceil(cfg.chroma_length / audio.shape[1])), 1)
        prefix = torch.cat([audio[:, : cfg.chroma_length], states], dim=1)
        return dict(cond=prefix[0], cond_mask=None, uncond=prefix[1] if guided else None, uncond_mask=None)

@contextlib.contextmanager
def _recorded_decodes(codec: nn.Module):
    """Record (codes, audio) of each ``codec.decode`` call MusicGen's generate makes: one per channel."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = codec.decode

    def decode(audio_codes, *args, **kwargs):
        out = original(audio_codes, *args, **kwargs)
        calls.append((audio_codes, out.audio_values))
        return out

    codec.decode = decode
    try:
        yield calls
    finally:
        del codec.decode


# ----------------------------------------------------------------------------------------------
# AudioLDM2


def tiny_audioldm2_pipeline(t5_dim: int = 32, gpt2_dim: int = 16, seed: int = 5):
    """Tiny random AudioLDM2 (diffusers' own fast-test dimensions) with the tiny T5 tokenizer for both
    text encoders (the CLAP one is random anyway), so text mode runs offline too."""
    from diffusers import (
        AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL, DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig, GPT2Config, GPT2Model,
        SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel,
    )

    vocab = 1000
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, gpt2_dim, t5_dim], [None, gpt2_dim, t5_dim]),
        )
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False)
        vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=1, out_channels=1,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                            latent_channels=4)
        text_cfg = ClapTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=37,
                                  num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=vocab,
                                  projection_dim=16)
        audio_cfg = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
                                    num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=192, projection_dim=16,
                                    patch_size=2, patch_stride=2, patch_embed_input_channels=4)
        clap = ClapModel(ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=16))
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=t5_dim, d_ff=37, d_kv=8, num_heads=2, num_layers=2))
        gpt2 = GPT2Model(GPT2Config(n_embd=gpt2_dim, n_head=2, n_layer=2, vocab_size=vocab, n_ctx=99, n_positions=99))
        gpt2.config.max_new_tokens = 8
        projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=t5_dim, langauge_model_dim=gpt2_dim)
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            # hop 160 = the real vocoder's (100 mel frames per second), so short clips stay cheap
            model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[10, 16],
            upsample_kernel_sizes=[20, 32], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        ))
    tok = tiny_t5_tokenizer(vocab)
    # CLAP ranking (audioldm2_waveforms > 1) runs whenever librosa is installed; the tiny CLAP's 64x64
    # spectrogram needs at most 64 frames per 10 s, hence hop 7900 (diffusers' own fast tests use it)
    pipe = AudioLDM2Pipeline(vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection,
                             language_model=gpt2, tokenizer=tok, tokenizer_2=tok,
                             feature_extractor=ClapFeatureExtractor(hop_length=7900), unet=unet, scheduler=scheduler, vocoder=vocoder)
    for component in pipe.components.values():
        if isinstance(component, nn.Module):
            component.eval().requires_grad_(False)  # built directly, they start in training mode (dropout)
    return pipe


def continue_hidden_states(language_model: nn.Module, inputs_embeds: torch.Tensor, max_new_tokens: int,
                           attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """AudioLDM2's GPT-2 step: feed each new last-layer hidden state back as the next input embedding.

    Replaces ``AudioLDM2Pipeline.generate_language_model``, which calls GenerationMixin helpers that
    transformers 5.x ``GPT2Model`` no longer has. KV-cached; -> [B, max_new_tokens, hidden].
    """
    b = inputs_embeds.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    out = language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=True)
    h = out.last_hidden_state[:, -1:]  # [B, 1, hidden]
    new = [h]
    for _ in range(max_new_tokens - 1):
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, 1)], dim=1)
        out = language_model(inputs_embeds=h, attention_mask=attention_mask, past_key_values=out.past_key_values,
                             use_cache=True)
        h = out.last_hidden_state[:, -1:]
        new.append(h)
    return torch.cat(new, dim=1)


# AudioLDM2ProjectionModel wraps the CLAP embedding (one token) and the T5 tokens each in SOS ... EOS
_PROJECTION_EXTRA_TOKENS = 1 + 2 + 2


def _gpt2_new_tokens(pipe) -> int:
    """Hidden states the GPT-2 step adds (``language_model.config.max_new_tokens``, 8 in AudioLDM2)."""
    return int(getattr(pipe.language_model.config, "max_new_tokens", 8) or 8)


def prompt_token_limits(pipe) -> tuple[int, int]:
    """(CLAP, T5) text tokens the pipeline accepts: each tokenizer's ``model_max_length``, bounded by
    the CLAP text model's positions (RoBERTa's start after the padding id) and, for T5, by the GPT-2
    positions left after the projection's extra tokens and the ``max_new_tokens - 1`` fed-back states."""
    clap = pipe.text_encoder.config.text_config
    clap_limit = min(pipe.tokenizer.model_max_length, clap.max_position_embeddings - (clap.pad_token_id or 0) - 1)
    lm = pipe.language_model.config
    positions = int(lm.n_positions if hasattr(lm, "n_positions") else lm.max_position_embeddings)
    t5_limit = min(pipe.tokenizer_2.model_max_length,
                   positions - _PROJECTION_EXTRA_TOKENS - (_gpt2_new_tokens(pipe) - 1))
    if t5_limit < 2:  # T5 needs at least one token and its EOS
        raise ValueError(f"AudioLDM2: GPT-2 has {positions} positions, too few for a text prompt plus "
                         f"{_gpt2_new_tokens(pipe)} new tokens")
    return clap_limit, t5_limit


def _bound_prompts(pipe) -> None:
    """Make the pipeline's own truncation (``max_length=tokenizer.model_max_length``) stop at what
    the text encoders and the GPT-2 accept (the tokenizers may be one object: the smaller bound wins)."""
    clap_limit, t5_limit = prompt_token_limits(pipe)
    for tok, limit in ((pipe.tokenizer, clap_limit), (pipe.tokenizer_2, t5_limit)):
        tok.model_max_length = min(tok.model_max_length, limit)


def _fit_prompt(pipe, text: str) -> str:
    """The prompt cut to the CLAP tokenizer's bound (the pipeline also ranks its waveforms with CLAP,
    on the text untruncated), with a warning; past the T5 bound the pipeline truncates, warned here."""
    for what, tok in (("CLAP", pipe.tokenizer), ("T5", pipe.tokenizer_2)):
        n = len(tok(text).input_ids)
        if n <= tok.model_max_length:
            continue
        log.warning("AudioLDM2: the text prompt has %d %s tokens; only the first %d are used",
                    n, what, tok.model_max_length)
        if tok is pipe.tokenizer:
            ids = tok(text, max_length=tok.model_max_length, truncation=True).input_ids
            text = tok.decode(ids, skip_special_tokens=True)
    return text


def _patch_language_model_step(pipe) -> None:
    """Route the pipeline's GPT-2 continuation through ``continue_hidden_states`` (see there)."""
    def generate_language_model(inputs_embeds=None, max_new_tokens=None, attention_mask=None, **unused):
        n = max_new_tokens if max_new_tokens is not None else pipe.language_model.config.max_new_tokens
        return continue_hidden_states(pipe.language_model, inputs_embeds, int(n), attention_mask)

    pipe.generate_language_model = generate_language_model


class AudioLDM2Decoder(LazySubmodel):
    """diffusers ``AudioLDM2Pipeline`` (16 kHz). No ``generation_model.*`` keys exist for this variant."""

    kind = "AudioLDM2"
    modes = ("text",)
    channels = 1

    def __init__(self, cfg: M2UGenConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(cfg, device, dtype)
        self._pipe = None

    def _path(self) -> str | None:
        return self.cfg.decoder_path

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    @property
    def pipe(self):
        if self._pipe is None:
            with torch.inference_mode(False):
                d = self._pretrained_dir()
                if d is not None:
                    from diffusers import AudioLDM2Pipeline

                    pipe = AudioLDM2Pipeline.from_pretrained(d, local_files_only=True, torch_dtype=self.dtype)
                else:
                    pipe = tiny_audioldm2_pipeline()
                    if self.dtype != torch.float32:
                        pipe.to(dtype=self.dtype)
                pipe.set_progress_bar_config(disable=True)
                _patch_language_model_step(pipe)
                _bound_prompts(pipe)
                self._pipe = pipe.to(self.device)
        return self._pipe

    model = pipe  # the same lazy object under the holders' common name

    def to(self, device: str | torch.device) -> "AudioLDM2Decoder":
        self.device = torch.device(device)
        if self._pipe is not None:
            self._pipe.to(self.device)
        return self

    @property
    def sample_rate(self) -> int:
        if self._pipe is not None:
            return int(self._pipe.vocoder.config.sampling_rate)
        d = self._pretrained_dir()
        if d is not None and (d / "vocoder" / "config.json").is_file():
            return int(json.loads((d / "vocoder" / "config.json").read_text())["sampling_rate"])
        return 16000

    def embed_split(self) -> tuple[int, int, int, int]:
        """(T5 tokens, T5 dim, GPT-2 tokens, GPT-2 dim) of the pipeline: how [1, 1, out_dim] is split."""
        t5_dim = int(self.pipe.text_encoder_2.config.d_model)
        lm = self.pipe.language_model.config
        gpt_tokens = _gpt2_new_tokens(self.pipe)
        gpt_dim = int(lm.n_embd if hasattr(lm, "n_embd") else lm.hidden_size)
        rest = self.cfg.output_dim - gpt_tokens * gpt_dim
        if rest <= 0 or rest % t5_dim:
            raise ValueError(f"cfg.output_dim {self.cfg.output_dim} is not T x {t5_dim} + {gpt_tokens} x {gpt_dim}")
        return rest // t5_dim, t5_dim, gpt_tokens, gpt_dim

    def expected_shapes(self) -> dict[str, torch.Size]:
        return {}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        if sd:
            raise ValueError(f"AudioLDM2 has no generation_model.* keys in the official checkpoint; got {len(sd)} "
                             f"unexpected key(s), e.g. {next(iter(sd))}")

    @torch.inference_mode()
    def generate(
        self,
        *,
        text: str | None = None,
        embeds: torch.Tensor | None = None,
        duration_s: float,
        guidance_scale: float = 3.5,
        seed: int | None = None,
        on_progress: ProgressFn = None,
        vocoder: str = "encodec",  # only MusicGen's EnCodec codes can go through MBD
    ) -> np.ndarray:
        """-> float32 [1, samples] at 16 kHz (samples = int(duration_s * 16000)).

        Text mode is the official call (negative prompt "Low quality.", cfg.audioldm2_steps steps,
        cfg.audioldm2_waveforms candidates ranked by CLAP, the best one returned); a prompt longer than
        ``prompt_token_limits`` is truncated there, with a warning. Embedding mode
        splits [1, 1, out_dim] into T5 embeddings [1, T, Dt5] ++ GPT-2 embeddings [1, 8, Dgpt2], with
        all-zero negative embeddings for guidance and a single waveform (no text to rank by).
        """
        _check_request(text, embeds, duration_s)
        _check_vocoder(vocoder, ("encodec",), "AudioLDM2")
        pipe = self.pipe
        steps = int(self.cfg.audioldm2_steps)
        kwargs: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=guidance_scale,
                                      audio_length_in_s=float(duration_s))
        if seed is not None:
            kwargs["generator"] = torch.Generator(device=self.device).manual_seed(int(seed))
        if on_progress is not None:
            kwargs["callback"] = lambda step, t, latents: on_progress(min(1.0, (step + 1) / steps))
            kwargs["callback_steps"] = 1
        if text is not None:
            out = pipe(prompt=_fit_prompt(pipe, text), negative_prompt=NEGATIVE_PROMPT,
                       num_waveforms_per_prompt=int(self.cfg.audioldm2_waveforms), **kwargs)
        else:
            n_t5, d_t5, n_gpt, d_gpt = self.embed_split()
            embeds = _check_embeds(embeds, (1, 1, self.cfg.output_dim), "AudioLDM2")
            flat = embeds.to(self.device, self.dtype).reshape(-1)
            prompt_embeds = flat[: n_t5 * d_t5].reshape(1, n_t5, d_t5)
            generated = flat[n_t5 * d_t5:].reshape(1, n_gpt, d_gpt)
            out = pipe(prompt_embeds=prompt_embeds, generated_prompt_embeds=generated,
                       negative_prompt_embeds=torch.zeros_like(prompt_embeds),
                       negative_generated_prompt_embeds=torch.zeros_like(generated),
                       num_waveforms_per_prompt=1, **kwargs)
        audio = np.asarray(out.audios[0], dtype=np.float32)  # [samples]
        return audio.reshape(1, -1)

    def generate_batch(self, rows: list[DecodeRow]) -> list[np.ndarray | BaseException]:
        """Row after row through ``generate`` (diffusers' pipeline, not batched): per row its audio or the
        exception that ended it (a bad row's ValueError, an ``on_progress`` that raised), the others run.
        A row's ``tokens_per_s`` / ``mbd_steps`` do not apply here; a prompt or a chroma is refused."""
        results: list[np.ndarray | BaseException] = []
        for row in rows:
            try:
                if row.prompt is not None or row.with_prompt:
                    check_mode(self, "continue")
                if row.chroma is not None:
                    check_mode(self, "melody")
                results.append(self.generate(text=row.text, embeds=row.embeds, duration_s=row.duration_s,
                                             guidance_scale=row.guidance_scale, seed=row.seed,
                                             on_progress=row.on_progress, vocoder=row.vocoder))
            except Exception as exc:
                results.append(exc)
        return results


def build_decoder(cfg: M2UGenConfig, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> MusicGenDecoder | AudioLDM2Decoder:
    """The lazy decoder named by ``cfg.music_decoder``."""
    if cfg.music_decoder == "musicgen":
        return MusicGenDecoder(cfg, device, dtype)
    if cfg.music_decoder == "musicgen-melody":
        return MusicGenMelodyDecoder(cfg, device, dtype)
    if cfg.music_decoder == "audioldm2":
        import importlib.util

        if importlib.util.find_spec("diffusers") is None:  # only this decoder needs it
            raise ImportError("the AudioLDM2 decoder needs diffusers: pip install 'm2ugen[audioldm2]'")
        return AudioLDM2Decoder(cfg, device, dtype)
    raise ValueError(f"unknown music_decoder {cfg.music_decoder!r}; choose 'musicgen', 'musicgen-melody' or 'audioldm2'")
