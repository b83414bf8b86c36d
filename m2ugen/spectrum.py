"""The shared front end of the measured analysis: a mono analysis signal and one constant-Q spectrum.

Beats, meter and key use a mono analysis signal: channels averaged, DC removed, resampled to 22050 Hz
and peak-normalised (so the level does not matter). Silence has no beats and no key. One constant-Q
spectrum (``constant_q``: 11025 Hz, 3 bins per semitone, C1..B7, 23.2 ms frames, with the clip's
tuning) serves the onsets, the meter and the key.

librosa is imported on first use, never at import time (the CLI imports m2ugen). Its first call in a
process is slow (loading numba-compiled code; ``m2ugen.analysis.preload()`` does it ahead of time). When
the directory librosa's numba cache lives in is not writable (a read-only install), ``NUMBA_CACHE_DIR``
is set to a writable user cache (or temp) directory before librosa is imported, unless it is set already.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANALYSIS_SR = 22050          # beats and meter
KEY_SR = 11025               # constant-Q spectrum (C1..B7 fits under its Nyquist)
HOP = 512                    # onset envelope frames: 23.2 ms at 22050 Hz
CQT_HOP = 256                # the same 23.2 ms at KEY_SR
SEMITONE_BINS = 3
CQT_BPO = 12 * SEMITONE_BINS
CQT_BINS = 7 * CQT_BPO       # C1..B7
LOG_GAIN = 1000.0            # log(1 + gain * |X| / max) for the constant-Q flux
SILENCE_DBFS = -90.0         # below this peak the mono analysis signal counts as silence
TONALITY_MIN = 0.45          # pitched sound (``tonality``): noise reads 0.37-0.39, music on the dev set 0.58 and up



# ----------------------------------------------------------------------------------------------
# librosa, lazily


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def configure_numba_cache(environ: dict | None = None) -> str | None:
    """Give numba a writable cache directory when librosa's own ``__pycache__`` is not writable.

    Returns the directory set, or None when nothing had to be set (already set, or librosa's dir is
    writable, or librosa is not installed). Must run before numba is imported to take effect.
    """
    env = os.environ if environ is None else environ
    if env.get("NUMBA_CACHE_DIR"):
        return None
    spec = importlib.util.find_spec("librosa")
    if spec is None or not spec.origin:
        return None
    if _writable_dir(Path(spec.origin).parent / "__pycache__"):
        return None
    import platformdirs

    for candidate in (Path(platformdirs.user_cache_dir("m2ugen")) / "numba",
                      Path(tempfile.gettempdir()) / f"m2ugen-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        if _writable_dir(candidate):
            env["NUMBA_CACHE_DIR"] = str(candidate)
            return str(candidate)
    return None


def _librosa():
    configure_numba_cache()
    import librosa

    return librosa



# ----------------------------------------------------------------------------------------------
# the shared front end: a mono signal and one constant-Q spectrum


CANCELLED_DB = 6.0   # a channel mean this far under the channels' own power has cancelled (out of phase)


def downmix(wave: np.ndarray) -> np.ndarray:
    """float64 mono of ``[channels, samples]``: the channels' mean, or the loudest channel where the mean
    holds CANCELLED_DB less power than the channels do (one channel out of phase, a widened synth whose
    sides cancel: the mean would be near silence)."""
    mono = wave.mean(axis=0, dtype=np.float64)
    if wave.shape[0] > 1 and wave.shape[1] > 0:
        power = np.mean(np.square(wave, dtype=np.float64), axis=1)
        if float(np.mean(np.square(mono))) < float(power.mean()) * 10 ** (-CANCELLED_DB / 10):
            return wave[int(np.argmax(power))].astype(np.float64)
    return mono


def analysis_signal(wave: np.ndarray, sr: int) -> np.ndarray | None:
    """Mono (``downmix``), DC removed, resampled to ANALYSIS_SR, peak 1.0; None when silent."""
    mono = downmix(wave)
    mono -= mono.mean()
    peak = float(np.abs(mono).max())
    if peak <= 10.0 ** (SILENCE_DBFS / 20.0):
        return None
    mono = (mono / peak).astype(np.float32)
    if sr != ANALYSIS_SR:
        import soxr

        mono = soxr.resample(mono, sr, ANALYSIS_SR, quality="HQ")
    return mono


@dataclass
class Spectrum:
    """Constant-Q magnitudes of the analysis signal at KEY_SR: [CQT_BINS, frames], 3 bins per semitone
    from C1, one frame per CQT_HOP samples (23.2 ms, the onset envelope's frame)."""
    mag: np.ndarray
    tuning: float              # semitones (-0.5..0.5) the music sits above equal temperament at A440

    @property
    def frames(self) -> int:
        return self.mag.shape[1]


def constant_q(mono: np.ndarray, sr: int = ANALYSIS_SR) -> Spectrum | None:
    """The constant-Q spectrum (see ``Spectrum``) and its tuning, or None for a clip too short to hold one."""
    librosa = _librosa()
    import soxr

    y = soxr.resample(mono, sr, KEY_SR, quality="HQ") if sr != KEY_SR else mono
    if y.size < 2048:
        return None
    mag = np.abs(librosa.cqt(y, sr=KEY_SR, hop_length=CQT_HOP, fmin=librosa.note_to_hz("C1"), n_bins=CQT_BINS,
                             bins_per_octave=CQT_BPO)).astype(np.float32)
    return Spectrum(mag, _tuning(mag))


def _tuning(mag: np.ndarray) -> float:
    """Energy-weighted circular mean of the spectral peaks' positions within their semitone."""
    e = mag.sum(axis=1).astype(np.float64)
    i = np.flatnonzero((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:])) + 1
    if i.size == 0:
        return 0.0
    a, b, c = e[i - 1], e[i], e[i + 1]
    denom = a - 2 * b + c
    pos = i + np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
    per = SEMITONE_BINS
    z = np.sum(b * np.exp(2j * np.pi * pos / per))
    return float(np.angle(z) / (2 * np.pi)) if abs(z) > 0 else 0.0


def _semitones(spec: Spectrum) -> np.ndarray:
    """[84, frames] semitone magnitudes C1..B7: each semitone's 3 bins, read at the clip's tuning."""
    shift = spec.tuning * SEMITONE_BINS
    base = np.arange(84) * SEMITONE_BINS + shift
    idx = np.clip(np.round(base).astype(int), 0, CQT_BINS - 1)
    lo, hi = np.clip(idx - 1, 0, CQT_BINS - 1), np.clip(idx + 1, 0, CQT_BINS - 1)
    return (spec.mag[lo] + spec.mag[idx] + spec.mag[hi]) / 3.0


def tonality(spec: Spectrum) -> float:
    """How peaked the semitone spectrum is: per frame, the deviation of the log semitone magnitudes
    from their 13-semitone moving average, median over frames. Noise (white, pink, brown) reads
    0.37-0.39; pitched music 0.58 and up (the dev set, drums included)."""
    semis = _semitones(spec)
    if semis.shape[1] == 0 or float(semis.max()) <= 0:
        return 0.0
    log = np.log(semis + 1e-6 * float(semis.max()))
    kernel = np.ones(13) / 13
    smooth = np.stack([np.convolve(log[:, j], kernel, "same") for j in range(log.shape[1])], axis=1)
    return float(np.median((log - smooth)[6:-6].std(axis=0)))

