"""Late-reverberation suppression for the transcriber: a blind estimate of the room's decay time, then
spectral subtraction of the late reverberation predicted from the past spectrum.

    rt60 = decay_time(stft_power(y), sr)       # seconds; 0.0 where no free decay is heard
    y2 = suppress_late_reverb(y, sr)           # mono float32, same length; y itself in a dry recording

Why: in a reverberant room (or a track rendered with its reverb) each note's tail lies under the next
note's attack, so onsets lose their contrast, repeated notes merge and tracked notes run long.

How (Lebart, Boucher & Denbigh 2001; Habets 2007, "Single- and multi-microphone speech
dereverberation using spectral enhancement", ch. 3): after an impulse response's direct path, a room's
energy decays exponentially, 60 dB in RT60 seconds, the same in every note. So the power that arrives
LATE_S or later after a sound is the power heard LATE_S earlier, 60 * LATE_S / RT60 dB down; subtracting
that from each STFT bin's power (a floor of GAIN_FLOOR_DB) leaves the new sound: attacks, and the
direct part of held notes, while tails die at once.

RT60 is estimated blindly from the music (after Löllmann et al. 2010, who fit free decays): sound in a
room cannot die away faster than the room lets it, so the fastest clean exponential decays the bands
show (where a note stops or moves on) are the room's. Where the fastest decays are quicker than
MIN_RT60_S (a dry recording: a note's own release), nothing is subtracted. A synth's or sampler's own
reverb counts as a room (FluidSynth's default reverb reads about 0.8 s).
"""

from __future__ import annotations

import numpy as np

N_FFT, HOP = 1024, 256
LATE_S = 0.1  # the late reverberation: from this long after the sound (Habets takes 50 ms for speech; on
# melodies 100 ms found more notes, dry and in rooms: a note's first 100 ms stay its own)
GAIN_FLOOR_DB = -20.0  # the most a bin is attenuated (deeper gains leave musical noise)
N_BANDS = 48  # mel bands whose decays are fitted (wider than a bin: a reverberant tail's bin fluctuates)
BAND_HZ = (100.0, 6000.0)
DECAY_S = 0.6  # the window over which a band's level is fitted by a line
FIT_DB = 2.5  # ... which must fit within this RMS error (a clean exponential decay)
DECAY_MIN_DB = 12.0  # ... fall at least this far across the window
FLOOR_DB = 60.0  # ... and stay above this far under the loudest band level (the noise floor)
FASTEST = 10  # percentile of the fitted decay times that is the room's (the fastest, less outliers)
MIN_RT60_S = 0.3  # a shorter estimate is an instrument's release in a dry recording: no subtraction
MAX_RT60_S = 4.0  # the longest room believed (a longer "decay" is a note fading on its own)


def decay_time(power: np.ndarray, sr: int, hop: int = HOP) -> float:
    """The room's RT60 in seconds estimated from a power spectrogram [N_FFT // 2 + 1, frames] (hop
    ``hop`` at ``sr``): each mel band's level (dB) is fitted by a line over DECAY_S windows; the
    windows that fall by DECAY_MIN_DB or more along a clean line (within FIT_DB) above the noise
    floor are free decays, and the FASTEST percentile of their decay times is the room's. 0.0 where
    no free decay is found."""
    import librosa

    fb = librosa.filters.mel(sr=sr, n_fft=2 * (power.shape[0] - 1), n_mels=N_BANDS, fmin=BAND_HZ[0], fmax=BAND_HZ[1])
    level = 10 * np.log10(np.maximum(fb @ power, 1e-12))
    w = 2 * max(1, int(round(DECAY_S * sr / hop / 2))) + 1  # odd: the filters centre on the window
    if level.shape[1] < w:
        return 0.0
    # least-squares line over each window of w frames (moving sums: all bands and windows at once)
    from scipy.ndimage import correlate1d, uniform_filter1d

    k = np.arange(w) - (w - 1) / 2
    mid = slice(w // 2, level.shape[1] - w // 2)  # windows wholly inside the clip
    mean = uniform_filter1d(level, w, axis=1)[:, mid]
    square = uniform_filter1d(level ** 2, w, axis=1)[:, mid]
    slope = correlate1d(level, k, axis=1)[:, mid] / (k @ k)  # dB per frame
    error = np.sqrt(np.maximum(square - mean ** 2 - slope ** 2 * (k @ k) / w, 0.0))
    end = mean + slope * k[-1]  # the fitted level at the window's end
    drop = -slope * (w - 1)
    free = (drop >= DECAY_MIN_DB) & (error <= FIT_DB) & (end > level.max() - FLOOR_DB)
    if not free.any():
        return 0.0
    rt60 = 60.0 / (-slope[free] * sr / hop)
    return float(np.percentile(rt60, FASTEST))


def _stft(y: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.stft(y, n_fft=N_FFT, hop_length=HOP, center=True)


def stft_power(y: np.ndarray) -> np.ndarray:
    """The power spectrogram [N_FFT // 2 + 1, frames] that ``decay_time`` reads, of mono ``y``."""
    return np.abs(_stft(y)) ** 2


def suppress_late_reverb(y: np.ndarray, sr: int, rt60_s: float | None = None) -> np.ndarray:
    """Mono ``y`` with its late reverberation subtracted (module docstring); ``y`` itself where the
    room's RT60 (``rt60_s``, else ``decay_time``) is under MIN_RT60_S or over MAX_RT60_S."""
    import librosa

    spec = _stft(y)
    power = np.abs(spec) ** 2
    rt60 = decay_time(power, sr) if rt60_s is None else rt60_s
    if not MIN_RT60_S <= rt60 <= MAX_RT60_S:
        return y
    lag = max(1, int(round(LATE_S * sr / HOP)))
    late = np.zeros_like(power)
    late[:, lag:] = power[:, :-lag] * 10 ** (-6.0 * lag * HOP / sr / rt60)  # 60 dB per RT60, in power
    gain = np.sqrt(np.maximum(1.0 - late / np.maximum(power, 1e-12), 10 ** (GAIN_FLOOR_DB / 10)))
    return librosa.istft(spec * gain, hop_length=HOP, n_fft=N_FFT, length=y.size).astype(np.float32)
