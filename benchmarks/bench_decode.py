"""Decode speed: our KV-cached loop vs the official whole-sequence recompute, side by side.

A random mid-size M2UGen LLaMA (default dim 768, 8 layers, 12 heads, vocab 32008, rank-16 LoRA,
biases, prefix adapters in the top 6 layers), a 64-token prompt and 256 new tokens, greedy, no
early stop. Prints tokens/s of both and the ratio (target >= 20x), and
whether the two produced the same tokens.

    .venv/bin/python benchmarks/bench_decode.py [--dim 768 --layers 8 --prompt 64 --new 256 --threads 2
                                                 --dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import time

import torch

from m2ugen.config import M2UGenConfig
from m2ugen.generate import generate
from m2ugen.llama import Transformer, build_adapters


class _Tok:
    """Just what ``generate`` needs from a tokenizer (no stop text is used here)."""

    eos_token_id = 2

    def convert_tokens_to_ids(self, token):
        return 13

    def decode(self, ids, skip_special_tokens=False):
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=32008)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="LLaMA weight dtype (the real model keeps its frozen LLaMA in half precision)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = M2UGenConfig(name="bench", dim=args.dim, n_layers=args.layers, n_heads=args.heads, vocab_size=args.vocab,
                       max_seq_len=args.prompt + args.new + 8, lora_rank=16, query_layer=2)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    llama = Transformer(cfg).to(device=args.device, dtype=dtype).eval()
    adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim, device=args.device, dtype=dtype))
    prompt = torch.randint(3, args.vocab, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    n_params = sum(p.numel() for p in llama.parameters())
    print(f"config: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, ffn {cfg.ffn_hidden_dim}, "
          f"vocab {cfg.vocab_size}, {n_params / 1e6:.1f} M params, LoRA r{cfg.lora_rank}, "
          f"{cfg.n_prefix} adapter layers; prompt {args.prompt}, new {args.new}, "
          f"{args.threads} threads, {args.device}, {args.dtype}")

    kw = dict(max_new_tokens=args.new, temperature=0.0, adapters=adapters, stop_text="", stop_on_eos=False)
    tok = _Tok()
    generate(llama, tok, [prompt[:8]], **{**kw, "max_new_tokens": 4})  # warm-up

    results = {}
    for name, recompute in (("kv-cache", False), ("official recompute", True)):
        t0 = time.perf_counter()
        out = generate(llama, tok, [prompt], recompute=recompute, **kw)[0]
        if args.device != "cpu":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        results[name] = (out.tokens, dt)
        print(f"{name:>20}: {len(out.tokens)} tokens in {dt:7.2f} s = {len(out.tokens) / dt:8.1f} tokens/s")

    (fast_tokens, fast_dt), (slow_tokens, slow_dt) = results["kv-cache"], results["official recompute"]
    print(f"{'speed-up':>20}: {slow_dt / fast_dt:.1f}x (target >= 20x)")
    print(f"{'same tokens':>20}: {fast_tokens == slow_tokens}")


if __name__ == "__main__":
    main()
