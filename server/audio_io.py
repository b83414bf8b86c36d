"""Audio out of the server: resample with soxr, up/down-mix, trim or pad to the requested duration
with short fades, encode a 24-bit WAV and the JSON sidecar. Arrays are float32 ``[channels, samples]``.
(Input audio is decoded by ``m2ugen.media.decode_audio``, the project's one decoder.)"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

FADE_S = 0.010


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """[C, S_in] -> [C, S_out] with soxr (high quality)."""
    if sr_in == sr_out:
        return wave
    out = soxr.resample(np.ascontiguousarray(wave.T), sr_in, sr_out, quality="HQ")  # [S, C] in and out
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, wave.shape[0]).T)


def mix_channels(wave: np.ndarray, channels: int) -> np.ndarray:
    """[C_in, S] -> [channels, S]: mono is copied to every channel, otherwise channels are averaged
    down to mono or cycled up."""
    c_in = wave.shape[0]
    if c_in == channels:
        return wave
    if channels == 1:
        return wave.mean(axis=0, keepdims=True)
    if c_in == 1:
        return np.repeat(wave, channels, axis=0)
    idx = [i % c_in for i in range(channels)]
    return wave[idx]


def fit_length(wave: np.ndarray, n: int, sr: int, fade_s: float = FADE_S) -> np.ndarray:
    """Trim or zero-pad [C, S] to n samples; fade in at the start and out at the end of the content."""
    content = min(wave.shape[1], n)
    out = np.zeros((wave.shape[0], n), dtype=np.float32)
    out[:, :content] = wave[:, :content]
    k = min(int(round(fade_s * sr)), content // 2)
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
        out[:, :k] *= ramp
        out[:, content - k:content] *= ramp[::-1]
    return out


def prepare_output(wave: np.ndarray, sr_in: int, sr_out: int, channels: int, duration_s: float | None) -> np.ndarray:
    """Model audio -> what the client asked for: rate, channels, exact length (samples)."""
    if wave.ndim == 1:
        wave = wave[None, :]
    wave = np.nan_to_num(np.asarray(wave, dtype=np.float32))
    wave = mix_channels(resample(wave, sr_in, sr_out), channels)
    n = wave.shape[1] if duration_s is None else int(round(duration_s * sr_out))
    return np.clip(fit_length(wave, n, sr_out), -1.0, 1.0)


def wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    """[C, S] float -> the bytes of a 24-bit PCM WAV."""
    buf = io.BytesIO()
    sf.write(buf, wave.T, sr, subtype="PCM_24", format="WAV")
    return buf.getvalue()


def write_wav(path: Path, wave: np.ndarray, sr: int) -> bytes:
    """Write a 24-bit PCM WAV atomically (a temp file renamed over ``path``); returns the file's bytes."""
    from server.security import write_atomic_confined

    data = wav_bytes(wave, sr)
    write_atomic_confined(Path(os.path.realpath(path)), data, "output", lambda head: True)
    return data


def sidecar_bytes(data: dict[str, Any]) -> bytes:
    """The JSON sidecar of a result (UTF-8, indented, strings escaped so any client can print it)."""
    return (json.dumps(data, indent=2, default=str, ensure_ascii=True) + "\n").encode("utf-8")
