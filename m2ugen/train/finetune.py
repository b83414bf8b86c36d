"""Personal fine-tunes: a PEFT LoRA on the MusicGen decoder learnt from a folder of the user's audio.

Each clip is encoded to EnCodec codes; the decoder is teacher-forced on those codes (MusicGen's
codebook delay pattern, per-codebook cross-entropy) with the clip's caption as its T5 text
condition. Captions come from a sidecar ``<clip>.txt``, else the model describes the clip itself
(``model.chat`` with the audio). Optionally a second LoRA on the LLM's linear maps learns to
describe the clips with those captions (cross-entropy on the reply, audio as input).

The adapter directory is a PEFT directory (``adapter_config.json`` + ``adapter_model.safetensors``,
keys as ``PeftModel.save_pretrained`` writes them, so ``PeftModel.from_pretrained(musicgen.decoder,
dir)`` loads it) plus ``m2ugen_adapter.json`` (what it targets, captions, steps, losses) and, with
the LLM option, ``llm/`` (the same layout for the LLaMA). ``apply_adapter(model, dir, name)`` loads
one into a built model; several can be loaded and ``select_adapter(model, name)`` picks one (None:
the base model) per request.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger("m2ugen.train.finetune")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a")
DESCRIBE_PROMPT = ("Describe the music in detail including details such as instruments used, tempo and mood of "
                   "the song")  # MUCaps' captioning instruction
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
LLM_TARGETS = ("wq", "wk", "wv", "wo")
INFO_FILE = "m2ugen_adapter.json"
_PEFT_PREFIX = "base_model.model."


@dataclass
class FinetuneConfig:
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.0
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    clip_s: float = 10.0  # random crop of each clip per step
    targets: tuple[str, ...] = DECODER_TARGETS
    llm: bool = False  # also a LoRA on the LLaMA (wq/wk/wv/wo), trained to describe the clips
    llm_rank: int = 8
    seed: int = 0
    name: str = "personal"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> "FinetuneConfig":
        bad = [k for k in ("steps", "batch_size", "rank", "llm_rank") if not isinstance(getattr(self, k), int)
               or getattr(self, k) < 1]
        if bad or not self.lr > 0 or not self.clip_s > 0:
            raise ValueError(f"bad fine-tune config: {', '.join(bad) or 'lr and clip_s must be positive'}")
        return self


@dataclass
class Clip:
    path: str
    caption: str
    caption_source: str  # "sidecar" | "model"


# ----------------------------------------------------------------------------------------------
# clips and captions


def find_clips(audio_dir: str | os.PathLike) -> list[Path]:
    d = Path(audio_dir)
    if not d.is_dir():
        raise ValueError(f"--audio-dir {d}: not a directory")
    clips = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not clips:
        raise ValueError(f"{d}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return clips


def caption_clips(model, paths: list[Path], on_progress: Callable[[float], None] | None = None, *,
                  should_stop: Callable[[], bool] | None = None,
                  between: Callable[[], None] | None = None) -> list[Clip] | None:
    """Sidecar ``.txt`` captions, else the model's own description of the clip. Unreadable files are
    all listed in one error before anything is trained. One caption is one step: before each of the
    model's captions after the first, ``between()`` runs (e.g. lend the model to waiting jobs), and
    ``should_stop()`` is asked before every one of them; None when it stopped the captioning."""
    from m2ugen.train.data import DatasetError, check_media

    problems = [f"{p}: {err}" for p in paths if (err := check_media(str(p), "audio"))]
    if problems:
        raise DatasetError(problems)
    clips = []
    captioned = 0
    for i, p in enumerate(paths):
        side = p.with_suffix(".txt")
        text = side.read_text(encoding="utf-8").strip() if side.is_file() else ""
        if text:
            clips.append(Clip(str(p), text, "sidecar"))
        else:
            if captioned and between is not None:
                between()
            if should_stop is not None and should_stop():
                log.info("captioning stopped after %d of %d clip(s)", i, len(paths))
                return None
            captioned += 1
            reply = model.chat(DESCRIBE_PROMPT, audio=str(p), want_audio=False, temperature=0.0, seed=0,
                               max_new_tokens=min(96, model.cfg.max_new_tokens))
            clips.append(Clip(str(p), reply.text.strip() or p.stem.replace("_", " "), "model"))
        if on_progress is not None:
            on_progress((i + 1) / len(paths))
    return clips


# ----------------------------------------------------------------------------------------------
# teacher forcing MusicGen


def delay_pattern(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """codes [B, K, T] -> [B, K, T + K - 1]: codebook k shifted right by k steps, ``pad`` elsewhere
    (the order in which MusicGen generates the codebooks)."""
    B, K, T = codes.shape
    out = torch.full((B, K, T + K - 1), pad, dtype=codes.dtype, device=codes.device)
    for k in range(K):
        out[:, k, k:k + T] = codes[:, k]
    return out


@torch.no_grad()
def encodec_codes(musicgen, waves: torch.Tensor) -> torch.Tensor:
    """waves [B, samples] at the decoder's rate -> codes [B, K, frames] (the decoder's K codebooks)."""
    k = musicgen.decoder.config.num_codebooks
    enc = musicgen.audio_encoder.encode(waves.unsqueeze(1).to(musicgen.device, musicgen.dtype))
    codes = enc.audio_codes[0]  # [B, n_q, T]
    if codes.shape[1] < k:
        raise ValueError(f"EnCodec gave {codes.shape[1]} codebooks, the decoder needs {k}")
    return codes[:, :k]


def decoder_loss(decoder, codes: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per-codebook CE of MusicGen teacher-forced on ``codes`` [B, K, T] with the captions' T5 condition."""
    musicgen = decoder.model
    pad = musicgen.config.decoder.pad_token_id
    labels = delay_pattern(codes, pad).transpose(1, 2)  # [B, T', K]; pad positions are ignored by the loss
    text = decoder._text_inputs(list(captions))
    return musicgen(input_ids=text["input_ids"], attention_mask=text["attention_mask"], labels=labels).loss


# ----------------------------------------------------------------------------------------------
# LoRA plumbing (peft)


def _require_peft():
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ValueError("fine-tuning needs peft: pip install 'm2ugen[train]'") from None


def _lora_config(targets, rank: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")


def _inject(module: torch.nn.Module, config, name: str) -> list[torch.nn.Parameter]:
    from peft import inject_adapter_in_model

    with warnings.catch_warnings():  # a second named adapter is what we want here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, module, adapter_name=name)
    params = [p for n, p in module.named_parameters() if f".{name}." in n and "lora_" in n]
    if not params:
        raise ValueError(f"LoRA targets {config.target_modules} matched no module")
    return params


def _save_peft(module: torch.nn.Module, config, name: str, directory: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    sd = get_peft_model_state_dict(module, adapter_name=name)
    save_file({_PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in sd.items()},
              str(directory / "adapter_model.safetensors"))
    config.save_pretrained(str(directory))


def _load_peft(module: torch.nn.Module, directory: Path, name: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(directory))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, module, adapter_name=name)
    sd = {k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}
    result = set_peft_model_state_dict(module, sd, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"{directory}: adapter tensors unknown to the model: {unexpected[:5]}")
    module.requires_grad_(False)


def _lora_layers(module: torch.nn.Module):
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


# ----------------------------------------------------------------------------------------------
# public API


def finetune(
    model,
    audio_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    fcfg: FinetuneConfig | None = None,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    state_dir: str | os.PathLike | None = None,
    save_every: int = 0,
    between_steps: Callable[[], None] | None = None,
    between_captions: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train a personal LoRA from the clips in ``audio_dir``; write the adapter dir ``out_dir``.

    ``state_dir``: the resumable state (``STATE_FILE``: LoRA tensors, AdamW state, RNG states, step,
    losses, captions) is written there every ``save_every`` steps and when ``should_stop`` stops the
    run; when it already holds one, training continues from it (the captions are not asked again) and
    ends as an uninterrupted run would. ``between_steps``: called after every step (e.g. to lend the
    model to other work inside ``paused``); ``between_captions``: called between the model's captions
    (the model is not training yet: no ``paused`` needed). A stop while captioning returns
    ``{"status": "stopped", "steps": 0}`` before any training or state."""
    _require_peft()
    fcfg = (fcfg or FinetuneConfig()).check()
    emit = on_event or (lambda e: None)
    out = Path(out_dir)
    dec = model.decoder
    if not hasattr(dec, "_text_inputs") or not hasattr(dec.model, "audio_encoder"):
        raise ValueError("personal fine-tunes need the MusicGen decoder (this model has "
                         f"{type(dec).__name__})")
    state = load_state(state_dir) if state_dir is not None else None
    if state is not None:
        clips = [Clip(**c) for c in state["clips"]]
        log.info("fine-tune %r resumes at step %d of %d", fcfg.name, state["step"], fcfg.steps)
    else:
        emit({"kind": "captioning", "fraction": 0.0})
        clips = caption_clips(model, find_clips(audio_dir), lambda f: emit({"kind": "captioning", "fraction": f}),
                              should_stop=should_stop, between=between_captions)
        if clips is None:
            emit({"kind": "done", "status": "stopped", "steps": 0, "last_loss": None, "out": None})
            return {"status": "stopped", "steps": 0, "clips": []}
    sr = dec.sample_rate
    from m2ugen import media

    waves = [media.load_audio(c.path, sr, model.cfg.max_audio_s) for c in clips]
    rng = np.random.default_rng(fcfg.seed)
    torch.manual_seed(fcfg.seed)

    musicgen = dec.model
    dec_params = _inject(musicgen.decoder, _lora_config(fcfg.targets, fcfg.rank, fcfg.alpha, fcfg.dropout), fcfg.name)
    params = list(dec_params)
    llm_cfg = None
    if fcfg.llm:
        llm_cfg = _lora_config(LLM_TARGETS, fcfg.llm_rank, 2 * fcfg.llm_rank, 0.0)
        params += _inject(model.llama, llm_cfg, fcfg.name)
    select_adapter(model, fcfg.name)  # the new adapter is the active one (others may be loaded)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=fcfg.lr, weight_decay=fcfg.weight_decay)
    crop = int(fcfg.clip_s * sr)
    hop = max(1, sr // dec.frame_rate)
    losses: list[float] = []
    first = 0
    if state is not None:
        first, losses = _restore_state(state, model, fcfg.name, opt, rng)
    t0 = time.perf_counter()
    musicgen.decoder.train()  # the frozen T5 / EnCodec stay in eval mode (no dropout)
    status = "finished"

    def save(step: int) -> None:
        if state_dir is not None:
            save_state(state_dir, _state(model, fcfg.name, opt, rng, step, losses, clips))

    try:
        for step in range(first, fcfg.steps):
            pick = rng.choice(len(clips), size=min(fcfg.batch_size, len(clips)), replace=len(clips) < fcfg.batch_size)
            n = min(crop, min(len(waves[i]) for i in pick))
            n = max(hop * musicgen.decoder.config.num_codebooks, n - n % hop)
            batch = []
            for i in pick:
                w = waves[i]
                start = int(rng.integers(0, max(1, len(w) - n + 1)))
                seg = w[start:start + n]
                batch.append(np.pad(seg, (0, n - len(seg))))
            codes = encodec_codes(musicgen, torch.from_numpy(np.stack(batch)))
            loss = decoder_loss(dec, codes, [clips[i].caption for i in pick])
            if fcfg.llm:
                loss = loss + _llm_loss(model, [clips[i] for i in pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if save_every and (step + 1) % save_every == 0 and step + 1 < fcfg.steps:
                save(step + 1)
            emit({"kind": "step", "step": step + 1, "total": fcfg.steps, "fraction": (step + 1) / fcfg.steps,
                  "loss": losses[-1]})
            if should_stop is not None and should_stop():
                status = "stopped"
                if step + 1 < fcfg.steps:
                    save(step + 1)
                break
            if between_steps is not None and step + 1 < fcfg.steps:
                between_steps()
    finally:
        musicgen.eval()
        for p in params:
            p.requires_grad_(False)

    _save_peft(musicgen.decoder, _lora_config(fcfg.targets, fcfg.rank, fcfg.alpha, fcfg.dropout), fcfg.name, out)
    if fcfg.llm:
        _save_peft(model.llama, llm_cfg, fcfg.name, out / "llm")
    info = {"format": "m2ugen-adapter-v1", "name": fcfg.name, "targets": ["decoder"] + (["llm"] if fcfg.llm else []),
            "preset": model.cfg.name, "decoder_path": model.cfg.decoder_path, "status": status,
            "steps": len(losses), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "seconds": round(time.perf_counter() - t0, 2),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(fcfg).items()},
            "clips": [asdict(c) for c in clips]}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    select_adapter(model, fcfg.name)
    emit({"kind": "done", **{k: info[k] for k in ("status", "steps", "last_loss")}, "out": str(out)})
    return info


def _llm_loss(model, clips: list[Clip]) -> torch.Tensor:
    """CE of the LLM describing each clip with its caption (stage-1 style, audio as input)."""
    from m2ugen import media
    from m2ugen.train.config import TrainConfig
    from m2ugen.train.data import Batch, Entry, collate, tokenize
    from m2ugen.train.stages import StageModel, encode_rows

    items = []
    for c in clips:
        e = Entry("personal", c.path, 0, DESCRIBE_PROMPT, c.caption, "audio", c.path)
        ids, labels = tokenize(e, model.tokenizer, model.cfg.max_seq_len)
        items.append(dict(input_ids=ids, labels=labels, modality="audio", music_caption="", file=c.path, where=c.path,
                          media=media.load_audio(c.path, model.cfg.audio_sample_rate, model.cfg.max_audio_s)))
    batch: Batch = collate(items)
    feats = encode_rows(model, batch, model.device)
    n_tok = float((batch.labels[:, 1:] != 0).sum())
    sm = StageModel(model, TrainConfig(stage=3))
    return sm(batch.input_ids.to(model.device), batch.labels.to(model.device), feats, [], None, batch.files,
              n_tok, 0.0)["loss"]


# ----------------------------------------------------------------------------------------------
# resumable state, pausing


STATE_FILE = "finetune_state.safetensors"  # m2ugen.train.statefile: no pickle
LEGACY_STATE_FILE = "finetune_state.pt"  # an older pickle state: never loaded (it could run code)


def _lora_params(model, name: str) -> dict[str, torch.Tensor]:
    """The adapter ``name``'s LoRA tensors in the decoder and the LLM, by module path."""
    out = {}
    for prefix, module in (("decoder.", model.decoder.model.decoder), ("llm.", model.llama)):
        out.update({prefix + n: p for n, p in module.named_parameters() if f".{name}." in n and "lora_" in n})
    return out


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _state(model, name: str, opt, rng, step: int, losses: list[float], clips: list[Clip]) -> dict[str, Any]:
    return {"format": "m2ugen-finetune-state-v1", "step": step, "losses": list(losses),
            "clips": [asdict(c) for c in clips],
            "lora": {k: v.detach().cpu().clone() for k, v in _lora_params(model, name).items()},
            "optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state, "rng": _rng_states()}


def _restore_state(state: dict[str, Any], model, name: str, opt, rng) -> tuple[int, list[float]]:
    params = _lora_params(model, name)
    if set(params) != set(state["lora"]):
        raise ValueError("the saved fine-tune state does not match this adapter's LoRA tensors "
                         "(another rank, targets or model)")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state["lora"][k].to(p.device, p.dtype))
    opt.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["numpy_rng"]
    _set_rng_states(state["rng"])
    return int(state["step"]), list(state["losses"])


def save_state(state_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state_dir/STATE_FILE`` (a crash never leaves half a state)."""
    from m2ugen.train import statefile

    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    return statefile.save(d / STATE_FILE, state)


def load_state(state_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resumable state in ``state_dir``, or None when there is none yet. A file that is not a state
    (corrupt, or an older pickle ``LEGACY_STATE_FILE``, which is never unpickled) is reported and the
    fine-tune starts over."""
    from m2ugen.train import statefile

    d = Path(state_dir)
    legacy = d / LEGACY_STATE_FILE
    if legacy.exists():
        log.warning("%s: a pickle state file is never loaded (it could run code); ignored, the fine-tune "
                    "starts over", legacy)
    p = d / STATE_FILE
    if not p.is_file():
        return None
    try:
        state = statefile.load(p)
    except statefile.StateFileError as e:
        log.warning("the saved fine-tune state cannot be used (%s); the fine-tune starts over", e)
        return None
    if not isinstance(state, dict) or state.get("format") != "m2ugen-finetune-state-v1":
        log.warning("%s is not a fine-tune state; the fine-tune starts over", p)
        return None
    return state


@contextmanager
def paused(model, name: str):
    """Lend a model that is being fine-tuned (adapter ``name``) to other work: inside, it is in
    inference mode with the base model selected and the training's RNG state is put aside; after,
    training mode, the training adapter and the RNG state are back, so the run ends as if it had not
    been paused."""
    musicgen = model.decoder.model
    rng = _rng_states()
    musicgen.eval()
    select_adapter(model, None)
    try:
        yield
    finally:
        _set_rng_states(rng)
        select_adapter(model, name)
        musicgen.decoder.train()


def unload_adapter(model, name: str) -> None:
    """Remove adapter ``name`` (loaded or still being trained) from the decoder and the LLM."""
    if _has_peft():
        for module in (model.decoder.model.decoder, model.llama):
            for layer in _lora_layers(module):
                if name in layer.lora_A:
                    with warnings.catch_warnings():  # "was active, now deleted": selected again by the caller
                        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                        layer.delete_adapter(name)
    (getattr(model, "_m2ugen_adapters", None) or {}).pop(name, None)


def apply_adapter(model, directory: str | os.PathLike, name: str | None = None) -> str:
    """Load an adapter dir written by ``finetune`` into a built model and make it active; returns its name.

    Load several under different names and switch with ``select_adapter``.
    """
    _require_peft()
    d = Path(directory)
    info_path = d / INFO_FILE
    if not info_path.is_file() or not (d / "adapter_config.json").is_file():
        raise ValueError(f"{d}: not an m2ugen adapter (needs {INFO_FILE} and adapter_config.json)")
    info = json.loads(info_path.read_text())
    name = name or info.get("name") or d.name
    if info.get("preset") and info["preset"] != model.cfg.name:
        raise ValueError(f"{d}: adapter trained on preset {info['preset']!r}, the model is {model.cfg.name!r}")
    loaded = getattr(model, "_m2ugen_adapters", None)
    if loaded is None:
        loaded = {}
        object.__setattr__(model, "_m2ugen_adapters", loaded)
    if name in loaded:
        raise ValueError(f"an adapter named {name!r} is already loaded")
    _load_peft(model.decoder.model.decoder, d, name)
    if "llm" in info.get("targets", []):
        _load_peft(model.llama, d / "llm", name)
    loaded[name] = {"dir": str(d), "targets": info.get("targets", ["decoder"])}
    select_adapter(model, name)
    log.info("adapter %r loaded from %s (%s)", name, d, ", ".join(loaded[name]["targets"]))
    return name


def loaded_adapters(model) -> dict[str, dict[str, Any]]:
    return dict(getattr(model, "_m2ugen_adapters", None) or {})


def select_adapter(model, name: str | None) -> None:
    """Make adapter ``name`` active (None: none, the base model) in the decoder and the LLM."""
    for module in (model.decoder.model.decoder, model.llama):
        layers = _lora_layers(module) if _has_peft() else []
        for layer in layers:
            if name is None or name not in layer.lora_A:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(name)


def _has_peft() -> bool:
    try:
        import peft  # noqa: F401

        return True
    except ImportError:
        return False
