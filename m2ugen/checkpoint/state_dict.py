"""Loading official-named state dicts into ``M2UGen``: a full official checkpoint (sub-models into
their lazy holders) and the converted trainable-only file overlaid on loaded LLaMA base weights.

Every key is checked first; one ValueError lists all missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from m2ugen.checkpoint.architectures import detect_prefix_layout
from m2ugen.checkpoint.assign import FilePages, fmt_list, put, shape_of
from m2ugen.checkpoint.names import AUD_ROWS_KEY, HOLDER_PREFIXES, is_trained_key, strip_module_prefix, to_official, to_ours
from m2ugen.submodel import legacy_weight_norm_name

log = logging.getLogger("m2ugen.checkpoint")


def _mismatch_error(title: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> ValueError:
    lines = [title]
    if missing:
        lines.append(f"  {len(missing)} missing key(s) (the model has them, the checkpoint does not): "
                     + fmt_list(missing))
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s) (in the checkpoint, unknown to the model): "
                     + fmt_list(unexpected))
    if misshaped:
        lines.append(f"  {len(misshaped)} mis-shaped key(s): " + fmt_list(misshaped))
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


def _follow_prefix_layout(model, sd: dict[str, torch.Tensor]) -> None:
    """Switch the model to the prefix layout that ``sd``'s ``prefix_query.weight`` rows imply (if any)."""
    pq = sd.get("prefix_query.weight")
    if pq is not None and pq.dim() == 2:
        legacy = detect_prefix_layout(model.cfg, pq.shape[0])
        if legacy is not None:
            _set_prefix_layout(model, legacy)


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
    _follow_prefix_layout(model, sd)

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
                misshaped.append(f"{key}: checkpoint {shape_of(t)} vs model {shape_of(own[name])}")
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
                misshaped.append(f"{to_official(name, attr)}: checkpoint {shape_of(t)} vs model {shape_of(expected[name])}")
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
        put(model, name, t, pages)
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


def load_converted_state_dict(model, sd: dict[str, torch.Tensor], meta: dict[str, str], *,
                              release_source: bool = False) -> None:
    """Overlay a converted (trainable-only) state dict on a model whose LLaMA base is loaded.

    Every trained tensor of the model must be in the file, every tensor in the file must exist in
    the model with the same shape; one ValueError lists all problems.
    """
    cfg = model.cfg
    _follow_prefix_layout(model, sd)
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
            misshaped.append(f"{key}: file {shape_of(t)} vs model {shape_of(own[name])}")
        else:
            hits[name] = t
    missing = [to_official(n) for n in sorted(wanted) if n not in hits]
    aud = sd.get(AUD_ROWS_KEY)
    out_w = own["llama.output.weight"]
    start = int(meta.get("aud_row_start", out_w.shape[0] - (0 if aud is None else aud.shape[0])))
    if aud is None:
        missing.append(AUD_ROWS_KEY)
    elif start + aud.shape[0] != out_w.shape[0] or aud.shape[1] != out_w.shape[1]:
        misshaped.append(f"{AUD_ROWS_KEY}: file {shape_of(aud)} at row {start} vs llama.output.weight {shape_of(out_w)}")
    if missing or unexpected or misshaped:
        raise _mismatch_error(f"converted weights do not match the model (config {cfg.name!r}):",
                              missing, unexpected, misshaped)
    if out_w.is_meta:
        raise ValueError("load the LLaMA base weights (llama_dir) before a converted checkpoint")
    pages = FilePages(release_source)
    for name, t in hits.items():
        put(model, name, t, pages)
    with torch.no_grad():
        model.llama.output.weight[start:] = aud.to(out_w.dtype)
    log.info("loaded %d trained tensors + %d [AUD] output rows", len(hits), aud.shape[0])
