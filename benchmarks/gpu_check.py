"""One-GPU check of the real-size model: memory, LLaMA decode speed, MusicGen speed, one whole job.

Random weights at the real sizes (no downloads): LLaMA-2 7B with the M2UGen adapters (bias, rank-16
LoRA, gates, prefix), MERT-v1-330M, ViT-B/16, ViViT-B 16x2, MusicGen-medium (T5-base, EnCodec 32 kHz,
the 1.5B decoder), optionally the 4-band Multi-Band Diffusion; built directly on the device through
the project's own ``musicgen-medium`` preset (``offline_config``: the sub-models' known architectures)
and ``M2UGen.from_config``. The text is the tiny tokenizer's (only the LLaMA's shapes matter here).
Prints ONE table: every figure stands beside its floor (the time to read the weights once at the GPU's
measured copy bandwidth) or its target; each row runs in its own try/except, so a failure is printed
in its row and the table survives.

    python benchmarks/gpu_check.py                          # on the GPU machine (bf16 LLaMA), < 5 min
    python benchmarks/gpu_check.py --preset tiny --device cpu --no-compile   # seconds (tests run this)

Rows: weight bytes per part; peak memory of a 10 s generate job (bf16, then int8 LLaMA) against the
targets (20 GB / 12 GB); 4 staggered generate jobs under continuous batching (``model.engine``) vs serial
vs static batches (jobs/s ratio, target >= 2.5; latency p50 / p99, target p99 <= serial's); LLaMA ``decode_step`` tokens/s at batch 1 and 4, eager and compiled (target
>= 0.7 of the floor; int8 at batch 1); MusicGen guided decode steps/s through
``MusicGenDecoder.generate``; the extra seconds of ``vocoder="mbd"``; seconds of one 10 s
``M2UGen.chat`` generate job end to end. Rows that would start after ``--budget-s`` (270 s) are listed
as skipped; the costly compiled MusicGen and int8 rows come last.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # roofline.py beside this file

from roofline import DTYPES, measure_decode  # noqa: E402

from m2ugen.checkpoint.architectures import offline_config  # noqa: E402
from m2ugen.config import M2UGenConfig  # noqa: E402
from m2ugen.quant import decode_weight_bytes, quantize_llama_int8, weight_bytes  # noqa: E402

GB = 1e9

def real_size_config(preset: str, dtype: str) -> M2UGenConfig:
    """The preset with every sub-model random at its real size (``offline_config``: the Hub repos' known
    architectures, no paths); tiny presets keep their tiny configs. No LLaMA or tokenizer files."""
    if M2UGenConfig.preset(preset).is_tiny:
        cfg = M2UGenConfig.preset(preset)
    else:
        cfg = offline_config(preset)
        if cfg.music_decoder != "musicgen":
            raise ValueError(f"gpu_check times MusicGen decoders; preset {preset!r} uses {cfg.music_decoder}")
    return cfg.replace(dtype=dtype, llama_dir=None, tokenizer_path=None, mert_path=None, vit_path=None,
                       vivit_path=None, decoder_path=None)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device, megabytes: int = 1024) -> float:
    """Bytes/s of a device-to-device copy (read + write counted), median of 10."""
    n = megabytes * 2**20 // 4
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    for _ in range(2):
        b.copy_(a)
    _sync(device)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * a.numel() * a.element_size() / times[len(times) // 2]


class Table:
    """Rows of (what, value, floor or target, fraction, note); ``row`` runs a measurement and keeps its error."""

    def __init__(self, on_progress: Callable[[str], None] | None = None, budget_s: float | None = None):
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.say = on_progress or (lambda msg: None)
        self.budget_s = budget_s
        self.t0 = time.perf_counter()

    def row(self, what: str, fn: Callable[[], tuple]):
        """fn() -> (value str, floor str, fraction float | None, note str); skipped once the budget is spent."""
        if self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s:
            self.rows.append((what, "skipped", "", "", f"the time budget of {self.budget_s:g} s is spent (--budget-s)"))
            return
        self.say(what)
        try:
            value, floor, fraction, note = fn()
            frac = "" if fraction is None else f"{fraction:.2f}"
            self.rows.append((what, value, floor, frac, note))
        except Exception as e:  # the table must survive any one row
            last = traceback.extract_tb(e.__traceback__)[-1]
            self.rows.append((what, "ERROR", "", "", f"{type(e).__name__}: {e} ({Path(last.filename).name}:"
                                                     f"{last.lineno})"[:300]))

    def format(self) -> str:
        head = ("measure", "value", "floor / target", "of floor", "note")
        widths = [max(len(r[i]) for r in self.rows + [head]) for i in range(4)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head[:4], widths)) + "  " + head[4]]
        lines.append("-" * (sum(widths) + 8 + 30))
        for r in self.rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        return "\n".join(lines)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GB:.2f} GB" if n_bytes >= 0.1 * GB else f"{n_bytes / 2**20:.1f} MB"


def _peak(device) -> str:
    if torch.device(device).type != "cuda":
        return "n/a (CPU)"
    return _size(torch.cuda.max_memory_allocated(device))


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def schedules(model, n: int = 4, duration_s: float = 2.0, max_new_tokens: int = 32,
              every_s: float | None = None, sync: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """The same ``n`` generate requests arriving one every ``every_s`` (default: a quarter of one job's
    time, measured by the first serial job) under three schedules of the worker, on this model:
    serial (one job at a time), static (the jobs that have arrived when the model is free run as one
    ``chat_batch``) and continuous (``model.engine``: a job joins at the first step boundary after it
    arrives). -> {schedule: {"jobs_per_s", "p50", "p99" (latency: arrival -> done), "first" (arrival ->
    its first event)}}."""
    from m2ugen.model import ChatRequest

    prompts = ["soft strings", "loud drums", "a jazz trio", "ambient pads", "funky bass", "a folk guitar",
               "an organ chorale", "synth arpeggios"]

    def requests(arrived: list[float], first: dict[int, float], t0: list[float]):
        def on_event(i):
            return lambda ev: first.setdefault(i, time.perf_counter() - t0[0] - arrived[i])
        return [ChatRequest(f"Generate {prompts[i % len(prompts)]}.", want_audio=True, duration_s=duration_s,
                            max_new_tokens=max_new_tokens, temperature=0.6, seed=i, on_event=on_event(i))
                for i in range(n)]

    def summary(done: list[float], arrived: list[float], first: dict[int, float]) -> dict:
        lat = sorted(d - a for d, a in zip(done, arrived))
        return {"jobs_per_s": n / max(done), "p50": lat[len(lat) // 2], "p99": lat[-1],
                "first": sorted(first.values())[len(first) // 2]}

    out: dict[str, dict] = {}
    arrived = [i * (every_s or 0.0) for i in range(n)]
    # serial: in arrival order, one at a time
    first: dict[int, float] = {}
    t0 = [time.perf_counter()]
    reqs = requests(arrived, first, t0)
    done = []
    for i in range(n):
        time.sleep(max(0.0, t0[0] + arrived[i] - time.perf_counter()))
        model.chat_batch([reqs[i]])
        sync()
        done.append(time.perf_counter() - t0[0])
        if i == 0 and every_s is None:  # the stagger: a quarter of one job
            every_s = done[0] / 4
            arrived[:] = [j * every_s for j in range(n)]
    out["serial"] = summary(done, arrived, first)
    arrived = [i * every_s for i in range(n)]
    # static: whatever has arrived when the model is free runs as one batch, to its end
    first, t0 = {}, [time.perf_counter()]
    reqs, done, nxt = requests(arrived, first, t0), [0.0] * n, 0
    while nxt < n:
        time.sleep(max(0.0, t0[0] + arrived[nxt] - time.perf_counter()))
        now = time.perf_counter() - t0[0]
        batch = [i for i in range(nxt, n) if arrived[i] <= now]
        model.chat_batch([reqs[i] for i in batch])
        sync()
        for i in batch:
            done[i] = time.perf_counter() - t0[0]
        nxt = batch[-1] + 1
    out["static"] = summary(done, arrived, first)
    # continuous: an arrived request joins at the next step boundary
    first, t0 = {}, [time.perf_counter()]
    reqs, done, nxt = requests(arrived, first, t0), [0.0] * n, 0
    engine = model.engine(max_rows=n)
    handles: dict[int, int] = {}
    while nxt < n or not engine.idle:
        if engine.idle:
            time.sleep(max(0.0, t0[0] + arrived[nxt] - time.perf_counter()))
        while nxt < n and arrived[nxt] <= time.perf_counter() - t0[0]:
            handles[engine.admit(reqs[nxt])] = nxt
            nxt += 1
        for h, reply in engine.step().items():
            if isinstance(reply, BaseException):
                raise reply
            sync()
            done[handles[h]] = time.perf_counter() - t0[0]
    out["continuous"] = summary(done, arrived, first)
    out["every_s"] = every_s
    return out


def run(preset: str = "musicgen-medium", device: str = "cuda", *, dtype: str | None = None,
        submodels_dtype: str | None = None, compile: bool = True,
        int8: bool = True, mbd: bool = True, chat_seconds: float = 10.0, musicgen_seconds: float = 2.0,
        max_new_tokens: int = 32, iters: int = 10, budget_s: float | None = 270.0,
        on_progress: Callable[[str], None] | None = None) -> Table:
    """Build the model and fill the table (see the module docstring). Rows starting after ``budget_s``
    seconds are listed as skipped; the costly compiled MusicGen and int8 rows come last."""
    from m2ugen.model import M2UGen

    device = str(device)
    dtype = dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32")
    submodels_dtype = submodels_dtype or dtype
    t = Table(on_progress, budget_s)
    cuda = torch.device(device).type == "cuda"
    bw = {}
    t.row("GPU copy bandwidth" if cuda else "copy bandwidth", lambda: (
        f"{bw.setdefault('v', copy_bandwidth(device)) / GB:.0f} GB/s", "", None,
        torch.cuda.get_device_name(device) if cuda else "read + write bytes / time"))
    if "v" not in bw:
        return t
    bandwidth = bw["v"]
    cfg = real_size_config(preset, dtype)
    parts = {}

    def build():
        t0 = time.perf_counter()
        with torch.device(device):  # random init directly on the device: no CPU copy of 7B
            model = M2UGen.from_config(cfg, device=device)
            model.set_submodel_dtype(DTYPES[submodels_dtype])  # as `m2ugen serve --dtype` does
            model.preload("music_encoder", "image_encoder", "video_encoder", "decoder")
        _sync(device)
        parts["model"] = model
        sizes = {"LLaMA": weight_bytes(model.llama),
                 "bridges+projector": weight_bytes(model) - weight_bytes(model.llama),
                 "MERT": weight_bytes(model.music_encoder.model), "ViT": weight_bytes(model.image_encoder.model),
                 "ViViT": weight_bytes(model.video_encoder.model), "MusicGen": weight_bytes(model.decoder.model)}
        total = sum(sizes.values())
        note = ", ".join(f"{k} {_size(v)}" for k, v in sizes.items())
        return _size(total), "", None, f"{time.perf_counter() - t0:.0f} s to build; {note}"

    t.row(f"weights, {preset} (LLaMA {dtype}, sub-models {submodels_dtype}, random)", build)
    model = parts.get("model")
    if model is None:
        return t
    llama = model.llama

    def chat_job(label: str):
        _reset_peak(device)
        t0 = time.perf_counter()
        reply = model.chat("Generate a calm piano melody with soft strings.", duration_s=chat_seconds,
                           want_audio=True, max_new_tokens=max_new_tokens, seed=0)
        _sync(device)
        seconds = time.perf_counter() - t0
        parts[label] = (seconds, _peak(device), reply)
        return seconds

    def job_row():
        seconds = chat_job("job")
        _, peak, reply = parts["job"]
        timing = ", ".join(f"{k} {v:.1f} s" for k, v in reply.timings.items())
        return (f"{seconds:.1f} s", "", None, f"{chat_seconds:g} s of audio, up to {max_new_tokens} text tokens; "
                f"{timing}; audio {None if reply.audio is None else list(reply.audio.shape)}")

    t.row(f"one {chat_seconds:g} s generate job, M2UGen.chat, end to end", job_row)
    t.row(f"peak memory, {chat_seconds:g} s job, LLaMA {dtype}", lambda: (
        parts["job"][1], "<= 20 GB", None, "torch.cuda.max_memory_allocated during the job above"))

    def llama_row(batch: int, compiled: bool):
        def fn():
            wbytes = decode_weight_bytes(llama)
            r = measure_decode(llama, batch, compiled, bandwidth, device=device, iters=iters)
            floor_tps = batch * bandwidth / wbytes
            note = f"step {r['step_ms']:.2f} ms, floor {r['floor_ms']:.3f} ms ({_size(wbytes)} of weights)"
            if compiled:
                note += f"; first call (compile) {r['compile_s']:.0f} s"
            return f"{r['tokens_per_s']:.1f} tok/s", f"{floor_tps:.1f} tok/s (target 0.7)", r["fraction"], note
        return fn

    def llama_rows(label: str, batches=(1, 4), compiled: bool = False):
        for batch in batches:
            t.row(f"LLaMA decode_step {label}, batch {batch}, {'compiled' if compiled else 'eager'}",
                  llama_row(batch, compiled))

    def schedules_row():
        r = schedules(model, n=4, duration_s=musicgen_seconds, max_new_tokens=max_new_tokens,
                      sync=lambda: _sync(device))
        ratio = r["continuous"]["jobs_per_s"] / r["serial"]["jobs_per_s"]
        note = "; ".join(f"{k} {v['jobs_per_s']:.2f} jobs/s, latency p50 {v['p50']:.1f} / p99 {v['p99']:.1f} s, "
                         f"first event {v['first']:.2f} s" for k, v in r.items() if k != "every_s")
        ok = "p99 <= serial's" if r["continuous"]["p99"] <= r["serial"]["p99"] else "p99 ABOVE serial's"
        return (f"x{ratio:.2f} jobs/s", ">= x2.5 serial, p99 <= serial", None,
                f"{ok}; one job every {r['every_s']:.1f} s; {note}")

    t.row(f"continuous batching vs serial vs static, 4 staggered {musicgen_seconds:g} s generate jobs",
          schedules_row)
    llama_rows(dtype)
    if compile:
        llama_rows(dtype, compiled=True)

    # MusicGen through its public generate: count the decoder steps it reports
    dec = model.decoder
    embeds = 0.1 * torch.randn(1, cfg.num_output_tokens, cfg.output_dim, generator=torch.Generator().manual_seed(0))

    def musicgen(vocoder: str):
        steps = []
        _sync(device)
        t0 = time.perf_counter()
        dec.generate(embeds=embeds.to(device), duration_s=musicgen_seconds, guidance_scale=cfg.guidance_scale,
                     seed=0, tokens_per_s=cfg.musicgen_tokens_per_s, vocoder=vocoder,
                     on_progress=lambda f: steps.append(f))
        _sync(device)
        return time.perf_counter() - t0, steps

    def musicgen_row(keep_as: str = "encodec_s"):
        seconds, steps = musicgen("encodec")
        n = dec.num_new_tokens(musicgen_seconds, cfg.musicgen_tokens_per_s)
        parts[keep_as] = seconds
        lm_bytes = weight_bytes(dec.model.decoder)
        floor = bandwidth / lm_bytes
        rate = n / seconds
        return (f"{rate:.1f} steps/s", f"{floor:.1f} steps/s", rate / floor,
                f"{n} guided steps (CFG batch 2, {len(steps)} reported) + EnCodec in {seconds:.1f} s; "
                f"decoder LM {_size(lm_bytes)}")

    t.row(f"MusicGen decode, {musicgen_seconds:g} s, MusicGenDecoder.generate", musicgen_row)

    def compiled_musicgen_row():
        dec.compile = True
        try:
            musicgen("encodec")  # the first run compiles
            return musicgen_row("compiled_s")
        finally:
            dec.compile = False

    def mbd_row():
        if not cfg.is_tiny:  # the 4 real-size band UNets (random), not the tiny preset the random decoder picks
            from m2ugen.mbd import MBDConfig, MultiBandDiffusion

            codec_dim = dec._hf_config().audio_encoder.codebook_dim
            real = MultiBandDiffusion.random(MBDConfig.preset("musicgen-32khz", codec_dim=codec_dim))
            for band in real.bands:
                band.model.to(dec.dtype)  # as mbd_for_decoder places them
            dec._mbd = real.to(device)
        seconds, _ = musicgen("mbd")
        extra = seconds - parts["encodec_s"]
        return (f"+{extra:.1f} s", "", None, f"{musicgen_seconds:g} s of audio: {seconds:.1f} s with MBD vs "
                f"{parts['encodec_s']:.1f} s with EnCodec; MBD {_size(weight_bytes(dec.mbd))}")

    if mbd:
        t.row(f"vocoder='mbd' extra cost, {musicgen_seconds:g} s", mbd_row)

    if int8:
        def quantize():
            before = weight_bytes(llama)
            quantize_llama_int8(llama)
            _reset_peak(device)
            return (_size(weight_bytes(llama)), "", None,
                    f"LLaMA weights, from {_size(before)} ({dtype}): {before / weight_bytes(llama):.2f}x fewer bytes")

        def int8_job():
            seconds = chat_job("job8")
            return parts["job8"][1], "<= 12 GB", None, f"the {chat_seconds:g} s job again: {seconds:.1f} s"

        t.row("int8 weight-only LLaMA (torchao)", quantize)
        t.row(f"peak memory, {chat_seconds:g} s job, int8 LLaMA", int8_job)
        llama_rows("int8", batches=(1,))
    if compile and hasattr(dec, "compile"):
        t.row(f"MusicGen decode, {musicgen_seconds:g} s, compiled (decoder.compile = True)", compiled_musicgen_row)
    if compile and int8:
        llama_rows("int8", batches=(1,), compiled=True)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="musicgen-medium")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="LLaMA dtype (default bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--submodels-dtype", default=None, choices=sorted(DTYPES),
                    help="dtype of MERT/ViT/ViViT/MusicGen (default: the LLaMA's, as `m2ugen serve --dtype`)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--no-mbd", action="store_true")
    ap.add_argument("--chat-seconds", type=float, default=10.0)
    ap.add_argument("--musicgen-seconds", type=float, default=2.0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=270.0,
                    help="rows that would start later are listed as skipped (0: no budget)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = run(args.preset, args.device, dtype=args.dtype, submodels_dtype=args.submodels_dtype,
                compile=not args.no_compile, int8=not args.no_int8,
                mbd=not args.no_mbd, chat_seconds=args.chat_seconds, musicgen_seconds=args.musicgen_seconds,
                max_new_tokens=args.max_new_tokens, iters=args.iters, budget_s=args.budget_s or None,
                on_progress=lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True))
    print(f"gpu_check: preset {args.preset}, device {args.device}, {time.perf_counter() - t0:.0f} s; "
          f"floor = weight bytes / copy bandwidth ('of floor' = floor time / measured time; 1.0 = roofline)")
    print(table.format())
    return table


if __name__ == "__main__":
    main()
