"""Cost of the source-aware edit modes vs the official ``text`` mode, side by side in one run.

For each size (``tiny``: the tiny preset's decoders; ``mid``: a random MusicGen with a 12 x 512
decoder, the real 32 kHz EnCodec and a 2-layer T5) the same decoder call runs, interleaved round by
round so that every mode sees the same machine load:

- ``text``            MusicGen, reply text only (the official inference);
- ``continue``        MusicGen continuing the source (EnCodec encoding + prompt prefill), new material;
- ``with_source``     the same, returning source + continuation;
- ``melody text``     MusicGen-Melody of the same size, text only (null chroma);
- ``melody``          MusicGen-Melody with the source's chroma (chroma computation included).

Prints the median seconds per call and the ratio to the matching text baseline (``continue`` /
``with_source`` vs ``text``; ``melody`` vs ``melody text``), all with guidance 3.0 and a fixed seed.

    .venv/bin/python benchmarks/bench_modes.py [--sizes tiny,mid --rounds 3 --threads 2
                                                --duration 1.0 --source 4.0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from m2ugen import chroma
from m2ugen.checkpoint import ENCODEC_32KHZ
from m2ugen.config import M2UGenConfig
from m2ugen.decoders import build_decoder


def mid_config() -> M2UGenConfig:
    """The tiny preset with a mid-size MusicGen: decoder 12 layers x 512 (8 heads), real EnCodec 32 kHz."""
    cfg = M2UGenConfig.preset("tiny")
    dec = dict(
        text_encoder=dict(vocab_size=100, d_model=256, d_ff=1024, num_layers=2, num_heads=4, d_kv=64),
        audio_encoder=dict(ENCODEC_32KHZ),
        decoder=dict(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=12, ffn_dim=2048,
                     num_attention_heads=8, hidden_size=512, num_codebooks=4, pad_token_id=2048,
                     bos_token_id=2048, decoder_start_token_id=2048, audio_channels=1),
    )
    return cfg.replace(name="mid", decoder_config=dec, output_dim=256)


def configs(size: str) -> tuple[M2UGenConfig, M2UGenConfig]:
    """(MusicGen config, MusicGen-Melody config of the same size)."""
    base = M2UGenConfig.preset("tiny") if size == "tiny" else mid_config()
    melody = base.replace(name=f"{size}-melody", music_decoder="musicgen-melody",
                          decoder_config=dict(base.decoder_config, chroma_length=235, num_chroma=12))
    return base, melody


def bench(size: str, rounds: int, duration: float, source_s: float) -> None:
    cfg, mcfg = configs(size)
    musicgen, melody = build_decoder(cfg), build_decoder(mcfg)
    musicgen.load()
    melody.load()
    sr = musicgen.sample_rate
    t = np.arange(int(source_s * sr)) / sr
    source = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    common = dict(text="a calm piano melody", duration_s=duration, guidance_scale=3.0, seed=0)
    calls = {
        "text": lambda: musicgen.generate(**common),
        "continue": lambda: musicgen.generate(**common, prompt=source),
        "with_source": lambda: musicgen.generate(**common, prompt=source, with_prompt=True),
        "melody text": lambda: melody.generate(**common),
        "melody": lambda: melody.generate(**common, chroma=chroma.chroma_from_audio(source, sr)),
    }
    for fn in calls.values():  # warm-up (first-call allocations, tokenizer)
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    t0 = time.perf_counter()
    chroma.chroma_from_audio(source, sr)
    chroma_s = time.perf_counter() - t0
    print(f"\n== {size}: decoder {cfg.decoder_config['decoder']['num_hidden_layers']} x "
          f"{cfg.decoder_config['decoder']['hidden_size']}, {duration:g} s new, {source_s:g} s source "
          f"(prompt {musicgen.prompt_samples(len(source)) / sr:g} s), {rounds} rounds, median s")
    base = {"text": "text", "continue": "text", "with_source": "text", "melody text": "melody text",
            "melody": "melody text"}
    for name, s in med.items():
        print(f"  {name:12s} {s:8.3f} s   x{s / med[base[name]]:.2f} vs {base[name]}")
    print(f"  (chroma of the source alone: {chroma_s * 1e3:.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds of new material")
    ap.add_argument("--source", type=float, default=4.0, help="seconds of source audio")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes.split(","):
        if size not in ("tiny", "mid"):
            raise SystemExit(f"unknown size {size!r}; choose tiny, mid")
        bench(size, args.rounds, args.duration, args.source)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
