"""LLaMA-2 base weights (the frozen LLM) in Meta format (``params.json`` + ``consolidated.*.pth``,
tensor-parallel shards joined) or Hugging Face format (``config.json`` + weights, renamed and
un-permuted), into ``model.llama`` or a bare ``Transformer``."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from m2ugen.checkpoint.assign import FilePages, fmt_list, put, resolve
from m2ugen.checkpoint.files import read_safetensors

log = logging.getLogger("m2ugen.checkpoint")

# official key_to_dim: how tensor-parallel shards of each weight are concatenated
SHARD_CAT_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": -1, "w2": -1, "tok_embeddings": 1}


def _llama_of(model) -> nn.Module:
    return model.llama if hasattr(model, "llama") else model


def is_base_param(name: str) -> bool:
    """Frozen LLaMA weights that the base checkpoint provides (not gate / LoRA / bias)."""
    return not any(s in name for s in ("gate", "lora", "bias"))


@torch.no_grad()
def _put_vocab_rows(llama: nn.Module, name: str, base: torch.Tensor, pages: FilePages) -> None:
    """tok_embeddings / output with the base vocabulary's rows; the extra [AUD] rows as official:
    embeddings := 1.0, output rows keep their value (nn.Linear init when the model is on meta)."""
    mod, attr = resolve(llama, name)
    cur = getattr(mod, attr)
    n_base, dim = base.shape
    if cur.shape[1] != dim or cur.shape[0] < n_base:
        raise ValueError(f"{name}: base weights {list(base.shape)} do not fit the model's {list(cur.shape)}")
    if cur.shape[0] == n_base:
        put(llama, name, base, pages)
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
        put(llama, name, full)


def _load_llama_tensors(model, get, available: set[str], n_base_vocab: int | None, source: str) -> None:
    """Check and put the base LLaMA tensors ``get(name)`` (Meta names) read from files we mapped."""
    llama = _llama_of(model)
    cfg = llama.cfg
    names = [n for n, _ in llama.named_parameters() if is_base_param(n)]
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{source}: LLaMA weights missing: {fmt_list(missing)}")
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
        raise ValueError(f"{source}: LLaMA weights do not fit the config: {fmt_list(misshaped)}")
    pages = FilePages()
    for n, t in tensors.items():
        if n in ("tok_embeddings.weight", "output.weight"):
            _put_vocab_rows(llama, n, t, pages)
        else:
            put(llama, n, t, pages)
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
        if kind in SHARD_CAT_DIM:
            return torch.cat([sd[name] for sd in sds], dim=SHARD_CAT_DIM[kind])
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
