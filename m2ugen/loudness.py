"""Loudness and peaks of the measured analysis (unchanged by issue 23: equal to pyloudnorm).

- ``measure_loudness``: integrated loudness (ITU-R BS.1770-4, K-weighted, 400 ms blocks with 75 %
  overlap, absolute gate -70 LUFS and relative gate -10 LU) through pyloudnorm, which weights the channels
  as L, R, C, Ls, Rs. More than 5 channels have no known layout: every channel is weighted 1.0 and the
  per-channel block powers pyloudnorm measures are summed before the same two gates. ``None`` for a clip
  shorter than one 400 ms gating block, and for silence (every block under the absolute gate).
- ``measure_true_peak``: BS.1770-4 Annex 2: oversample 4x (2x at 88.2/96 kHz, none from 176.4 kHz),
  take the largest absolute value, in dBTP. soxr's linear-phase "HQ" filter does the oversampling.
"""

from __future__ import annotations

import math

import numpy as np

LOUDNESS_BLOCK_S = 0.400     # BS.1770 gating block



def _db(x: float) -> float | None:
    return 20.0 * math.log10(x) if x > 0 else None


def measure_peak(wave: np.ndarray) -> float | None:
    """Sample peak in dBFS (None for digital silence)."""
    return _db(float(np.max(np.abs(wave))))


def measure_true_peak(wave: np.ndarray, sr: int) -> float | None:
    """True peak in dBTP (BS.1770-4 Annex 2: 4x oversampling below 88.2 kHz, 2x below 176.4 kHz)."""
    return _db(true_peak_envelope(wave, sr).max())


def true_peak_envelope(wave: np.ndarray, sr: int) -> np.ndarray:
    """Per input sample, the largest |value| over channels and the oversampled points in its period."""
    factor = 4 if sr < 88200 else 2 if sr < 176400 else 1
    mag = np.abs(wave).max(axis=0)
    if factor == 1:
        return mag
    import soxr

    n = wave.shape[1]
    up = soxr.resample(np.ascontiguousarray(wave.T), sr, sr * factor, quality="HQ")  # [n * factor, C]
    # elementwise maxima of strided views (a reduction over a short axis is many times slower)
    for c in range(up.shape[1]):
        channel = np.abs(up[: n * factor, c])
        for k in range(factor):
            phase = channel[k::factor]
            np.maximum(mag[: phase.size], phase, out=mag[: phase.size])
    return mag


def measure_loudness(wave: np.ndarray, sr: int) -> float | None:
    """Integrated loudness in LUFS (BS.1770-4 via pyloudnorm); None if shorter than 400 ms or silent."""
    if wave.shape[1] < LOUDNESS_BLOCK_S * sr + 1:
        return None
    import pyloudnorm

    meter = pyloudnorm.Meter(sr, block_size=LOUDNESS_BLOCK_S)
    data = wave.T.astype(np.float64)
    if wave.shape[0] <= 5:
        lufs = float(meter.integrated_loudness(data))
    else:  # unknown layout: every channel weighted 1.0, block powers summed, then the two gates
        power = 0.0
        for ch in range(wave.shape[0]):
            meter.integrated_loudness(data[:, ch])
            power = power + 10.0 ** ((np.asarray(meter.blockwise_loudness) + 0.691) / 10.0)
        lufs = _gated_loudness(np.asarray(power))
    return lufs if math.isfinite(lufs) and lufs > -70.0 else None


def _gated_loudness(block_power: np.ndarray) -> float:
    """BS.1770-4 gating of summed, channel-weighted block mean squares -> LUFS (-inf if all gated)."""
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(block_power)
    kept = block_power[block_lufs > -70.0]
    if kept.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(kept.mean()) - 10.0
    kept = block_power[(block_lufs > -70.0) & (block_lufs > relative)]
    return -0.691 + 10.0 * math.log10(kept.mean())
