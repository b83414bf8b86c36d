"""Peak RSS while loading a mid-size M2UGen checkpoint vs the bytes of the loaded weights.

Writes an official-format ``checkpoint.pth`` (fp16 frozen LLaMA, fp32 trained tensors and bridges,
``module.`` prefixes, optimizer state, pickled ``args``) for a mid-size config into a temp dir, then
measures each loading path in a fresh subprocess: peak RSS minus the RSS after imports and a tiny
warm-up model (VmHWM, the kernel's ru_maxrss of this address space, reset after the imports), right after
loading and after touching every weight (memory-mapped pages count once read).

    .venv/bin/python benchmarks/bench_load_memory.py [--dim 2048 --layers 8] [--keep DIR]

Target: peak / loaded bytes <= 1.25 for the default load (half-precision weights stay half).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mid_overrides(dim: int, layers: int) -> dict:
    """Changes to the tiny preset: a mid-size LLaMA (real vocabulary width), tiny sub-models/tokenizer."""
    return dict(dim=dim, n_layers=layers, n_heads=dim // 128, vocab_size=32008, multiple_of=256, lora_rank=16,
                query_layer=2, legacy_prefix_layers=7)


def mid_config(dim: int, layers: int):
    from m2ugen.config import M2UGenConfig

    return M2UGenConfig.preset("tiny").replace(**mid_overrides(dim, layers))


def write_checkpoint(path: Path, dim: int, layers: int) -> dict:
    """An official-format checkpoint.pth for the mid-size config, written tensor by tensor."""
    import torch

    from m2ugen import checkpoint as ck
    from m2ugen.model import M2UGen

    cfg = mid_config(dim, layers)
    with torch.device("meta"):
        meta = M2UGen.from_config(cfg, device="meta")
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, t in meta.state_dict().items():
        official = ck.to_official(name)
        frozen = official.startswith("llama.") and not ck.is_trained_key(official)
        dtype = torch.float16 if frozen or official.endswith(".attention.gate") else torch.float32
        sd["module." + official] = (torch.randn(t.shape, generator=gen) * 0.02).to(dtype)
    for prefix, holder in ck.HOLDER_PREFIXES.items():
        for name, shape in getattr(meta, holder).expected_shapes().items():
            sd["module." + prefix + name] = torch.randn(tuple(shape), generator=gen) * 0.02
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 1,
                "scaler": {"scale": 65536.0}, "args": argparse.Namespace(music_decoder="musicgen")}, path)
    # Meta-format base LLaMA for the converted path (vocabulary without the 8 [AUD] rows)
    llama_dir = path.parent / "llama"
    llama_dir.mkdir(exist_ok=True)
    base = {k.removeprefix("module.llama."): v for k, v in sd.items()
            if k.startswith("module.llama.") and ck.is_base_param(k.removeprefix("module.llama."))}
    base["tok_embeddings.weight"] = base["tok_embeddings.weight"][:32000].half().clone()
    base["output.weight"] = base["output.weight"][:32000].clone()
    torch.save(base, llama_dir / "consolidated.00.pth")
    (llama_dir / "params.json").write_text(json.dumps(
        {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "multiple_of": cfg.multiple_of,
         "norm_eps": cfg.norm_eps, "vocab_size": 32000}))
    return {"checkpoint_bytes": path.stat().st_size}


CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from m2ugen.model import M2UGen
from m2ugen import checkpoint as ck

def status(field):  # bytes, from /proc/self/status (kB)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

# warm-up: import everything loading touches (transformers model classes, tokenizers, safetensors)
from m2ugen.config import M2UGenConfig
import safetensors.torch
warm = M2UGen.from_config(M2UGenConfig.preset("tiny"))
for h in (warm.music_encoder, warm.image_encoder, warm.video_encoder, warm.decoder):
    h.expected_shapes()
del warm, h
import gc
gc.collect()

# ru_maxrss survives fork+exec (it starts from the parent's RSS), so this process's own peak is
# read from VmHWM, reset after the imports (clear_refs 5), minus the RSS at that point.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")

def peak():
    return status("VmHWM")

t0 = time.perf_counter()
model = M2UGen.from_pretrained(sys.argv[2])
t_load = time.perf_counter() - t0
after_load = peak() - base
loaded = sum(t.numel() * t.element_size() for t in model.state_dict().values())
with torch.no_grad():  # read every weight once (in 1 M-element chunks): memory-mapped pages become resident
    s = 0.0
    for t in model.state_dict().values():
        for chunk in t.reshape(-1).split(1 << 20):
            s += float(chunk.sum(dtype=torch.float32))
after_touch = peak() - base
ids = torch.randint(0, 32000, (1, 16))
model.next_token_logits(ids)
print(json.dumps({"loaded_bytes": loaded, "peak_after_load": after_load, "peak_after_touch": after_touch,
                  "load_s": t_load, "baseline_rss": base}))
"""


def measure(spec: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(spec)],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    d = Path(tmp.name) if tmp else args.keep
    d.mkdir(parents=True, exist_ok=True)
    ckpt = d / "checkpoint.pth"
    t0 = time.perf_counter()
    if args.keep is not None and ckpt.is_file() and (d / "llama" / "params.json").is_file():
        info = {"checkpoint_bytes": ckpt.stat().st_size}  # reuse the files of an earlier --keep run
    else:
        info = write_checkpoint(ckpt, args.dim, args.layers)
    print(f"mid-size config: dim {args.dim}, {args.layers} layers, vocab 32008; checkpoint.pth "
          f"{info['checkpoint_bytes'] / 2**30:.2f} GiB (written in {time.perf_counter() - t0:.0f} s)")

    from m2ugen import checkpoint as ck

    conv = d / "m2ugen.safetensors"
    stats = ck.convert_checkpoint(ckpt, conv, progress=False)
    print(f"convert: kept {stats['kept_tensors']} tensors {stats['kept_bytes'] / 2**20:.0f} MiB, dropped "
          f"{stats['dropped_tensors']} ({stats['dropped_bytes'] / 2**20:.0f} MiB) in {stats['seconds']:.1f} s")

    over = mid_overrides(args.dim, args.layers)
    runs = [
        ("checkpoint.pth, default dtype (fp16 LLaMA kept)", {"checkpoint": "checkpoint.pth"}),
        ("checkpoint.pth, dtype=float32 (fp16 -> fp32 cast)", {"checkpoint": "checkpoint.pth", "dtype": "float32"}),
        ("converted .safetensors + Meta LLaMA dir (fp16)",
         {"checkpoint": "m2ugen.safetensors", "llama_dir": "llama", "dtype": "float16"}),
    ]
    print(f"{'path':52s} {'loaded':>9s} {'peak@load':>10s} {'peak@touch':>11s} {'ratio':>6s} {'load s':>7s}")
    for i, (label, spec) in enumerate(runs):
        spec_path = d / f"weights{i}.json"
        spec_path.write_text(json.dumps({"preset": "tiny", "config": over, **spec}))
        r = measure(spec_path)
        ratio = r["peak_after_touch"] / r["loaded_bytes"]
        print(f"{label:52s} {r['loaded_bytes'] / 2**20:8.0f}M {r['peak_after_load'] / 2**20:9.0f}M "
              f"{r['peak_after_touch'] / 2**20:10.0f}M {ratio:6.2f} {r['load_s']:7.1f}")
    print("ratio = peak RSS above the post-import baseline, after touching every weight / bytes of the loaded "
          "weights (target <= 1.25 for the default load)")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
