"""Audio inputs and outputs through PortAudio (sounddevice): list, record, play.

    list_devices()                      # [{"index", "name", "hostapi", "inputs", "outputs", ...}]
    wave, sr = record(4.0, device="USB")   # float32 [channels, samples]; device: index, name part or None
    play(wave, sr, device=None)         # blocks until played
    play_file("result.wav")

sounddevice is imported on first use (the CLI starts without it). It needs the PortAudio library:
Debian/Ubuntu ``apt-get install libportaudio2``; the macOS and Windows wheels bundle it. Any
PortAudio host API works (ALSA, PulseAudio, CoreAudio, WASAPI, JACK - ``jackd -d dummy`` in tests).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


class AudioDeviceError(RuntimeError):
    """PortAudio is missing, no such device, or the device refused the stream."""


def _sd():
    try:
        import sounddevice
    except OSError as e:  # the wheel is there but the shared library is not
        raise AudioDeviceError(f"audio devices need the PortAudio library, which is not installed ({e}); "
                               f"on Debian/Ubuntu: apt-get install libportaudio2") from None
    except ImportError as e:
        raise AudioDeviceError(f"audio devices need the 'sounddevice' package ({e}); "
                               f"reinstall m2ugen (pip install -e .)") from None
    return sounddevice


def list_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with its host API, channel counts, default rate and default flags."""
    sd = _sd()
    apis = sd.query_hostapis()
    default_in, default_out = (sd.default.device[0], sd.default.device[1])
    out = []
    for d in sd.query_devices():
        api = apis[d["hostapi"]]
        out.append({"index": d["index"], "name": d["name"], "hostapi": api["name"],
                    "inputs": d["max_input_channels"], "outputs": d["max_output_channels"],
                    "default_samplerate": d["default_samplerate"],
                    "default_input": d["index"] in (default_in, api["default_input_device"]) and d["max_input_channels"] > 0,
                    "default_output": d["index"] in (default_out, api["default_output_device"]) and d["max_output_channels"] > 0})
    return out


def _device(device: int | str | None, kind: str) -> dict[str, Any]:
    sd = _sd()
    try:
        info = sd.query_devices(device, kind=kind)
    except (ValueError, sd.PortAudioError) as e:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in sd.query_devices()
                          if d["max_input_channels" if kind == "input" else "max_output_channels"] > 0)
        raise AudioDeviceError(f"no audio {kind} {device!r} ({e}); {kind}s: {names or 'none'}") from None
    return info


def record(seconds: float, device: int | str | None = None, *, sample_rate: int | None = None,
           channels: int | None = None) -> tuple[np.ndarray, int]:
    """Record ``seconds`` from an input (index, part of its name, or None = the default).
    -> (float32 [channels, samples], sample rate). Rate: the device's default unless given;
    channels: up to 2 (what the device has)."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= 3600):
        raise AudioDeviceError(f"record: seconds must be within (0, 3600], got {seconds!r}")
    sd = _sd()
    info = _device(device, "input")
    if info["max_input_channels"] < 1:
        raise AudioDeviceError(f"record: {info['name']!r} has no input channels")
    sr = int(sample_rate or info["default_samplerate"])
    ch = int(channels or min(2, info["max_input_channels"]))
    frames = int(round(seconds * sr))
    try:
        data = sd.rec(frames, samplerate=sr, channels=ch, dtype="float32", device=info["index"], blocking=True)
    except sd.PortAudioError as e:
        raise AudioDeviceError(f"record from {info['name']!r} at {sr} Hz, {ch} ch failed: {e}") from None
    return np.ascontiguousarray(data.T), sr


def play(wave, sample_rate: int, device: int | str | None = None) -> None:
    """Play float ``[channels, samples]`` (or ``[samples]``) on an output; blocks until done. Resampled
    to the device's default rate when it refuses ``sample_rate``; down-mixed when it has fewer channels."""
    sd = _sd()
    w = np.asarray(wave, dtype=np.float32)
    w = w[None] if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] == 0:
        raise AudioDeviceError(f"play: expected [channels, samples], got shape {tuple(np.shape(wave))}")
    info = _device(device, "output")
    if w.shape[0] > info["max_output_channels"]:
        w = w.mean(axis=0, keepdims=True)
    sr = int(sample_rate)
    try:
        sd.check_output_settings(device=info["index"], samplerate=sr, channels=w.shape[0], dtype="float32")
    except sd.PortAudioError:
        import soxr

        target = int(info["default_samplerate"])
        w = soxr.resample(w.T, sr, target).T.astype(np.float32)
        sr = target
    try:
        sd.play(np.ascontiguousarray(w.T), samplerate=sr, device=info["index"], blocking=True)
    except sd.PortAudioError as e:
        raise AudioDeviceError(f"play on {info['name']!r} at {sr} Hz failed: {e}") from None


def play_file(path: str | Path, device: int | str | None = None) -> None:
    import soundfile

    data, sr = soundfile.read(str(Path(path).expanduser()), dtype="float32", always_2d=True)
    play(data.T, sr, device)
