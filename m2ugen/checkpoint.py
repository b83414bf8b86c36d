"""Weights: official M2UGen checkpoints, LLaMA-2 base weights, the converted trainable-only file.

Formats handled here:
- the official ``checkpoint.pth`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``, a full
  ``state_dict`` with official names, optional ``module.`` prefixes, mixed fp16/fp32/bf16);
- LLaMA-2 base weights in Meta format (``consolidated.*.pth`` + ``params.json``) or Hugging Face
  format (``config.json`` + ``model*.safetensors`` / ``pytorch_model*.bin``);
- our converted ``.safetensors``: only the tensors M2UGen trained (official names) plus the
  ``[AUD]`` rows of ``llama.output.weight``; frozen base weights come from their own sources.

Official -> our names: ``llama.*``, ``prefix_query.*`` and ``output_projector.*`` are identical;
the bridges ``mu_mert_X`` / ``iu_vit_X`` / ``iu_vivit_X`` become ``mu_mert.X`` / ``iu_vit.X`` /
``iu_vivit.X``; the sub-models ``mert_model.*``, ``vit_model.*``, ``vivit_model.*``,
``generation_model.*`` go, prefix removed, to the lazy holders ``music_encoder``, ``image_encoder``,
``video_encoder``, ``decoder``.

Every loader works on a model built on the meta device: tensors are then assigned (no copy when the
dtype already matches, so memory-mapped tensors stay memory-mapped), otherwise copied in place.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import math
import mmap
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from m2ugen.config import M2UGenConfig
from m2ugen.encoders import legacy_weight_norm_name
from m2ugen.paths import config_dir

log = logging.getLogger("m2ugen.checkpoint")

# ----------------------------------------------------------------------------------------------
# Known architectures of the sub-models (HF config kwargs), for offline use and meta-device checks.
# Values are those of the published config.json files of the Hub repos named in the keys.

MERT_V1_330M = dict(  # m-a-p/MERT-v1-330M as a plain transformers HubertModel (dependencies.md §5)
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False, feat_extract_norm="group", feat_proj_layer_norm=True, do_stable_layer_norm=True,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
)
VIT_BASE_16_224 = dict(  # google/vit-base-patch16-224: 14 x 14 patches + CLS = 197 tokens of 768
    image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072, layer_norm_eps=1e-12,
)
VIVIT_B_16X2 = dict(  # google/vivit-b-16x2(-kinetics400): 16 x 14 x 14 tubelets + CLS = 3137 tokens
    image_size=224, num_frames=32, tubelet_size=[2, 16, 16], num_channels=3, hidden_size=768,
    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_fast",
    layer_norm_eps=1e-6, qkv_bias=True,
)
T5_BASE_ENCODER = dict(  # MusicGen's text encoder (t5-base)
    vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
    relative_attention_num_buckets=32, feed_forward_proj="relu",
)
ENCODEC_32KHZ = dict(  # facebook/encodec_32khz as configured inside facebook/musicgen-*
    sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128, codebook_size=2048,
    codebook_dim=128, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_residual_layers=1,
    num_lstm_layers=2, kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
    use_causal_conv=False, use_conv_shortcut=False, normalize=False, norm_type="weight_norm",
    pad_mode="reflect", compress=2, trim_right_ratio=1.0,
)


def _musicgen_decoder(hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(
        vocab_size=2048, max_position_embeddings=2048, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, ffn_dim=4 * hidden, num_codebooks=4, audio_channels=1,
        pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048,
    )


MUSICGEN_SMALL = dict(text_encoder=T5_BASE_ENCODER, audio_encoder=ENCODEC_32KHZ,
                      decoder=_musicgen_decoder(1024, 24, 16))
MUSICGEN_MEDIUM = dict(text_encoder=T5_BASE_ENCODER, audio_encoder=ENCODEC_32KHZ,
                       decoder=_musicgen_decoder(1536, 48, 24))
# the melody and stereo checkpoints (facebook/musicgen-melody, -stereo-medium, -stereo-melody config.json):
# the medium decoder; stereo: 2 x 4 codebooks interleaved left/right; melody: chroma prefix of 235 frames
MUSICGEN_MELODY = dict(MUSICGEN_MEDIUM, chroma_length=235, num_chroma=12)
MUSICGEN_STEREO_MEDIUM = dict(MUSICGEN_MEDIUM, decoder=dict(MUSICGEN_MEDIUM["decoder"], num_codebooks=8, audio_channels=2))
MUSICGEN_STEREO_MELODY = dict(MUSICGEN_MELODY, decoder=MUSICGEN_STEREO_MEDIUM["decoder"])

KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "m-a-p/MERT-v1-330M": MERT_V1_330M,
    "google/vit-base-patch16-224": VIT_BASE_16_224,
    "google/vivit-b-16x2": VIVIT_B_16X2,
    "google/vivit-b-16x2-kinetics400": VIVIT_B_16X2,
    "facebook/musicgen-small": MUSICGEN_SMALL,
    "facebook/musicgen-medium": MUSICGEN_MEDIUM,
    "facebook/musicgen-melody": MUSICGEN_MELODY,
    "facebook/musicgen-stereo-medium": MUSICGEN_STEREO_MEDIUM,
    "facebook/musicgen-stereo-melody": MUSICGEN_STEREO_MELODY,
}


def offline_config(preset: str) -> M2UGenConfig:
    """The preset with every Hub sub-model replaced by its known architecture (``*_path=None``).

    The result builds the full-size model with random sub-model weights and no file access, e.g.
    on the meta device to check a checkpoint's keys, or to load an official checkpoint that holds
    the sub-model weights itself. The AudioLDM2 pipeline keeps its ``decoder_path`` (it is no
    ``nn.Module`` and has no keys in the official checkpoint).
    """
    cfg = M2UGenConfig.preset(preset)
    changes: dict[str, Any] = {}
    for field_ in ("mert", "vit", "vivit", "decoder"):
        path = getattr(cfg, f"{field_}_path")
        if path in KNOWN_ARCHITECTURES:
            changes[f"{field_}_path"] = None
            changes[f"{field_}_config"] = json.loads(json.dumps(KNOWN_ARCHITECTURES[path]))  # deep copy
    return cfg.replace(**changes)


# ----------------------------------------------------------------------------------------------
# Official <-> our names

BRIDGE_PREFIXES = {"mu_mert_": "mu_mert.", "iu_vit_": "iu_vit.", "iu_vivit_": "iu_vivit."}
HOLDER_PREFIXES = {
    "mert_model.": "music_encoder",
    "vit_model.": "image_encoder",
    "vivit_model.": "video_encoder",
    "generation_model.": "decoder",
}
OWN_PREFIXES = ("llama.", "prefix_query.", "output_projector.")
# the converted file stores llama.output.weight[base_vocab:] (the [AUD] rows) under this name
AUD_ROWS_KEY = "llama.output.aud_rows"
CONVERTED_FORMAT = "m2ugen-trainable-v1"


def to_ours(official: str) -> tuple[str | None, str]:
    """Official key -> (where, name): where is "" for the model itself, a holder attribute, or None."""
    if official.startswith(OWN_PREFIXES):
        return "", official
    for prefix, ours in BRIDGE_PREFIXES.items():
        if official.startswith(prefix):
            return "", ours + official[len(prefix):]
    for prefix, holder in HOLDER_PREFIXES.items():
        if official.startswith(prefix):
            return holder, official[len(prefix):]
    return None, official


def to_official(ours: str, holder: str = "") -> str:
    """Inverse of ``to_ours``."""
    if holder:
        prefix = {h: p for p, h in HOLDER_PREFIXES.items()}[holder]
        return prefix + ours
    for prefix, mod in BRIDGE_PREFIXES.items():
        if ours.startswith(mod):
            return prefix + ours[len(mod):]
    return ours


def strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading ``module.`` (the DDP wrapper of mid-epoch saves) from every key."""
    out = {}
    for k, v in sd.items():
        k2 = k[len("module."):] if k.startswith("module.") else k
        if k2 in out:
            raise ValueError(f"checkpoint holds {k2!r} both with and without the 'module.' prefix")
        out[k2] = v
    return out


def is_trained_key(name: str) -> bool:
    """True for the tensors M2UGen trained (reference §2.2) and the gates, by official name."""
    if name.startswith("llama."):
        return (
            name == "llama.tok_embeddings.weight"
            or name.endswith(".attention.gate")
            or any(s in name for s in ("norm", "bias", "lora"))
        )
    return name.startswith(("prefix_query.", "output_projector.", *BRIDGE_PREFIXES))


# ----------------------------------------------------------------------------------------------
# Reading files


def _check_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict; non-tensor entries: {', '.join(map(str, bad[:10]))}")
    return obj


def read_official_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of an official ``checkpoint.pth`` (or of a bare state dict file).

    Memory-mapped (``mmap=True``): tensors are read from the file on first use, so the optimizer
    state is never loaded. Loaded with ``weights_only=True`` and ``argparse.Namespace`` (the pickled
    ``args``) allow-listed. ``trust_pickle=True`` falls back to a full unpickle, which can run code
    from the file: only for a file you trust whose pickle holds other Python objects.
    Returns the state dict with a leading ``module.`` stripped from the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch zip checkpoint (torch.save since torch 1.6); cannot memory-map it")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused a global
        if not trust_pickle:
            raise ValueError(
                f"{path}: the safe (weights-only) loader refused this file: {e}. If you trust the file, "
                "load it with trust_pickle=True"
            ) from e
        # Needed only when the pickle holds objects beyond tensors/containers/Namespace.
        log.warning("%s: falling back to a full unpickle (trust_pickle=True)", path)
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        extra = sorted(k for k in obj if k != "model")
        log.info("%s: official checkpoint (ignoring %s)", path.name, ", ".join(extra) or "nothing")
        obj = obj["model"]
    return strip_module_prefix(_check_state_dict(obj, path))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file; tensors are zero-copy views of a memory map."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"safetensors file not found: {path}")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def is_converted(meta: dict[str, str]) -> bool:
    return meta.get("format_m2ugen") == CONVERTED_FORMAT


# ----------------------------------------------------------------------------------------------
# Putting tensors into a (possibly meta) model


def _resolve(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    mod = root
    for p in path:
        mod = getattr(mod, p)
    return mod, attr


class FilePages:
    """Drops the resident pages of file-mapped source tensors once they have been copied or cast.

    Tensors read with ``mmap`` occupy RSS once touched; after a cast (fp32 file -> fp16 model) the
    source pages are dead weight until the whole file is unmapped. Only pages lying wholly inside
    the tensor and inside a file-backed mapping (``/proc/self/maps``) are dropped
    (``madvise(MADV_DONTNEED)``); the kernel re-reads them from the file if they are touched again.
    Never used on tensors of a caller's in-memory state dict. A no-op off Linux.
    """

    MADV_DONTNEED = 4

    def __init__(self, enabled: bool = True):
        self.ranges: list[tuple[int, int]] = []
        self.libc = None
        if not enabled or not sys.platform.startswith("linux"):
            return
        try:
            import ctypes

            self.libc = ctypes.CDLL(None, use_errno=True)
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 6 and parts[5].startswith("/"):
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        self.ranges.append((lo, hi))
        except OSError:
            self.ranges = []

    def release(self, t: torch.Tensor) -> None:
        if not self.ranges or t.device.type != "cpu" or t.is_meta or not t.is_contiguous():
            return
        import ctypes

        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        if not any(lo <= start and end <= hi for lo, hi in self.ranges):
            return
        page = mmap.PAGESIZE
        a, b = -(-start // page) * page, end // page * page
        if b > a:
            self.libc.madvise(ctypes.c_void_p(a), ctypes.c_size_t(b - a), self.MADV_DONTNEED)


_NO_RELEASE = FilePages(enabled=False)


@torch.no_grad()
def _put(root: nn.Module, name: str, value: torch.Tensor, pages: FilePages = _NO_RELEASE) -> None:
    """Set parameter/buffer ``name`` of ``root`` to ``value`` cast to the target's dtype.

    A meta target is replaced (assign: no copy if the dtype matches); a real one is copied into.
    When a copy was made, ``pages`` drops the source's file pages.
    """
    mod, attr = _resolve(root, name)
    cur = getattr(mod, attr)
    if tuple(cur.shape) != tuple(value.shape):
        raise ValueError(f"{name}: shape {list(value.shape)} does not fit the model's {list(cur.shape)}")
    if cur.is_meta:
        new = value.to(dtype=cur.dtype)
        if attr in mod._parameters:
            mod._parameters[attr] = nn.Parameter(new, requires_grad=cur.requires_grad)
        else:
            mod._buffers[attr] = new
        if new.data_ptr() != value.data_ptr():
            pages.release(value)
    else:
        cur.copy_(value)
        pages.release(value)


def _fmt_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return shown + more


def _shape(t) -> list[int]:
    return list(t.shape) if hasattr(t, "shape") else list(t)


def _mismatch_error(title: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> ValueError:
    lines = [title]
    if missing:
        lines.append(f"  {len(missing)} missing key(s) (the model has them, the checkpoint does not): "
                     + _fmt_list(missing))
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s) (in the checkpoint, unknown to the model): "
                     + _fmt_list(unexpected))
    if misshaped:
        lines.append(f"  {len(misshaped)} mis-shaped key(s): " + _fmt_list(misshaped))
    return ValueError("\n".join(lines))


def _holder(model, attr: str):
    return getattr(model, attr, None)


def _set_prefix_layout(model, legacy: bool) -> None:
    """Switch the model between the per-modality (3*query_layer rows) and legacy prefix layout."""
    cfg = model.cfg
    if cfg.legacy_prefix == legacy:
        return
    old = model.prefix_query.weight
    cfg = model.cfg = cfg.replace(legacy_prefix=legacy)  # a copy: the caller's config is left alone
    rows = cfg.n_prefix
    log.info("prefix layout: %s (prefix_query [%d, %d])", "legacy summed" if legacy else "per-modality", rows, cfg.dim)
    model.prefix_query = nn.Embedding(rows, cfg.dim, device=old.device, dtype=old.dtype)


def detect_prefix_layout(cfg: M2UGenConfig, rows: int) -> bool | None:
    """True for the legacy layout, False for per-modality, None if ``rows`` fits neither."""
    if rows == 3 * cfg.query_layer:
        return False
    if rows == cfg.legacy_prefix_layers:
        return True
    return None


def load_reference_state_dict(model, sd: dict[str, torch.Tensor], strict: bool = True, *,
                              release_source: bool = False) -> None:
    """Load a state dict with official key names into ``model`` (an ``M2UGen``).

    Checks every key first and raises ONE ValueError listing the missing, unexpected and mis-shaped
    keys (official names). ``strict=False`` tolerates missing/unexpected keys (logged), never wrong
    shapes. The prefix layout follows ``prefix_query.weight``'s rows. Works on a meta-device model.
    ``release_source``: ``sd`` was memory-mapped from a file here; drop its pages after casts.
    """
    sd = strip_module_prefix(sd)
    cfg = model.cfg
    pq = sd.get("prefix_query.weight")
    if pq is not None and pq.dim() == 2:
        legacy = detect_prefix_layout(cfg, pq.shape[0])
        if legacy is not None:
            _set_prefix_layout(model, legacy)

    own = model.state_dict(keep_vars=True)  # our name -> tensor (meta or real)
    own_hits: dict[str, torch.Tensor] = {}
    holder_sds: dict[str, dict[str, torch.Tensor]] = {h: {} for h in HOLDER_PREFIXES.values()}
    missing: list[str] = []
    unexpected: list[str] = []
    misshaped: list[str] = []
    seen: set[str] = set()
    for key, t in sd.items():
        where, name = to_ours(key)
        if where is None:
            unexpected.append(key)
        elif where == "":
            if name not in own:
                unexpected.append(key)
            elif tuple(own[name].shape) != tuple(t.shape):
                misshaped.append(f"{key}: checkpoint {_shape(t)} vs model {_shape(own[name])}")
                seen.add(name)
            else:
                own_hits[name] = t
                seen.add(name)
        else:
            # sub-models saved by torch >= 2.1 may name weight norm parametrizations.weight.original0/1
            # instead of weight_g/_v: compare (and hand over) under the one official spelling
            holder_sds[where][legacy_weight_norm_name(name)] = t
    missing += [to_official(n) for n in own if n not in seen]

    holder_expected: dict[str, dict[str, Any]] = {}
    for attr, hsd in holder_sds.items():
        holder = _holder(model, attr)
        expected = dict(holder.expected_shapes()) if holder is not None else {}
        holder_expected[attr] = expected
        for name, t in hsd.items():
            if name not in expected:
                unexpected.append(to_official(name, attr))
            elif tuple(expected[name]) != tuple(t.shape):
                misshaped.append(f"{to_official(name, attr)}: checkpoint {_shape(t)} vs model {_shape(expected[name])}")
        missing += [to_official(n, attr) for n in expected if n not in hsd]

    title = (f"state dict does not match the model (config {cfg.name!r}, "
             f"prefix layout {'legacy' if cfg.legacy_prefix else 'per-modality'}):")
    if misshaped or (strict and (missing or unexpected)):
        raise _mismatch_error(title, missing, unexpected, misshaped)
    if missing or unexpected:
        log.warning("%s", _mismatch_error(title + " (strict=False, loading the rest)", missing, unexpected, []))

    t0 = time.perf_counter()
    pages = FilePages(release_source)
    for name, t in own_hits.items():
        _put(model, name, t, pages)
    for attr, hsd in holder_sds.items():
        expected = holder_expected[attr]
        if not hsd:
            continue
        if any(n not in hsd for n in expected):  # only with strict=False: a sub-model loads whole or not at all
            log.warning("%s: incomplete sub-model weights in the checkpoint, not loaded", attr)
            continue
        _holder(model, attr).load_state_dict({k: v for k, v in hsd.items() if k in expected})
    log.info("loaded %d tensors (%d into sub-models) in %.1f s", len(own_hits),
             sum(len(h) for h in holder_sds.values()), time.perf_counter() - t0)
    # the gate report (M2UGen.log_gate_report) is logged by the callers in m2ugen.model


# ----------------------------------------------------------------------------------------------
# LLaMA-2 base weights

# official key_to_dim: how tensor-parallel shards of each weight are concatenated
_CAT_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": -1, "w2": -1, "tok_embeddings": 1}


def _llama_of(model) -> nn.Module:
    return model.llama if hasattr(model, "llama") else model


def _is_base_param(name: str) -> bool:
    """Frozen LLaMA weights that the base checkpoint provides (not gate / LoRA / bias)."""
    return not any(s in name for s in ("gate", "lora", "bias"))


@torch.no_grad()
def _put_vocab_rows(llama: nn.Module, name: str, base: torch.Tensor, pages: FilePages) -> None:
    """tok_embeddings / output with the base vocabulary's rows; the extra [AUD] rows as official:
    embeddings := 1.0, output rows keep their value (nn.Linear init when the model is on meta)."""
    mod, attr = _resolve(llama, name)
    cur = getattr(mod, attr)
    n_base, dim = base.shape
    if cur.shape[1] != dim or cur.shape[0] < n_base:
        raise ValueError(f"{name}: base weights {list(base.shape)} do not fit the model's {list(cur.shape)}")
    if cur.shape[0] == n_base:
        _put(llama, name, base, pages)
        return
    full = torch.empty(cur.shape, dtype=cur.dtype) if cur.is_meta else cur
    full[:n_base] = base
    pages.release(base)
    if name.startswith("tok_embeddings"):
        full[n_base:] = 1.0
    elif cur.is_meta:
        bound = 1.0 / math.sqrt(dim)
        full[n_base:].uniform_(-bound, bound)
    if cur.is_meta:
        _put(llama, name, full)


def _load_llama_tensors(model, get, available: set[str], n_base_vocab: int | None, source: str) -> None:
    """Check and put the base LLaMA tensors ``get(name)`` (Meta names) read from files we mapped."""
    llama = _llama_of(model)
    cfg = llama.cfg
    names = [n for n, _ in llama.named_parameters() if _is_base_param(n)]
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{source}: LLaMA weights missing: {_fmt_list(missing)}")
    expected = dict(llama.state_dict(keep_vars=True))
    misshaped = []
    tensors = {}
    for n in names:
        t = get(n)
        want = tuple(expected[n].shape)
        if n in ("tok_embeddings.weight", "output.weight"):
            ok = t.shape[1] == want[1] and (n_base_vocab is None or t.shape[0] == n_base_vocab) and t.shape[0] <= want[0]
        else:
            ok = tuple(t.shape) == want
        if not ok:
            misshaped.append(f"{n}: file {list(t.shape)} vs model {list(want)}")
        tensors[n] = t
    if misshaped:
        raise ValueError(f"{source}: LLaMA weights do not fit the config: {_fmt_list(misshaped)}")
    pages = FilePages()
    for n, t in tensors.items():
        if n in ("tok_embeddings.weight", "output.weight"):
            _put_vocab_rows(llama, n, t, pages)
        else:
            _put(llama, n, t, pages)
    extra_rows = cfg.vocab_size - tensors["tok_embeddings.weight"].shape[0]
    log.info("%s: loaded %d LLaMA base tensors (%d extra vocabulary rows kept as [AUD] rows)",
             source, len(tensors), extra_rows)


def _check_dims(source: str, checks: Iterable[tuple[str, Any, Any]]) -> None:
    bad = [f"{k}: file {a} vs config {b}" for k, a, b in checks if a != b]
    if bad:
        raise ValueError(f"{source} does not match the model config: " + "; ".join(bad))


def _meta_dir(path: Path) -> Path:
    if (path / "params.json").is_file():
        return path
    subs = sorted(p.parent for p in path.glob("*/params.json"))
    if len(subs) == 1:
        return subs[0]
    if subs:
        raise ValueError(f"{path}: several model directories ({', '.join(p.name for p in subs)}); "
                         "point llama_dir at one of them")
    raise ValueError(f"{path}: no params.json (Meta LLaMA format needs params.json + consolidated.*.pth)")


def load_meta_llama(model, llama_dir: str | os.PathLike) -> None:
    """LLaMA-2 base weights in Meta format into ``model.llama`` (or a bare ``Transformer``).

    ``llama_dir`` holds ``params.json`` and ``consolidated.NN.pth`` (or has one sub-directory such as
    ``7B/`` that does). Several shards are joined with the official key_to_dim rules. Gates, LoRA and
    biases are not touched; tok_embeddings rows past the base vocabulary become 1.0.
    """
    d = _meta_dir(Path(llama_dir))
    llama = _llama_of(model)
    cfg = llama.cfg
    params = json.loads((d / "params.json").read_text())
    n_kv = params.get("n_kv_heads") or params.get("n_heads")
    _check_dims(str(d / "params.json"), [
        ("dim", params.get("dim"), cfg.dim),
        ("n_layers", params.get("n_layers"), cfg.n_layers),
        ("n_heads", params.get("n_heads"), cfg.n_heads),
        ("n_kv_heads", n_kv, cfg.n_heads),
        ("multiple_of", params.get("multiple_of", cfg.multiple_of), cfg.multiple_of),
        ("ffn_dim_multiplier", params.get("ffn_dim_multiplier"), None),
        ("norm_eps", params.get("norm_eps", cfg.norm_eps), cfg.norm_eps),
    ])
    shards = sorted(d.glob("consolidated.*.pth"))
    if not shards:
        raise ValueError(f"{d}: no consolidated.*.pth files")
    sds = [torch.load(s, map_location="cpu", mmap=True, weights_only=True) for s in shards]
    available = set(sds[0])
    for s, sd in zip(shards[1:], sds[1:]):
        if set(sd) != available:
            raise ValueError(f"{s}: shard keys differ from {shards[0].name}")

    def get(name: str) -> torch.Tensor:
        if len(sds) == 1:
            return sds[0][name]
        kind = name.split(".")[-2]
        if kind in _CAT_DIM:
            return torch.cat([sd[name] for sd in sds], dim=_CAT_DIM[kind])
        return sds[0][name]  # norms: replicated in every shard

    vocab = params.get("vocab_size", -1)
    _load_llama_tensors(model, get, available, vocab if vocab and vocab > 0 else None, f"Meta LLaMA {d}")


def _hf_to_meta_name(name: str) -> str | None:
    """HF LlamaForCausalLM key -> Meta/official key (None for keys without a counterpart)."""
    if name.startswith("model."):
        name = name[len("model."):]
    simple = {"embed_tokens.weight": "tok_embeddings.weight", "norm.weight": "norm.weight",
              "lm_head.weight": "output.weight"}
    if name in simple:
        return simple[name]
    parts = name.split(".")
    if parts[0] != "layers" or len(parts) < 4:
        return None
    i, rest = parts[1], ".".join(parts[2:])
    table = {
        "self_attn.q_proj.weight": "attention.wq.weight",
        "self_attn.k_proj.weight": "attention.wk.weight",
        "self_attn.v_proj.weight": "attention.wv.weight",
        "self_attn.o_proj.weight": "attention.wo.weight",
        "mlp.gate_proj.weight": "feed_forward.w1.weight",
        "mlp.down_proj.weight": "feed_forward.w2.weight",
        "mlp.up_proj.weight": "feed_forward.w3.weight",
        "input_layernorm.weight": "attention_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
    }
    return f"layers.{i}.{table[rest]}" if rest in table else None


def _read_hf_weights(d: Path) -> dict[str, torch.Tensor]:
    files = sorted(d.glob("model*.safetensors"))
    if files:
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(read_safetensors(f)[0])
        return out
    files = sorted(d.glob("pytorch_model*.bin"))
    if files:
        out = {}
        for f in files:
            out.update(torch.load(f, map_location="cpu", mmap=True, weights_only=True))
        return out
    raise ValueError(f"{d}: no model*.safetensors or pytorch_model*.bin")


def load_hf_llama(model, hf_dir: str | os.PathLike) -> None:
    """LLaMA-2 base weights in Hugging Face format (``config.json`` + weights) into ``model.llama``.

    Keys are renamed to Meta's and HF's rotate-half permutation of wq/wk rows is undone.
    """
    from m2ugen.llama import permute_hf_to_meta

    d = Path(hf_dir)
    llama = _llama_of(model)
    cfg = llama.cfg
    conf = json.loads((d / "config.json").read_text())
    _check_dims(str(d / "config.json"), [
        ("hidden_size", conf.get("hidden_size"), cfg.dim),
        ("num_hidden_layers", conf.get("num_hidden_layers"), cfg.n_layers),
        ("num_attention_heads", conf.get("num_attention_heads"), cfg.n_heads),
        ("num_key_value_heads", conf.get("num_key_value_heads", conf.get("num_attention_heads")), cfg.n_heads),
        ("intermediate_size", conf.get("intermediate_size"), cfg.ffn_hidden_dim),
        ("rms_norm_eps", conf.get("rms_norm_eps"), cfg.norm_eps),
    ])
    hf = _read_hf_weights(d)
    meta: dict[str, torch.Tensor] = {}
    for k, t in hf.items():
        m = _hf_to_meta_name(k)
        if m is None:
            continue
        if m.endswith(("attention.wq.weight", "attention.wk.weight")):
            t = permute_hf_to_meta(t, cfg.n_heads)
        meta[m] = t
    if "output.weight" not in meta and conf.get("tie_word_embeddings") and "tok_embeddings.weight" in meta:
        meta["output.weight"] = meta["tok_embeddings.weight"]
    _load_llama_tensors(model, meta.__getitem__, set(meta), conf.get("vocab_size"), f"HF LLaMA {d}")


def load_llama(model, path: str | os.PathLike) -> None:
    """LLaMA-2 base weights from ``path``: Meta format (params.json) or HF format (config.json)."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"LLaMA weights directory not found: {p}")
    if (p / "config.json").is_file() and not (p / "params.json").is_file():
        load_hf_llama(model, p)
    else:
        load_meta_llama(model, p)


# ----------------------------------------------------------------------------------------------
# Conversion to the trainable-only .safetensors


def guess_preset(shapes: dict[str, Any]) -> str | None:
    """Preset name from tensor shapes of an official-named state dict (None if unknown)."""
    def shape(k):
        s = shapes.get(k)
        return tuple(s.shape) if hasattr(s, "shape") else (tuple(s) if s is not None else None)

    proj = shape("output_projector.model.weight")
    emb = shape("llama.tok_embeddings.weight")
    if proj is None or emb is None:
        return None
    if emb[1] == 4096:
        if proj[0] == 128 * 1024 + 8 * 768:
            return "audioldm2"
        if proj[0] == 768:
            enc = shape("generation_model.enc_to_dec_proj.weight")
            if enc == (1024, 768):
                return "musicgen-small"
            if enc == (1536, 768):
                return "musicgen-medium"
            return None  # small and medium differ only in the decoder
    for name in ("tiny", "tiny-audioldm2"):
        c = M2UGenConfig.preset(name)
        if emb[1] == c.dim and proj[0] == c.output_dim:
            return name
    return None


def _sha256(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    done, t0 = 0, time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress and time.perf_counter() - t0 > 5:
                log.info("hashing %s: %.0f%%", path.name, 100 * done / size)
                t0 = time.perf_counter()
    return h.hexdigest()


def read_any_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(official-named state dict, metadata) from a checkpoint.pth or a .safetensors file."""
    p = Path(path)
    if p.suffix == ".safetensors":
        sd, meta = read_safetensors(p)
        return strip_module_prefix(sd), meta
    return read_official_checkpoint(p), {}


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, progress: bool = True,
                       hash_source: bool = True) -> dict[str, Any]:
    """Write the tensors M2UGen trained from an official checkpoint into a .safetensors file.

    Kept (official names, stored dtypes unchanged): llama norms / biases / LoRA / tok_embeddings /
    gates, prefix_query, the bridges, output_projector, and ``llama.output.weight`` rows past the
    base vocabulary (the [AUD] rows, only in M2UGen checkpoints) as ``llama.output.aud_rows``.
    Dropped: frozen LLaMA matrices, encoders, MusicGen, optimizer state. Returns statistics.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors: {dst}")
    t0 = time.perf_counter()
    sd, meta_in = read_any_state_dict(src)
    if is_converted(meta_in):
        raise ValueError(f"{src} is already a converted M2UGen file")
    preset = guess_preset(sd)
    cfg = M2UGenConfig.preset(preset) if preset else M2UGenConfig()
    pq = sd.get("prefix_query.weight")
    if pq is None:
        raise ValueError(f"{src}: no prefix_query.weight: not an M2UGen checkpoint")
    legacy = detect_prefix_layout(cfg, pq.shape[0])

    kept: dict[str, torch.Tensor] = {}
    dropped, dropped_bytes = 0, 0
    for k, t in sd.items():
        if is_trained_key(k):
            kept[k] = t
        else:
            dropped += 1
            dropped_bytes += t.numel() * t.element_size()
    out_w = sd.get("llama.output.weight")
    n_aud = cfg.num_gen_audio_tokens
    if out_w is None:
        raise ValueError(f"{src}: no llama.output.weight")
    aud_start = out_w.shape[0] - n_aud
    kept[AUD_ROWS_KEY] = out_w[aud_start:].clone()  # [8, dim], stored dtype
    kept = {k: (v if v.is_contiguous() else v.contiguous()) for k, v in kept.items()}

    dtypes = dict(collections.Counter(str(v.dtype).removeprefix("torch.") for v in kept.values()))
    kept_bytes = sum(v.numel() * v.element_size() for v in kept.values())
    metadata = {
        "format": "pt",
        "format_m2ugen": CONVERTED_FORMAT,
        "preset": preset or "",
        "prefix_layout": {True: "legacy", False: "per-modality", None: "unknown"}[legacy],
        "prefix_rows": str(pq.shape[0]),
        "aud_row_start": str(aud_start),
        "source_name": src.name,
        "source_size": str(src.stat().st_size),
        "source_sha256": _sha256(src, progress) if hash_source else "",
        "dtypes": json.dumps(dtypes, sort_keys=True),
    }
    if progress:
        log.info("writing %d tensors (%.1f MB) to %s", len(kept), kept_bytes / 1e6, dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    save_file(kept, str(tmp), metadata=metadata)
    os.replace(tmp, dst)
    stats = {
        "preset": preset,
        "prefix_layout": metadata["prefix_layout"],
        "kept_tensors": len(kept),
        "kept_bytes": kept_bytes,
        "dropped_tensors": dropped,
        "dropped_bytes": dropped_bytes,
        "dtypes": dtypes,
        "output": str(dst),
        "output_bytes": dst.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if progress:
        log.info("converted %s -> %s: %s", src.name, dst.name, stats)
    return stats


def load_converted_state_dict(model, sd: dict[str, torch.Tensor], meta: dict[str, str], *,
                              release_source: bool = False) -> None:
    """Overlay a converted (trainable-only) state dict on a model whose LLaMA base is loaded.

    Every trained tensor of the model must be in the file, every tensor in the file must exist in
    the model with the same shape; one ValueError lists all problems.
    """
    cfg = model.cfg
    pq = sd.get("prefix_query.weight")
    if pq is not None and pq.dim() == 2:
        legacy = detect_prefix_layout(cfg, pq.shape[0])
        if legacy is not None:
            _set_prefix_layout(model, legacy)
    own = model.state_dict(keep_vars=True)
    wanted = {n for n in own if is_trained_key(to_official(n))}
    hits, unexpected, misshaped = {}, [], []
    for key, t in sd.items():
        if key == AUD_ROWS_KEY:
            continue
        where, name = to_ours(key)
        if where != "" or name not in own:
            unexpected.append(key)
        elif tuple(own[name].shape) != tuple(t.shape):
            misshaped.append(f"{key}: file {_shape(t)} vs model {_shape(own[name])}")
        else:
            hits[name] = t
    missing = [to_official(n) for n in sorted(wanted) if n not in hits]
    aud = sd.get(AUD_ROWS_KEY)
    out_w = own["llama.output.weight"]
    start = int(meta.get("aud_row_start", out_w.shape[0] - (0 if aud is None else aud.shape[0])))
    if aud is None:
        missing.append(AUD_ROWS_KEY)
    elif start + aud.shape[0] != out_w.shape[0] or aud.shape[1] != out_w.shape[1]:
        misshaped.append(f"{AUD_ROWS_KEY}: file {_shape(aud)} at row {start} vs llama.output.weight {_shape(out_w)}")
    if missing or unexpected or misshaped:
        raise _mismatch_error(f"converted weights do not match the model (config {cfg.name!r}):",
                              missing, unexpected, misshaped)
    if out_w.is_meta:
        raise ValueError("load the LLaMA base weights (llama_dir) before a converted checkpoint")
    pages = FilePages(release_source)
    for name, t in hits.items():
        _put(model, name, t, pages)
    with torch.no_grad():
        model.llama.output.weight[start:] = aud.to(out_w.dtype)
    log.info("loaded %d trained tensors + %d [AUD] output rows", len(hits), aud.shape[0])


# ----------------------------------------------------------------------------------------------
# from_pretrained and the weights spec

SPEC_PATH_KEYS = ("checkpoint", "llama_dir", "tokenizer_path", "mert_path", "vit_path", "vivit_path", "decoder_path")
SUBMODEL_PATH_KEYS = ("mert_path", "vit_path", "vivit_path", "decoder_path")
SPEC_KEYS = {"preset", "dtype", "device", "config", *SPEC_PATH_KEYS}


def find_weights() -> str | None:
    """The weights spec to use: ``$M2UGEN_WEIGHTS``, else ``<config dir>/weights.json`` if present."""
    env = os.environ.get("M2UGEN_WEIGHTS")
    if env:
        return env
    p = config_dir() / "weights.json"
    return str(p) if p.is_file() else None


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """A weights spec JSON file; relative paths are made relative to the file's directory."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{p}: a weights spec must be a JSON object")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    for k in SPEC_PATH_KEYS:
        v = spec.get(k)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{p}: {k} must be a string path, got {type(v).__name__}")
        if not v:
            continue
        v = os.path.expanduser(v)
        local = Path(v) if os.path.isabs(v) else (p.parent / v).resolve()
        # sub-model entries may be Hub ids ("owner/name", read from the local HF cache by the holders)
        hub_id = k in SUBMODEL_PATH_KEYS and v.count("/") == 1 and not v.startswith((".", "/")) and not local.exists()
        spec[k] = v if hub_id else str(local)
    return spec


def resolve_source(source: str | os.PathLike) -> dict[str, Any]:
    """Turn ``source`` (spec file, directory, checkpoint.pth, .safetensors) into a spec dict."""
    p = Path(source).expanduser()
    if p.is_dir():
        if (p / "weights.json").is_file():
            return read_spec(p / "weights.json")
        for name in ("checkpoint.pth", "m2ugen.safetensors"):
            if (p / name).is_file():
                return {"checkpoint": str(p / name)}
        found = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.pth"))
        if len(found) == 1:
            return {"checkpoint": str(found[0])}
        raise ValueError(f"{p}: no weights.json, checkpoint.pth or single .safetensors/.pth file inside")
    if not p.is_file():
        raise ValueError(f"weights not found: {p}")
    if p.suffix == ".json":
        return read_spec(p)
    if p.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        return {"checkpoint": str(p)}
    raise ValueError(f"{p}: unknown weights file type (want .json, .pth or .safetensors)")


def from_pretrained(cls, source=None, *, preset=None, llama_dir=None, mert_path=None, vit_path=None,
                    vivit_path=None, decoder_path=None, tokenizer_path=None, device=None, dtype=None):
    """Build ``cls`` (M2UGen) from weights; see the module docstring for the formats.

    ``source``: a weights spec JSON file, a directory with ``weights.json`` (or one checkpoint), an
    official ``checkpoint.pth``, or a converted ``.safetensors``; ``None`` uses ``find_weights()``.
    Keyword arguments override the spec. The model is built on the meta device and the tensors
    assigned, so nothing is allocated twice; tensors whose dtype matches stay memory-mapped.

    ``dtype`` (the LLaMA's; bridges and projector stay fp32 as official): the argument, else the
    spec's ``"dtype"``, else the stored dtype of a full official checkpoint's frozen LLaMA (fp16
    stays fp16), else the preset's (float32). ``device``: the argument, else the spec's, else CPU.
    Sub-models a full official checkpoint holds are built from their known architectures when
    their Hub id is not in the local cache; a converted file needs ``llama_dir`` and the sub-model
    paths (local directories or Hub ids in the local cache).
    """
    t_start = time.perf_counter()
    if source is None:
        source = find_weights()
    spec: dict[str, Any] = resolve_source(source) if source is not None else {}
    overrides = dict(preset=preset, llama_dir=llama_dir, mert_path=mert_path, vit_path=vit_path,
                     vivit_path=vivit_path, decoder_path=decoder_path, tokenizer_path=tokenizer_path, dtype=dtype)
    spec.update({k: v for k, v in overrides.items() if v is not None})
    if not spec.get("checkpoint") and not spec.get("llama_dir"):
        raise ValueError("no weights given: pass a weights spec / checkpoint, set M2UGEN_WEIGHTS, "
                         f"or write {config_dir() / 'weights.json'}")

    sd: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    ckpt = spec.get("checkpoint")
    if ckpt:
        log.info("reading %s", ckpt)
        sd, meta = read_any_state_dict(ckpt)
    converted = is_converted(meta)

    name = spec.get("preset") or (meta.get("preset") or None) or (guess_preset(sd) if sd else None)
    if name is None:
        raise ValueError(f"cannot tell the preset of {ckpt or spec.get('llama_dir')}: "
                         "give preset= (tiny, musicgen-small, musicgen-medium, audioldm2)")
    full = bool(sd) and not converted
    cfg = _config_for(name, spec, sd, full)
    log.info("building %s (LLaMA %s) on the meta device", cfg.name, cfg.dtype)

    if full:
        with torch.device("meta"):
            model = cls.from_config(cfg, device="meta")
        load_reference_state_dict(model, sd, strict=True, release_source=True)
    elif converted:
        if not cfg.llama_dir:
            raise ValueError(f"{ckpt} holds only the trained tensors; give llama_dir (LLaMA-2 base weights)")
        with torch.device("meta"):
            model = cls.from_config(cfg, device="meta")
        load_llama(model, cfg.llama_dir)
        load_converted_state_dict(model, sd, meta, release_source=True)
    else:
        # no M2UGen checkpoint: a fresh model (official init) on the LLaMA-2 base weights
        model = cls.from_config(cfg)
        load_llama(model, cfg.llama_dir)
    _check_materialized(model)
    model.place(device or spec.get("device") or "cpu")
    model.eval()
    log.info("model ready in %.1f s", time.perf_counter() - t_start)
    return model


def _resolvable(path: str | None) -> bool:
    """True when a sub-model path is a local directory or a repo in the local Hugging Face cache."""
    if not path:
        return False
    from m2ugen.encoders import resolve_pretrained_dir

    try:
        resolve_pretrained_dir(path, "sub-model")
        return True
    except (FileNotFoundError, ValueError):
        return False


def _config_for(name: str, spec: dict[str, Any], sd: dict[str, torch.Tensor], full: bool) -> M2UGenConfig:
    """The preset, with the spec's paths/dtype/overrides and what the checkpoint's shapes imply.

    ``full``: ``sd`` is a complete official state dict (sub-model weights and frozen LLaMA inside).
    """
    cfg = M2UGenConfig.preset(name)
    changes: dict[str, Any] = {k: spec[k] for k in ("llama_dir", "tokenizer_path") if spec.get(k)}
    known = offline_config(name)
    for sub in ("mert", "vit", "vivit", "decoder"):
        key = f"{sub}_path"
        if spec.get(key):
            changes[key], changes[f"{sub}_config"] = spec[key], None
        elif full and getattr(known, key) is None and not _resolvable(getattr(cfg, key)):
            # the official checkpoint holds this sub-model's weights: its known architecture suffices
            log.info("%s: %r not available locally; using the checkpoint's weights with the known architecture",
                     sub, getattr(cfg, key))
            changes[key], changes[f"{sub}_config"] = None, getattr(known, f"{sub}_config")
    dtype = spec.get("dtype")
    if dtype is None and full:
        # half-precision frozen LLaMA weights stay half (no fp32 copy of a 13 GB fp16 file)
        wq = sd.get("llama.layers.0.attention.wq.weight")
        if wq is not None and wq.dtype in (torch.float16, torch.bfloat16):
            dtype = wq.dtype
    if dtype is not None:
        changes["dtype"] = str(dtype).removeprefix("torch.")
    changes.update(spec.get("config") or {})
    cfg = cfg.replace(**changes)
    emb = sd.get("llama.tok_embeddings.weight")
    if emb is not None and cfg.vocab_size <= 0:
        cfg = cfg.replace(vocab_size=emb.shape[0])
    pq = sd.get("prefix_query.weight")
    if pq is not None and detect_prefix_layout(cfg, pq.shape[0]) is not None:
        cfg = cfg.replace(legacy_prefix=bool(detect_prefix_layout(cfg, pq.shape[0])))
    if not cfg.is_tiny and not cfg.tokenizer_path:
        cfg = cfg.replace(tokenizer_path=_find_tokenizer(cfg.llama_dir))
    return cfg


def _find_tokenizer(llama_dir: str | None) -> str:
    """The LLaMA-2 ``tokenizer.model``: in llama_dir or its parent (Meta's layout: llama-2/7B + tokenizer.model)."""
    if llama_dir:
        for d in (Path(llama_dir), Path(llama_dir).parent):
            if (d / "tokenizer.model").is_file():
                return str(d)
    raise ValueError("the real model needs the LLaMA-2 tokenizer: set tokenizer_path (a directory with "
                     "tokenizer.model) in the weights spec, or put tokenizer.model next to llama_dir")


def _check_materialized(model) -> None:
    left = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if left:
        raise ValueError(f"weights left unset after loading: {_fmt_list(left)}")
