"""What the worker does around the model so that the region reaches the music and a result fits the
project: measure the source, build the prompt (the project's context and what was measured) and the
model's options (mode, vocoder, MIDI melody, tempo), and fit each take to the project — tempo,
bar-exact length, seamless loop, loudness — then measure the result.

The measuring and fitting are library code (``m2ugen.analysis``, ``m2ugen.fit``); this module only
decides, from a job's validated params, which of them apply and in what order:

1. tempo fit (at the model's rate, before anything cuts the length): with ``fit_tempo``, a result whose
   measured tempo is off the target by more than 2 % (half/double tempo counted as the same) is
   stretched with Rubber Band;
2. rate and channels (soxr; mono copied / channels averaged);
3. length: exactly ``duration`` (bars -> seconds with the tempo); a ``loop`` is cut at a bar boundary
   with its tail crossfaded into its head (no fade at the ends, which would click at the wrap);
4. loudness (``normalize``): an edit is matched to its source's integrated loudness, generated music
   to ``target_lufs``; the true peak is held under -1 dBTP either way, so nothing is ever clipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server import audio_io

TEMPO_TOLERANCE = 0.02
TRUE_PEAK_CEILING_DBTP = -1.0
LOOP_TAIL_S = 0.25  # decoded past a loop's end, for its tail-into-head crossfade (fit.make_loop: 50 ms)


def as_float(audio: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """The intake's int16 (or float) [C, S] -> float32 in [-1, 1)."""
    wave, sr = audio
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


def analyse(wave: np.ndarray, sr: int, project_bpm: float | None = None) -> dict[str, Any]:
    """The measured analysis; ``project_bpm`` (``context.bpm``) settles a tempo level the sound leaves open."""
    from m2ugen import analysis

    return analysis.analyze(wave, sr, project_bpm=project_bpm).to_dict()


def measured_line(source_analysis: dict[str, Any] | None) -> str | None:
    if not source_analysis:
        return None
    from m2ugen import analysis

    return analysis.measured_line(source_analysis)


def prompt_with_context(prompt: str, context: dict[str, Any]) -> str:
    """Append the project's musical context: "..., at 120 bpm, in A minor, in 4/4 time"."""
    extra = []
    if context.get("bpm"):
        extra.append(f"at {context['bpm']:g} bpm")
    if context.get("key"):
        extra.append(f"in {context['key']}")
    if context.get("time_signature"):
        n, d = context["time_signature"]
        extra.append(f"in {n}/{d} time")
    return prompt if not extra else prompt.rstrip() + ", " + ", ".join(extra)


def prompt_for_model(params: dict[str, Any], source_analysis: dict[str, Any] | None) -> str:
    """The prompt the LLM gets: the user's, the project's context, then what was measured of the source
    ("Measured: 92 BPM, F# minor, -14 LUFS, 8.0 s."); with ``reference_prompt`` the user's alone, as
    the official model gets it."""
    if params.get("reference_prompt"):
        return params["prompt"]
    prompt = prompt_with_context(params["prompt"], params["context"])
    line = measured_line(source_analysis)
    return f"{prompt.rstrip()} {line}" if line else prompt


def model_options(params: dict[str, Any], midi: bytes | list | None, tempo: float | None, decode_s: float,
                  check=None) -> dict[str, Any]:
    """``M2UGen.chat`` options beyond the official call, only where they differ from its defaults: the
    edit mode, the vocoder, a MIDI sketch's notes (a file's bytes or a client's note list) as the melody
    chroma, and the tempo for the music
    decoder's text (not with ``reference_prompt``). ``check``: the chroma's cancel point (m2ugen.midi)."""
    options = {k: params[k] for k, default in (("mode", "text"), ("continuation", "new"), ("vocoder", "encodec"))
               if params.get(k, default) != default}
    if midi is not None:
        from m2ugen import midi as midi_notes

        options["chroma"] = midi_notes.midi_to_chroma(midi, duration_s=decode_s, check=check)
    if tempo and not params.get("reference_prompt"):
        options["music_hint"] = f"{round(tempo)} bpm"
    return options


def target_tempo(params: dict[str, Any], source_analysis: dict[str, Any] | None) -> float | None:
    """The tempo a result should have: the project's, else (edits) the source's measured tempo."""
    bpm = params["context"].get("bpm")
    if bpm is None and source_analysis:
        bpm = source_analysis.get("bpm")
    return float(bpm) if bpm else None


def time_signature(params: dict[str, Any]) -> tuple[int, int]:
    ts = params["context"].get("time_signature") or [4, 4]
    return int(ts[0]), int(ts[1])


def length_s(params: dict[str, Any], tempo: float | None) -> float | None:
    """The output length: ``bars`` at the tempo, else ``duration``."""
    if params.get("bars"):
        if not tempo:
            raise ValueError("'bars' needs a tempo, and none was given or measured")
        from m2ugen import fit

        return fit.bars_to_seconds(params["bars"], tempo, "%d/%d" % time_signature(params))
    return params.get("duration")


def decode_length(params: dict[str, Any], duration_s: float) -> float:
    """Seconds to ask the model for: a little more than the result when a tempo stretch may shorten it
    (up to 25 % faster) or a loop needs material past its end to crossfade into its head."""
    extra = duration_s * 0.25 if params.get("fit_tempo") else 0.0
    extra += LOOP_TAIL_S if params.get("loop") else 0.0
    return min(300.0, duration_s + extra)


def _nearest_tempo(measured: float, target: float) -> float:
    """A beat tracker may hear half or double time: the reading of ``measured`` closest to ``target``."""
    return min((measured / 2, measured, measured * 2), key=lambda b: abs(np.log(b / target)))


def fit_take(wave: np.ndarray, sr: int, params: dict[str, Any], *, out_sr: int, duration_s: float | None,
             tempo: float | None, source: tuple[np.ndarray, int] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """One take of model audio [C, S] at ``sr`` -> the WAV's samples [channels, n] at ``out_sr``, and
    notes on what was done (recorded in the result)."""
    from m2ugen import fit

    notes: dict[str, Any] = {}
    w = np.nan_to_num(np.asarray(wave, dtype=np.float32))
    if w.ndim == 1:
        w = w[None, :]
    if params.get("fit_tempo") and tempo:
        measured = analyse(w, sr, project_bpm=tempo).get("bpm")
        if measured:
            heard = _nearest_tempo(float(measured), tempo)
            notes["measured_bpm"] = round(heard, 2)
            if abs(heard / tempo - 1.0) > TEMPO_TOLERANCE:
                w = np.asarray(fit.fit_tempo(w, sr, heard, tempo), dtype=np.float32)
                notes["stretched"] = {"from_bpm": round(heard, 2), "to_bpm": tempo}
    w = audio_io.mix_channels(audio_io.resample(w, sr, out_sr), params["channels"])
    n = w.shape[1] if duration_s is None else int(round(duration_s * out_sr))
    if params.get("loop") and tempo:
        ts = "%d/%d" % time_signature(params)
        bars = params.get("bars") or max(1, int(round(n / fit.bars_to_samples(1, tempo, ts, out_sr))))
        w = np.asarray(fit.make_loop(w, out_sr, tempo, ts, bars), dtype=np.float32)  # bar-exact
        notes["loop"] = {"bars": bars, "bpm": tempo}
    else:
        w = audio_io.fit_length(w, n, out_sr)
    if params.get("normalize", True) and np.any(w):
        try:
            if source is not None:
                w = np.asarray(fit.match_loudness(w, out_sr, source[0], source[1], TRUE_PEAK_CEILING_DBTP),
                               np.float32)
                notes["loudness"] = achieved_loudness(w, out_sr, fit.measure_loudness(source[0], source[1]),
                                                      "the source's")
            else:
                w = np.asarray(fit.normalize_loudness(w, out_sr, params["target_lufs"], TRUE_PEAK_CEILING_DBTP),
                               np.float32)
                notes["loudness"] = achieved_loudness(w, out_sr, float(params["target_lufs"]), "the target")
        except ValueError as e:  # too short to measure (under 400 ms) or a silent source: the peak is still held
            w = np.asarray(fit.limit_true_peak(w, out_sr, TRUE_PEAK_CEILING_DBTP), np.float32)
            notes["loudness"] = f"not normalised ({e}); true peak held under {TRUE_PEAK_CEILING_DBTP:g} dBTP"
    return np.clip(w, -1.0, 1.0), notes


def achieved_loudness(w: np.ndarray, sr: int, target: float | None, whose: str) -> str:
    """What the loudness step achieved, measured on the result: "-14.0 LUFS (the target)", or, when the
    true-peak ceiling held it lower, "-16.2 LUFS: the -1 dBTP ceiling stopped at that (the target: -14)"."""
    from m2ugen import fit

    got = fit.measure_loudness(w, sr)
    if got is None or target is None:
        return f"loudness not measurable; true peak held under {TRUE_PEAK_CEILING_DBTP:g} dBTP"
    if got < target - 0.5:
        return (f"{got:.1f} LUFS: the {TRUE_PEAK_CEILING_DBTP:g} dBTP ceiling stopped at that "
                f"({whose}: {target:.1f} LUFS)")
    return f"{got:.1f} LUFS ({whose})"


def write_when_not_cancelled(worker, job, write) -> None:
    """A job's last step: cancelled if it was asked to be, else ``write()`` its results into its own folder
    (``failed`` when that folder changed under it: a link or a file planted there)."""
    from server import outputs
    from server.security import PathNotAllowed

    if job.cancel_requested.is_set():
        worker.finish(job, "cancelled")
        return
    worker.progress(job, "writing", 0.0)
    try:
        write()
    except PathNotAllowed as e:
        worker.finish(job, "failed", error=outputs.write_error(e))
