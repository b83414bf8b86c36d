"""The whole M2UGen-MusicGen-small at its real dimensions on CPU, random weights: does it fit?

LLaMA-2 7B with the M2UGen adapters (4096 wide, 32 layers, bias + rank-16 LoRA, gates, the 18-row
prefix into the top layers), the three bridges and the projector (fp32, as official), MERT-v1-330M
(25 hidden states x 1024), ViT-B/16, ViViT-B 16x2 and MusicGen-small (T5-base, EnCodec 32 kHz, the
300M decoder) -- built through ``M2UGen.from_config`` on the ``offline_config`` architectures, each
tensor made once in its final dtype. Then one ask over 3 s of audio (4 new tokens) and one 1 s
generate. Each variant runs in its own process so that its peak RSS (``VmHWM``) is its own:

- ``bf16``: LLaMA and sub-models in bfloat16; target peak RSS <= 1.1 x the weight bytes;
- ``int8``: the LLaMA built block by block with int8 weight-only projections (torchao) and the
  sub-models in bfloat16; target peak RSS <= 12 GB.

Also a meta-device shape check of what only the real sizes reach (no memory): MusicGen-medium's 48
decoder layers, MERT-330M's 25 x 1024 states into the 4096-wide bridge, the adapter placement.

    nice -n 10 python benchmarks/realsize_cpu.py                      # ~16 GB free RAM needed; minutes
    python benchmarks/realsize_cpu.py --llama-layers 2 --variants bf16  # a quick scaled-down run

Prints one table: per stage its seconds, the RSS after it and the peak so far, beside the weight bytes;
with ``--llama-layers`` also the peak projected to the full depth (each missing block adds its weights
and its KV cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

GB = 1e9
TARGET_RATIO = 1.1  # bf16: peak RSS <= 1.1 x weight bytes
INT8_TARGET_GB = 12.0


def _config(preset: str, llama_layers: int | None):
    from m2ugen.checkpoint.architectures import offline_config

    cfg = offline_config(preset).replace(dtype="bfloat16", llama_dir=None, tokenizer_path=None, gate_init="random")
    if llama_layers:
        cfg = cfg.replace(n_layers=llama_layers, query_layer=min(cfg.query_layer, max(1, llama_layers // 3)))
    return cfg


def child(variant: str, preset: str, llama_layers: int | None) -> dict:
    """One variant in this process: build, ask, generate; -> rows of (stage, seconds, rss, peak)."""
    import logging

    import numpy as np
    import torch

    from m2ugen.lean import peak_rss_bytes, rss_bytes
    from m2ugen.model import M2UGen
    from m2ugen.quant import weight_bytes

    logging.getLogger("m2ugen").setLevel(logging.ERROR)  # the tiny-tokenizer warning: only shapes matter here
    if variant != "int8":
        from m2ugen.quant import defer_torchao

        defer_torchao()
    torch.manual_seed(0)
    cfg = _config(preset, llama_layers)
    rows = []

    def stage(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        rows.append({"stage": name, "seconds": time.perf_counter() - t0, "rss": rss_bytes(),
                     "peak": peak_rss_bytes(), "note": out if isinstance(out, str) else ""})
        print(f"[{variant}] {name}: {rows[-1]['seconds']:.1f} s, peak RSS {rows[-1]['peak'] / GB:.2f} GB",
              file=sys.stderr, flush=True)
        return out

    rows.append({"stage": "python + torch + transformers imported", "seconds": 0.0, "rss": rss_bytes(),
                 "peak": peak_rss_bytes(), "note": ""})
    holder = {}

    def build():
        holder["m"] = M2UGen.from_config(cfg, device="cpu", int8=(variant == "int8"))
        holder["m"].set_submodel_dtype(torch.bfloat16)
        return f"LLaMA {weight_bytes(holder['m'].llama) / GB:.2f} GB"

    stage(f"LLaMA ({'int8 blocks' if variant == 'int8' else 'bf16'}) + bridges + projector", build)
    model = holder["m"]
    for part in ("music_encoder", "image_encoder", "video_encoder", "decoder"):
        stage(f"{part} (bf16)", lambda p=part: (model.preload(p),
                                                f"{weight_bytes(getattr(model, p).model) / GB:.2f} GB")[1])
    sizes = {"LLaMA": weight_bytes(model.llama), "bridges+projector": weight_bytes(model) - weight_bytes(model.llama)}
    sizes.update({h.kind: weight_bytes(h.model) for h in model.holders()})
    total = sum(sizes.values())

    rng = np.random.default_rng(0)
    sr = cfg.audio_sample_rate
    t = np.arange(3 * sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)

    def ask():
        r = model.chat("Describe this music.", audio=(wave, sr), max_new_tokens=4, want_audio=False, seed=0)
        return f"{len(r.raw_text)} chars of text"

    def generate():
        r = model.chat("Generate a calm piano melody.", duration_s=1.0, max_new_tokens=4, want_audio=True, seed=0)
        return f"audio {list(r.audio.shape)} at {r.sample_rate} Hz"

    stage("ask over 3 s of audio, 4 new tokens", ask)
    stage("generate 1 s (4 text tokens + MusicGen)", generate)
    # one LLaMA block's weights and KV cache as the ask used it: what each further layer adds
    kv = model.llama._kv_store[0] if model.llama._kv_store else None
    layer = weight_bytes(model.llama.layers[0]) + (kv.k.nbytes + kv.v.nbytes if kv is not None else 0)
    return {"variant": variant, "rows": rows, "sizes": sizes, "weights": total, "n_layers": cfg.n_layers,
            "layer_bytes": layer, "layer_weight_bytes": weight_bytes(model.llama.layers[0]),
            "full_layers": _config(preset, None).n_layers}


def shape_checks(preset_medium: str = "musicgen-medium") -> list[str]:
    """What only real sizes reach, built on the meta device (no memory): -> lines, each 'ok ...' or 'FAIL ...'."""
    import torch

    from m2ugen.checkpoint.architectures import offline_config
    from m2ugen.model import M2UGen

    out = []
    cfg = offline_config(preset_medium).replace(dtype="bfloat16", tokenizer_path=None)
    with torch.device("meta"):
        model = M2UGen(cfg)
    layers = model.decoder._hf_config().decoder.num_hidden_layers
    dec = model.decoder.expected_shapes()
    n_dec = len({m.group(1) for k in dec if (m := re.match(r"decoder\.model\.decoder\.layers\.(\d+)\.", k))})
    out.append(("ok" if layers == n_dec == 48 else "FAIL") + f" MusicGen-medium decoder: {n_dec} layers "
               f"(config {layers}), {sum(v.numel() for v in dec.values()) / 1e9:.2f} B parameters")
    mert = model.music_encoder._hf_config()
    out.append(("ok" if (mert.num_hidden_layers + 1, mert.hidden_size) == (cfg.mert_layers, cfg.mert_dim) == (25, 1024)
                else "FAIL") + f" MERT-330M: {mert.num_hidden_layers + 1} hidden states x {mert.hidden_size} -> "
               f"bridge agg {list(model.mu_mert.agg.weight.shape)}, proj {list(model.mu_mert.proj.weight.shape)}")
    feats = torch.empty(1, 1, cfg.dim, device="meta")
    adapters = model.adapters(feats, feats, feats)
    placed = [i for i, a in enumerate(adapters) if a is not None]
    want = list(range(cfg.n_layers - 3 * cfg.query_layer, cfg.n_layers))
    out.append(("ok" if placed == want else "FAIL") + f" adapters of a {cfg.dim}-wide, {cfg.n_layers}-layer LLaMA "
               f"placed in layers {placed[0]}..{placed[-1]} ({len(placed)} layers, prefix_query "
               f"{list(model.prefix_query.weight.shape)})")
    return out


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return float("inf")


def _gb(x: float) -> str:
    return f"{x / GB:6.2f} GB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="musicgen-small")
    ap.add_argument("--variants", default="bf16,int8", help="comma-separated: bf16, int8")
    ap.add_argument("--llama-layers", type=int, default=None, help="fewer LLaMA layers (a scaled-down dry run)")
    ap.add_argument("--need-gb", type=float, default=None,
                    help="start only when this much memory is available (MemAvailable; default 19.5 at full size)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.need_gb is None and not args.llama_layers:
        args.need_gb = 19.5
    if args.child:
        print(json.dumps(child(args.child, args.preset, args.llama_layers)))
        return 0
    if args.need_gb and _available_gb() < args.need_gb:
        print(f"realsize_cpu: only {_available_gb():.1f} GB of memory available, {args.need_gb:g} GB needed "
              "(--need-gb): not started, so that nothing else is killed for memory")
        return 3

    ok = True
    print(f"realsize_cpu: {args.preset} at real dimensions on CPU, random weights"
          + (f" (LLaMA cut to {args.llama_layers} layers)" if args.llama_layers else ""))
    for line in shape_checks():
        ok &= line.startswith("ok")
        print("  shapes (meta): " + line)
    for variant in args.variants.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--preset", args.preset]
        if args.llama_layers:
            cmd += ["--llama-layers", str(args.llama_layers)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # progress lines go to stderr
        if proc.returncode != 0:
            ok = False
            print(f"\n[{variant}] FAILED (exit {proc.returncode}; -9: killed, e.g. out of memory)")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n[{variant}] weights {_gb(res['weights']).strip()}: "
              + ", ".join(f"{k} {v / GB:.2f}" for k, v in res["sizes"].items()))
        print(f"  {'stage':<52} {'seconds':>8} {'RSS':>10} {'peak RSS':>10}  note")
        for r in res["rows"]:
            print(f"  {r['stage']:<52} {r['seconds']:8.1f} {_gb(r['rss'])} {_gb(r['peak'])}  {r['note']}")
        peak = max(r["peak"] for r in res["rows"])
        ratio = peak / res["weights"]
        if variant == "int8":
            met = peak / GB <= INT8_TARGET_GB
            target = f"<= {INT8_TARGET_GB:g} GB"
        else:
            met = ratio <= TARGET_RATIO
            target = f"<= {TARGET_RATIO:g} x weights"
        ok &= met or bool(args.llama_layers)
        print(f"  peak RSS {_gb(peak).strip()} = {ratio:.3f} x weight bytes ({target}): "
              f"{'met' if met else 'NOT met'}")
        more = res["full_layers"] - res["n_layers"]
        if more > 0:  # a cut LLaMA: each missing block adds its weights and its KV cache, nothing else grows
            w_full = res["weights"] + more * res["layer_weight_bytes"]
            p_full = peak + more * res["layer_bytes"]
            print(f"  projected to {res['full_layers']} layers (+{more} x {res['layer_bytes'] / 1e6:.0f} MB per block): "
                  f"weights {_gb(w_full).strip()}, peak RSS ~{_gb(p_full).strip()} = {p_full / w_full:.3f} x weight bytes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
