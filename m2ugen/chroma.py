"""Chroma features as MusicGen-Melody is conditioned on them, computed without torchaudio.

The definition is that of transformers 5.23 ``MusicgenMelodyFeatureExtractor`` (which itself needs
torchaudio, so it cannot run here):

1. mono audio at 32 kHz, at most 30 s (``chunk_length``); a clip shorter than ``n_fft`` is
   zero-padded on both sides to ``n_fft`` samples;
2. power spectrogram: STFT with ``n_fft = win_length = 16384``, hop 4096, periodic Hann window,
   ``center=True`` with reflect padding, scaled by 1 / sqrt(sum(window^2)) (torchaudio's
   ``normalized=True``), squared magnitude;
3. chroma = librosa's chroma filter bank (``transformers.audio_utils.chroma_filter_bank``:
   tuning 0, Gaussian octave weighting centred on octave 5 with half-width 2, L2-normalised
   columns, starting at C) applied to the spectrogram -> [12, T];
4. each frame divided by its maximum (inf-norm, eps 1e-6), then replaced by the one-hot vector of
   its argmax pitch class.

Result: float32 ``[T, 12]``, ``T = 1 + samples // 4096`` frames at ``FRAME_RATE`` = 32000 / 4096 =
7.8125 frames per second; column 0 is C, 1 is C#, ..., 9 is A, 11 is B. The decoder repeats a
shorter chroma (and truncates a longer one) to its ``chroma_length`` (235 frames = 30 s).

Resampling uses soxr (the extractor uses torchaudio's sinc resampler); the one-hot result does not
depend on that choice except on frames where two pitch classes are all but tied.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 32000
N_FFT = 16384
HOP_LENGTH = 4096
NUM_CHROMA = 12
MAX_SECONDS = 30.0  # the extractor's chunk_length
FRAME_RATE = SAMPLE_RATE / HOP_LENGTH  # 7.8125 chroma frames per second
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@functools.lru_cache(maxsize=4)
def chroma_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, num_chroma: int = NUM_CHROMA) -> np.ndarray:
    """The extractor's filter bank: [num_chroma, n_fft // 2 + 1] float32 (read-only, cached)."""
    from transformers.audio_utils import chroma_filter_bank

    bank = chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sample_rate,
                              tuning=0).astype(np.float32)
    bank.setflags(write=False)
    return bank


def num_frames(num_samples: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> int:
    """Chroma frames for a clip of ``num_samples`` samples at 32 kHz (after the n_fft padding)."""
    return 1 + max(int(num_samples), n_fft) // hop_length


def power_spectrogram(wave: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Mono float32 [samples] -> [n_fft // 2 + 1, frames] power, as torchaudio's
    ``Spectrogram(n_fft, win_length=n_fft, hop_length, power=2, center=True, normalized=True)``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if x.shape[-1] < n_fft:  # the extractor's symmetric zero padding of short clips
        pad = n_fft - x.shape[-1]
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = spec / window.pow(2).sum().sqrt()
    return spec.abs().pow(2).numpy()


def chroma_from_spectrogram(power: np.ndarray, filters: np.ndarray | None = None) -> np.ndarray:
    """[F, T] power spectrogram -> one-hot chroma [T, 12] (steps 3 and 4 of the module docstring)."""
    filters = chroma_filters() if filters is None else filters
    raw = filters @ power  # [12, T]
    norm = raw / np.maximum(np.abs(raw).max(axis=0, keepdims=True), 1e-6)
    one_hot = np.zeros((norm.shape[1], norm.shape[0]), dtype=np.float32)
    one_hot[np.arange(norm.shape[1]), norm.argmax(axis=0)] = 1.0
    return one_hot


def chroma_from_audio(wave, sr: int, max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """Audio ``[samples]`` or ``[channels, samples]`` at ``sr`` Hz -> one-hot chroma float32 [T, 12].

    Channels are averaged and the clip resampled to 32 kHz; only the first ``max_seconds`` are used
    (the extractor's 30 s; None: all of it). ``T = 1 + samples_32k // 4096`` (7.8125 frames per s).
    """
    from m2ugen import media

    mono = media.load_audio((wave, sr), SAMPLE_RATE)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * SAMPLE_RATE))]
    return chroma_from_spectrogram(power_spectrogram(mono))


def check_chroma(chroma, num_chroma: int = NUM_CHROMA) -> np.ndarray:
    """A caller's chroma (e.g. built from MIDI notes) -> float32 [T, num_chroma]; ValueError if malformed.

    Any non-negative weights are accepted (the decoder projects them linearly); the extractor's
    own output is one-hot per frame at ``FRAME_RATE`` frames per second.
    """
    if hasattr(chroma, "detach"):
        chroma = chroma.detach().cpu().numpy()
    c = np.asarray(chroma)
    if c.dtype == np.bool_ or not np.issubdtype(c.dtype, np.number) or np.issubdtype(c.dtype, np.complexfloating):
        raise ValueError(f"chroma must be a real numeric array [frames, {num_chroma}], got dtype {c.dtype}")
    if c.ndim == 3 and c.shape[0] == 1:
        c = c[0]
    if c.ndim != 2 or c.shape[1] != num_chroma or c.shape[0] < 1:
        raise ValueError(f"chroma must be [frames, {num_chroma}] with at least one frame, got shape {list(c.shape)}")
    if not np.isfinite(c).all():
        raise ValueError("chroma contains NaN or inf")
    if (c < 0).any():
        raise ValueError("chroma weights must be non-negative")
    return np.ascontiguousarray(c, dtype=np.float32)
