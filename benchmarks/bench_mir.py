"""Key, tempo, beats, meter and notes on real rendered music, scored with mir_eval, beside librosa's defaults.

The set (``benchmarks/mir_set.py``): music21 corpus excerpts (about 25 s) rendered through FluidSynth
with the FluidR3 GM soundfont, 60-160 BPM, 3/4 and 4/4, half with a GM drum track, plus the top line
of some of them alone for transcription. ``--split dev --items 72`` (53 excerpts: Bach, Mozart,
Monteverdi, Scottish airs on organ, strings, choir, electric piano, harp, pizzicato strings, mallets;
flute, violin, voice) is for tuning; ``--split heldout`` (Haydn, Beethoven, the Schumanns,
Schubert, Handel, Corelli, C.P.E. Bach, Chopin, ... on piano, guitar, woodwinds, brass, harpsichord;
clarinet, oboe, trumpet, piano) is what is reported. Renders are cached (``M2UGEN_BENCH_CACHE`` or the
user cache dir); the first run parses and renders for a few minutes.

Metrics (mir_eval 0.8): key ``mir_eval.key.weighted_score`` (MIREX: 1 exact, 0.5 fifth, 0.3 relative,
0.2 parallel) and exact; tempo Acc1 (within 4 % of the set tempo) and Acc2 (also at 2x, 3x, 1/2, 1/3),
computed here; key "called sure" (confidence at least ``KEY_UNSURE``: the prompt line has no
"(unsure)") and exact among those; beat and downbeat F-measure ``mir_eval.beat.f_measure`` (70 ms, first 5 s trimmed as
mir_eval.beat.evaluate does); meter right (beats per bar = the time signature's numerator) and
answering; notes ``mir_eval.transcription.precision_recall_f1_overlap`` at 50 ms onset tolerance,
without offsets and with offsets (20 % or 50 ms). No answer scores 0. Speed: wall-clock seconds per
minute of stereo 44.1 kHz audio, each method on the same items in the same run (process CPU seconds in
brackets). The librosa column: ``librosa.beat.beat_track`` defaults (tempo, beats), a key from
``librosa.feature.chroma_cqt`` averaged and correlated with the Krumhansl-Kessler profiles, and
``librosa.pyin`` defaults with notes as runs of one rounded pitch (no meter, no downbeats).

    .venv/bin/python benchmarks/bench_mir.py --split heldout [--items 36 --melodies 12 --threads 2]
                                             [--room 1.4 -6: every item in a reverberant room first]
                                             [--rubato 0.08: a swaying tempo] [--noise 20: pink noise 20 dB under]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("dev", "heldout", "train", "train2"), default="heldout")
    ap.add_argument("--items", type=int, default=36, help="mixed items (half with drums)")
    ap.add_argument("--melodies", type=int, default=12, help="top lines rendered alone, for transcription")
    ap.add_argument("--threads", type=int, default=2, help="BLAS/numba threads (the target machine has 2 cores)")
    ap.add_argument("--manifest-version", type=int, default=None,
                    help="read an older cached manifest of the split (see mir_set.load_set)")
    ap.add_argument("--rebuild", action="store_true", help="parse the corpus again (renders stay cached)")
    ap.add_argument("--no-baseline", action="store_true", help="only this project's column (faster tuning)")
    ap.add_argument("--verbose", action="store_true", help="one line per item")
    ap.add_argument("--notes-only", action="store_true", help="only the melodies (transcription)")
    ap.add_argument("--rubato", type=float, default=0.0, metavar="DEPTH",
                    help="play every item with a swaying tempo (mir_set.with_rubato: +-DEPTH, e.g. 0.08, over 8 s "
                         "periods), rendered into the split's cache beside the steady renders")
    ap.add_argument("--room", type=float, nargs=2, metavar=("RT60_S", "DR_DB"), default=None,
                    help="play every item in a reverberant room first (mir_set.in_room): reverberation time and "
                         "direct-to-reverberant ratio, e.g. 1.4 -6 (a hall, mid distance)")
    ap.add_argument("--noise", type=float, default=None, metavar="SNR_DB",
                    help="add pink noise this far under each item's power (mir_set.with_noise), after any room, e.g. 20")
    ap.add_argument("--project-tempo", action="store_true",
                    help="this project hears each item's own tempo as the DAW project's (context.bpm: a user whose "
                         "project is set to the music's tempo); it settles only levels the sound leaves open")
    return ap.parse_args()


# ---------------------------------------------------------------------------------------------- librosa defaults


KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def librosa_analysis(y: np.ndarray, sr: int) -> dict:
    import librosa

    mono = librosa.to_mono(y)
    tempo, beats = librosa.beat.beat_track(y=mono, sr=sr, units="time")
    chroma = librosa.feature.chroma_cqt(y=mono, sr=sr).mean(axis=1)
    r = [np.corrcoef(chroma, np.roll(p, k))[0, 1] for p in (KK_MAJOR, KK_MINOR) for k in range(12)]
    best = int(np.argmax(r))
    from mir_set import key_name

    return {"bpm": float(np.atleast_1d(tempo)[0]), "beats": np.asarray(beats, float), "key": key_name(best % 12, "minor" if best >= 12 else "major")}


def librosa_notes(y: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    mono = librosa.to_mono(y)
    f0, voiced, _ = librosa.pyin(mono, fmin=librosa.note_to_hz("C2"), fmax=librosa.note_to_hz("C7"), sr=sr)
    hop = 512  # pyin default frame_length 2048 -> hop 512
    midi = np.where(voiced, np.round(librosa.hz_to_midi(np.where(voiced, f0, 1.0))), -1)
    notes, start = [], 0
    for i in range(1, midi.size + 1):
        if i == midi.size or midi[i] != midi[start]:
            if midi[start] >= 0 and (i - start) * hop / sr >= 0.06:
                notes.append((start * hop / sr, i * hop / sr, midi[start]))
            start = i
    return np.array(notes, float).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------- this project


def project_analysis(y: np.ndarray, sr: int, project_bpm: float | None = None) -> dict:
    from m2ugen.analysis import KEY_UNSURE, analyze

    a = analyze(y, sr, project_bpm=project_bpm)
    return {"bpm": a.bpm, "beats": np.asarray(a.beats, float), "meter": a.meter,
            "downbeats": None if a.downbeats is None else np.asarray(a.downbeats, float),
            "key": a.key_name, "key_sure": a.key_confidence is not None and a.key_confidence >= KEY_UNSURE,
            "bpm_alternative": a.bpm_alternative}


def project_notes(y: np.ndarray, sr: int) -> np.ndarray:
    from m2ugen.transcribe import transcribe

    t = transcribe(y, sr, chords=True)
    return np.array([(n.start, n.end, n.pitch) for n in t.melody], float).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------- scoring


def score_analysis(item, est: dict) -> dict:
    import mir_eval

    out = {}
    if est["key"] is None:
        out["key_w"], out["key_exact"] = 0.0, 0.0
    else:
        out["key_w"] = float(mir_eval.key.weighted_score(item.key, est["key"]))
        out["key_exact"] = float(est["key"] == item.key or out["key_w"] == 1.0)
    if "key_sure" in est:  # this project's confidence: is a key it calls sure right more often?
        out["key_sure"] = float(est["key_sure"])
        if est["key_sure"]:
            out["key_exact_sure"] = out["key_exact"]
    bpm = est["bpm"]
    out["tempo_answer"] = float(bpm is not None)
    out["acc1"] = float(bpm is not None and abs(bpm - item.bpm) <= 0.04 * item.bpm)
    if "bpm_alternative" in est:  # this project names a second tempo level where it is unsure of the first
        alt = est["bpm_alternative"]
        out["tempo_sure"] = float(bpm is not None and alt is None)
        if out["tempo_sure"]:
            out["acc1_sure"] = out["acc1"]
        out["acc1_named"] = max(out["acc1"], float(alt is not None and abs(alt - item.bpm) <= 0.04 * item.bpm))
    out["acc2"] = float(bpm is not None and any(abs(bpm - f * item.bpm) <= 0.04 * f * item.bpm
                                                for f in (1, 2, 3, 1 / 2, 1 / 3)))
    ref = mir_eval.beat.trim_beats(np.asarray(item.beats))
    est_b = mir_eval.beat.trim_beats(est["beats"]) if est["beats"] is not None and len(est["beats"]) else np.zeros(0)
    out["beat_f"] = float(mir_eval.beat.f_measure(ref, est_b)) if est_b.size else 0.0
    if "meter" not in est:  # librosa has no meter
        return out
    out["meter_answer"] = float(est["meter"] is not None)
    out["meter_right"] = float(est["meter"] == item.meter)
    db = est["downbeats"]
    ref_d = mir_eval.beat.trim_beats(np.asarray(item.downbeats))
    est_d = mir_eval.beat.trim_beats(np.asarray(db)) if db is not None and len(db) else np.zeros(0)
    out["downbeat_f"] = float(mir_eval.beat.f_measure(ref_d, est_d)) if est_d.size else 0.0
    return out


def score_notes(item, est: np.ndarray) -> dict:
    import mir_eval

    ref = np.asarray(item.notes, float)
    ref_iv, ref_p = ref[:, :2], 440.0 * 2 ** ((ref[:, 2] - 69) / 12)
    if est.size == 0:
        return {"onset_f": 0.0, "onoff_f": 0.0}
    est_iv, est_p = est[:, :2], 440.0 * 2 ** ((est[:, 2] - 69) / 12)
    keep = est_iv[:, 1] > est_iv[:, 0]
    est_iv, est_p = est_iv[keep], est_p[keep]
    _, _, f_on, _ = mir_eval.transcription.precision_recall_f1_overlap(ref_iv, ref_p, est_iv, est_p,
                                                                         onset_tolerance=0.05, offset_ratio=None)
    _, _, f_off, _ = mir_eval.transcription.precision_recall_f1_overlap(ref_iv, ref_p, est_iv, est_p,
                                                                          onset_tolerance=0.05)
    return {"onset_f": float(f_on), "onoff_f": float(f_off)}


def _timed(fn, *a):
    w0, c0 = time.perf_counter(), time.process_time()
    r = fn(*a)
    return r, time.perf_counter() - w0, time.process_time() - c0


def run_method(items, waves, analyse_fn, notes_fn, verbose: bool, label: str, project_tempo: bool = False):
    rows, note_rows = [], []
    t_an = [0.0, 0.0, 0.0]   # wall, cpu, minutes
    t_tr = [0.0, 0.0, 0.0]
    for item, (y, sr) in zip(items, waves):
        minutes = y.shape[1] / sr / 60.0
        if item.melody:
            est, wall, cpu = _timed(notes_fn, y, sr)
            t_tr[0] += wall; t_tr[1] += cpu; t_tr[2] += minutes  # noqa: E702
            s = score_notes(item, est)
            note_rows.append(s)
            if verbose:
                print(f"  {label:8s} {item.name:18s} {item.ensemble:9s} notes {len(item.notes):3d} est {len(est):3d} "
                      f"onF {s['onset_f']:.2f} onoffF {s['onoff_f']:.2f}", flush=True)
            continue
        est, wall, cpu = _timed(analyse_fn, y, sr, *((item.bpm,) if project_tempo else ()))
        t_an[0] += wall; t_an[1] += cpu; t_an[2] += minutes  # noqa: E702
        s = score_analysis(item, est)
        s["drums"] = item.drums
        rows.append(s)
        if verbose:
            bpm = "None" if est["bpm"] is None else f"{est['bpm']:.1f}"
            alt = f"(or {est['bpm_alternative']:.1f}) " if est.get("bpm_alternative") else ""
            print(f"  {label:8s} {item.name:10s} {item.ensemble:15s} {'drums' if item.drums else 'plain'} "
                  f"key {item.key:9s} -> {str(est['key']):9s} bpm {item.bpm:5.0f} -> {bpm:6s} beatF {s['beat_f']:.2f} "
                  f"{alt}meter {item.meter} -> {est.get('meter')} dbF {s.get('downbeat_f', float('nan')):.2f}", flush=True)
    return rows, note_rows, t_an, t_tr


def summarise(rows, note_rows, t_an, t_tr) -> dict:
    def mean(key, sel=lambda r: True):
        v = [r[key] for r in rows if key in r and sel(r)]
        return float(np.mean(v)) if v else None

    s = {
        "key exact": mean("key_exact"), "key MIREX weighted": mean("key_w"),
        "key called sure": mean("key_sure"), "key exact where sure": mean("key_exact_sure"),
        "tempo Acc1 all": mean("acc1"), "tempo Acc1 with drums": mean("acc1", lambda r: r["drums"]),
        "tempo Acc1 without drums": mean("acc1", lambda r: not r["drums"]), "tempo Acc2": mean("acc2"),
        "tempo answered": mean("tempo_answer"),
        "tempo level called sure": mean("tempo_sure"), "tempo Acc1 where sure": mean("acc1_sure"),
        "tempo Acc1 of the levels named": mean("acc1_named"),
        "beat F (70 ms)": mean("beat_f"), "beat F without drums": mean("beat_f", lambda r: not r["drums"]),
        "downbeat F": mean("downbeat_f"),
        "meter right all": mean("meter_right"), "meter right without drums": mean("meter_right", lambda r: not r["drums"]),
        "meter answered": mean("meter_answer"),
        "notes onset F1 (50 ms)": float(np.mean([r["onset_f"] for r in note_rows])) if note_rows else None,
        "notes onset+offset F1": float(np.mean([r["onoff_f"] for r in note_rows])) if note_rows else None,
        "analysis s / min audio": (t_an[0] / t_an[2], t_an[1] / t_an[2]) if t_an[2] else None,
        "transcription s / min audio": (t_tr[0] / t_tr[2], t_tr[1] / t_tr[2]) if t_tr[2] else None,
    }
    return s


def _cell(name, v):
    if v is None:
        return "—"
    if isinstance(v, tuple):
        return f"{v[0]:.2f} ({v[1]:.2f} cpu)"
    if "F" in name or "MIREX" in name:
        return f"{v:.3f}"
    return f"{100 * v:.1f} %"


def main() -> None:
    args = _args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import soundfile as sf

    import mir_set

    items, wavs = mir_set.load_set(args.split, args.items, args.melodies, rebuild=args.rebuild,
                                   version=args.manifest_version or mir_set.MANIFEST_VERSION)
    if args.rubato:
        items = [mir_set.with_rubato(i, args.rubato, seed=k) for k, i in enumerate(items)]
        wavs = [mir_set.render(i, mir_set.cache_dir() / args.split) for i in items]
        print(f"with rubato: tempo +-{100 * args.rubato:g} % over 8 s periods")
    if args.notes_only:
        items, wavs = zip(*[(i, w) for i, w in zip(items, wavs) if i.melody])
    waves = []
    for w in wavs:
        y, sr = sf.read(str(w), dtype="float32", always_2d=True)
        waves.append((np.ascontiguousarray(y.T), sr))
    if args.room:
        waves = [(mir_set.in_room(y, sr, *args.room, seed=k), sr) for k, (y, sr) in enumerate(waves)]
        print(f"in a room: RT60 {args.room[0]:g} s, direct-to-reverberant {args.room[1]:+g} dB")
    if args.noise is not None:
        waves = [(mir_set.with_noise(y, args.noise, seed=k), sr) for k, (y, sr) in enumerate(waves)]
        print(f"with pink noise {args.noise:g} dB under the signal")
    n_mix = sum(not i.melody for i in items)
    n_drums = sum(i.drums for i in items if not i.melody)
    n3 = sum(i.meter == 3 for i in items if not i.melody)
    analysed = sum(i.key_source == "analysed" for i in items if not i.melody)
    print(f"split {args.split}: {n_mix} mixed items ({n_drums} with drums, {n3} in 3/4, "
          f"{analysed} keys from analysis), {len(items) - n_mix} melodies; "
          f"{sum(y.shape[1] / sr for y, sr in waves) / 60:.1f} min of stereo 44.1 kHz audio", flush=True)
    # warm both (imports, numba compilation) before anything is timed
    from m2ugen.analysis import preload

    preload()
    y0, sr0 = waves[0]
    if not args.notes_only:
        project_analysis(y0[:, : 5 * sr0], sr0)
    project_notes(y0[:, : 3 * sr0], sr0)
    results = {"this project": summarise(*run_method(items, waves, project_analysis, project_notes, args.verbose,
                                                      "project", args.project_tempo))}
    if not args.no_baseline:
        if not args.notes_only:
            librosa_analysis(y0[:, : 5 * sr0], sr0)
        librosa_notes(y0[:, : 3 * sr0], sr0)
        results["librosa defaults"] = summarise(*run_method(items, waves, librosa_analysis, librosa_notes,
                                                            args.verbose, "librosa"))
    cols = list(results)
    print()
    print("| metric (" + args.split + ") | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name in results["this project"]:
        print(f"| {name} | " + " | ".join(_cell(name, results[c][name]) for c in cols) + " |")


if __name__ == "__main__":
    main()
