"""Audio -> MIDI: a MONOPHONIC melody (a constant-Q harmonic-sum pitch tracker) plus a chord track (chroma templates).

    t = transcribe(wave, sr, bpm=120)           # wave float [C, S] or [S]
    t.melody                                    # [midi.Note]: one note at a time, never two at once
    t.chords                                    # [Chord(start, end, root, quality)], e.g. label "Am"
    t.write("take.mid")                         # type-1 file: conductor, "melody", "chords" tracks

The melody is monophonic: the tracker follows ONE fundamental, so in polyphonic audio it gives the
most salient line (usually the top voice or the loudest instrument), never the chords; the harmony is
only in the chord track.

Steps (at 22050 Hz mono; the pitch tracker at 11025 Hz):
0. Late reverberation suppressed (``m2ugen.dereverb``): the room's decay time estimated from the
   fastest free decays, and each STFT bin's power heard 100 ms earlier, decayed at that rate,
   subtracted (a note's tail no longer masks the next attack). Nothing changes in a dry recording.
   Notes are found on the suppressed audio; each then lasts while the unsuppressed track holds its pitch.
1. Pitch (``pitch_track``): a constant-Q spectrum (3 bins per semitone, 11.6 ms frames) on a log
   scale; each candidate fundamental from ``fmin`` to ``fmax`` (default C2..C7) scores the weighted
   sum of its first 5 partials and must have energy at its own frequency; frames 40 dB under the
   loudest, or within 3 dB of the clip's noise floor (its quietest 2 % of frames), are unvoiced.
   Rounded to semitones and median-filtered over about 60 ms.
2. Notes: librosa's spectral-flux onsets where the level then climbs (a release is not an attack),
   each moved back to where its level began to rise. A pitch change within 70 ms of an onset is moved
   onto it; voiced frames rising out of silence less than 120 ms before an onset are the tracker's
   pre-echo, not a note. Then two small onset models (``onset_probability``: MLPs over the energy at
   the note's own partials and the whole spectrum's, 46 ms STFT frames around the frame; fitted by
   benchmarks/fit_onsets.py on corpus melodies rendered on 14 GM instruments): ``restrike`` splits a
   tracked pitch where the same pitch is struck again (a bow change dips and swells, a struck note
   climbs; where the level hides it, the partials' phase starts again: ``pitch_novelty``) and the
   note goes on; ``onset`` places each note's start where its partials begin (from
   139 ms before to 46 ms after the tracked start: a slow attack's level peaks late). Runs shorter than
   ``min_note_s`` are dropped; a note's pitch is the median of its frames. Last, a third model,
   ``note`` (an MLP over ``note_features``, fitted on what the tracker finds in renders of melodies,
   struck and plucked timbres among them), drops tracked notes that were never played: a decaying
   note's tail tracked again, a subharmonic or the next attack heard early in a quiet tail, noise.
3. Velocities from the level: the note's peak 23 ms RMS in dB below the loudest note, 60 dB mapped onto 1..127.
4. Chords: CQT chroma averaged over fixed windows, one beat of the given ``bpm`` (default 120) from
   0 s, matched by cosine similarity against major and minor triad templates (more qualities with
   ``qualities=``); quiet windows are no-chord; equal neighbours merge. The file is written at ``bpm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from m2ugen.midi import PITCH_CLASSES, Note, write_midi

ANALYSIS_SR = 22050
MIN_SECONDS = 0.1  # shorter audio cannot be transcribed (refused at submit by the server)
HOP = 256
PITCH_SR = 11025  # the constant-Q pitch tracker's rate (C1..C8 fits under its Nyquist)
PITCH_BINS = 7 * 36  # C1..B7, 3 bins per semitone
PARTIALS = 5
PARTIAL_WEIGHTS = (1.0, 0.8, 0.6, 0.5, 0.4)
FUNDAMENTAL_DROP = 2.5  # log1p units (about 20 dB) a fundamental may lie under the frame's strongest bin
VOICED_DB = 40.0  # frames this far under the loudest frame are unvoiced
NOISE_FLOOR_PERCENTILE = 2.0  # ... and frames under NOISE_MARGIN_DB above this percentile of the clip's
NOISE_MARGIN_DB = 3.0         # frame levels (a steady noise floor: dev melodies in pink noise 20 dB under)
ONSET_DELTA = 0.2  # librosa's peak-picking threshold over the local mean
ATTACK_RATIO = 1.1  # an onset counts where the level 0-50 ms later exceeds the level just before by this
PRE_ECHO_S = 0.12  # voiced frames out of silence this soon before an onset belong to no note
NEAR_S = 0.07  # a pitch change this close to an onset is moved onto it
RISE_MAX_S = 0.15  # an onset is moved back at most this far, to where its level began to rise
SPLIT_P = 0.85  # the restrike model's probability that splits one tracked pitch into two notes
RECOVER_FRAMES, RECOVER_DB = 20, 10.0  # ... where the pitch's partials come back within 10 dB in 230 ms
MOVE_P = 0.05  # ... that moves a note's start (searched MOVE_BACK frames before to MOVE_LATER after)
MOVE_BACK, MOVE_LATER = 12, 4
KEEP_P = 0.25  # the keep model's probability under which a tracked note is dropped (no note was played)
CLIP_EDGE = 2  # frames: a note tracked from here or before was sounding when the clip began
EDGE_QUIET_DB = -30.0  # such a note is kept if no quieter than this re the clip's loudest note
# chord qualities: intervals above the root; the template is the set of pitch classes
QUALITIES = {"": (0, 4, 7), "m": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "7": (0, 4, 7, 10),
             "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10)}
DEFAULT_QUALITIES = ("", "m")
MELODY_CHANNEL, CHORD_CHANNEL = 0, 1
CHORD_OCTAVE_ROOT = 48  # C3: chord roots are voiced from here up


@dataclass(frozen=True)
class Chord:
    start: float
    end: float
    root: int  # pitch class 0..11
    quality: str  # a key of QUALITIES ("" major, "m" minor, ...)

    @property
    def label(self) -> str:
        return PITCH_CLASSES[self.root] + self.quality

    def notes(self, velocity: int = 80) -> list[Note]:
        return [Note(self.start, self.end, CHORD_OCTAVE_ROOT + self.root + iv, velocity, CHORD_CHANNEL)
                for iv in QUALITIES[self.quality]]


@dataclass
class Transcription:
    melody: list[Note]
    chords: list[Chord]
    bpm: float
    time_signature: tuple[int, int] = (4, 4)
    timings: dict[str, float] = field(default_factory=dict)

    def to_midi(self, path: str | Path | None = None):
        """Type-1 mido.MidiFile: conductor track (tempo, time signature), "melody", "chords"."""
        chord_notes = [n for c in self.chords for n in c.notes()]
        return write_midi({"melody": self.melody, "chords": chord_notes}, path, bpm=self.bpm,
                          time_signature=self.time_signature)

    def write(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if p.suffix.lower() not in (".mid", ".midi"):
            raise ValueError(f"out: a MIDI file name ends in .mid, got {p.name!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.to_midi(p)
        return p


# ---------------------------------------------------------------------------------------------


def _mono(wave, sr) -> np.ndarray:
    """float [C, S] / [S] at ``sr`` -> float32 mono at ANALYSIS_SR; ValueError naming what is wrong."""
    w = np.asarray(wave, dtype=np.float32)
    if w.ndim == 2:
        from m2ugen.spectrum import downmix

        w = downmix(w).astype(np.float32)
    if w.ndim != 1:
        raise ValueError(f"audio: expected [channels, samples] or [samples], got shape {tuple(np.shape(wave))}")
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ValueError(f"audio: sample rate must be a positive int, got {sr!r}")
    if w.size == 0:
        raise ValueError("audio: empty")
    if not np.isfinite(w).all():
        raise ValueError("audio: contains NaN or inf")
    if w.size / sr < MIN_SECONDS:
        raise ValueError(f"audio: too short ({w.size / sr * 1000:.0f} ms; transcription needs at least "
                         f"{MIN_SECONDS * 1000:.0f} ms)")
    if sr != ANALYSIS_SR:
        import soxr

        w = soxr.resample(w, sr, ANALYSIS_SR).astype(np.float32)
    return w


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values: [(value, first, last_exclusive)]."""
    if labels.size == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [labels.size]])
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def pitch_track(y: np.ndarray, fmin_hz: float, fmax_hz: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(MIDI pitch per frame, NaN where unvoiced; frame level in dB re the loudest frame; the clip's
    tuning in semitones off A440, which the pitches are already corrected for) at HOP.

    Constant-Q magnitudes at 11025 Hz (3 bins per semitone from C1) on a log scale; each candidate
    fundamental scores the sum of its first PARTIALS partials (weights falling with the partial
    number), and the best candidate between ``fmin_hz`` and ``fmax_hz`` is the frame's pitch
    (parabolic refinement between bins, read at the clip's tuning); a candidate whose own bin is
    weak (FUNDAMENTAL_DROP under the frame's strongest) cannot win. Frames more than VOICED_DB under
    the loudest are unvoiced, and so are frames within NOISE_MARGIN_DB of the clip's noise floor (its
    NOISE_FLOOR_PERCENTILE quietest frames: in a dry clip with rests far under VOICED_DB)."""
    import librosa
    import soxr

    from m2ugen.analysis import _tuning

    y11 = soxr.resample(y, ANALYSIS_SR, PITCH_SR).astype(np.float32)
    fmin_c = librosa.note_to_hz("C1")
    mag = np.abs(librosa.cqt(y11, sr=PITCH_SR, hop_length=HOP // 2, fmin=fmin_c, n_bins=PITCH_BINS,
                             bins_per_octave=36))
    tuning = _tuning(mag)
    level = 20 * np.log10(np.maximum(mag.sum(axis=0), 1e-12))
    level -= level.max()
    log_mag = np.log1p(1000.0 * mag / max(float(mag.max()), 1e-12))
    lo = max(0, int(np.floor(36 * np.log2(fmin_hz / fmin_c))))
    hi = min(PITCH_BINS, int(np.ceil(36 * np.log2(fmax_hz / fmin_c))) + 1)
    sal = np.zeros((hi - lo, mag.shape[1]))
    for h, w in zip(range(1, PARTIALS + 1), PARTIAL_WEIGHTS):
        off = int(round(36 * np.log2(h)))
        top = min(hi + off, PITCH_BINS)
        sal[: top - lo - off] += w * log_mag[lo + off: top]
    # a candidate needs its own fundamental: within FUNDAMENTAL_DROP (log units) of the frame's
    # strongest bin (a subharmonic gathers partials but has nothing at its own frequency)
    strongest = log_mag.max(axis=0, keepdims=True)
    sal = np.where(log_mag[lo:hi] >= strongest - FUNDAMENTAL_DROP, sal, 0.0)
    best = np.argmax(sal, axis=0)
    a = sal[np.maximum(best - 1, 0), np.arange(sal.shape[1])]
    b = sal[best, np.arange(sal.shape[1])]
    c = sal[np.minimum(best + 1, sal.shape[0] - 1), np.arange(sal.shape[1])]
    denom = a - 2 * b + c
    frac = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
    bins = lo + best + frac - tuning * 3
    midi = 24.0 + bins / 3.0  # C1 = MIDI 24
    # a steady noise floor (hiss, air, an audience) is no note: the clip's quietest frames show its level
    floor = float(np.percentile(level, NOISE_FLOOR_PERCENTILE)) + NOISE_MARGIN_DB
    midi = np.where(level > max(-VOICED_DB, floor), midi, np.nan)
    n = min(midi.size, int(np.ceil(y.size / HOP)) + 1)
    return midi[:n], level[:n], tuning


def melody_notes(y: np.ndarray, *, fmin: str | float = "C2", fmax: str | float = "C7", min_note_s: float = 0.06,
                 velocity_range_db: float = 60.0, dereverb: bool = True) -> list[Note]:
    """The monophonic melody of mono ``y`` at ANALYSIS_SR (see the module docstring, steps 0-3)."""
    found, features = note_candidates(y, fmin=fmin, fmax=fmax, min_note_s=min_note_s, dereverb=dereverb)
    if found:  # the keep model drops what was tracked but never played (see note_features); a note already
        # sounding when the clip begins shows no attack to judge (none in its training): kept unless quiet
        floor = max(c.peak for c in found) * 10 ** (EDGE_QUIET_DB / 20)
        found = [c for c, p in zip(found, onset_probability(features, "note"))
                 if p >= KEEP_P or (c.first <= CLIP_EDGE and c.peak >= floor)]
    if not found:
        return []
    loudest = max(c.peak for c in found)
    notes = []
    for i, c in enumerate(found):
        start, end = c.first * HOP / ANALYSIS_SR, c.last * HOP / ANALYSIS_SR
        if i + 1 < len(found):
            end = min(end, found[i + 1].first * HOP / ANALYSIS_SR)  # monophonic: a note ends where the next begins
        db = 20 * math.log10(max(c.peak, 1e-9) / max(loudest, 1e-9))
        velocity = int(round(1 + 126 * min(1.0, max(0.0, 1 + db / velocity_range_db))))
        if end > start:
            notes.append(Note(round(start, 6), round(end, 6), int(np.clip(c.pitch, 0, 127)), max(1, velocity),
                              MELODY_CHANNEL))
    return notes


@dataclass(frozen=True)
class Candidate:
    """A tracked note before the keep model has judged it: frames [first, last) on the HOP grid."""
    first: int
    last: int
    pitch: int
    peak: float  # the highest 23 ms RMS after the tracked start
    onset_p: float  # the onset model's best probability near its start (0 where none was searched)


def note_candidates(y: np.ndarray, *, fmin: str | float = "C2", fmax: str | float = "C7",
                    min_note_s: float = 0.06, dereverb: bool = True) -> tuple[list[Candidate], np.ndarray]:
    """(the tracked notes of mono ``y``, their ``note_features``): steps 0-2 of the module docstring
    (step 0 only with ``dereverb``)."""
    import librosa
    import scipy.signal

    heard = y
    if dereverb:
        from m2ugen.dereverb import suppress_late_reverb

        y = suppress_late_reverb(y, ANALYSIS_SR)
    fmin_hz = librosa.note_to_hz(fmin) if isinstance(fmin, str) else float(fmin)
    fmax_hz = librosa.note_to_hz(fmax) if isinstance(fmax, str) else float(fmax)
    midi_f, level, tuning = pitch_track(y, fmin_hz, fmax_hz)
    n = midi_f.size
    labels = np.where(np.isfinite(midi_f), np.round(np.nan_to_num(midi_f, nan=-1.0)), -1).astype(np.int64)
    labels = scipy.signal.medfilt(labels, kernel_size=5).astype(np.int64)  # removes blips under ~35 ms

    # onsets: spectral flux peaks, each moved back to the start of its rise in level (a slow attack's
    # flux peaks late; the note began where the level started to climb)
    oenv = librosa.onset.onset_strength(y=y, sr=ANALYSIS_SR, hop_length=HOP)
    onset_frames = librosa.onset.onset_detect(onset_envelope=oenv, sr=ANALYSIS_SR, hop_length=HOP,
                                              backtrack=False, units="frames", delta=ONSET_DELTA)
    short = librosa.feature.rms(y=y, frame_length=512, hop_length=HOP)[0]
    short = np.pad(short, (0, max(0, n - short.size)))[:n]
    # an onset is an attack only where the level then climbs (a note's release also makes flux)
    onset_frames = np.array([_rise_start(short, int(f)) for f in onset_frames
                             if f < n and short[f:f + 5].max() >= ATTACK_RATIO * short[max(f - 2, 0)]], dtype=int)

    # pre-echo: the tracker's long low-pitch windows hear a note up to ~100 ms before its attack; voiced
    # frames that rise out of silence shortly before an onset are not a note of their own
    pre = round(PRE_ECHO_S * ANALYSIS_SR / HOP)
    for f in onset_frames:
        i = f
        while i > 0 and labels[i - 1] >= 0 and f - i < pre:
            i -= 1
        if i < f and (i == 0 or labels[i - 1] < 0):  # a run of at most `pre` frames out of silence
            labels[i:f] = -1
    change = np.concatenate([[True], labels[1:] != labels[:-1]])
    near = round(NEAR_S * ANALYSIS_SR / HOP)
    for f in onset_frames:
        # a pitch change within reach of an onset happens at the onset (the tracker's long low-pitch
        # windows see a new note before or after its attack)
        lo, hi = max(1, f - near), min(n, f + near + 1)
        changes = np.flatnonzero(change[lo:hi]) + lo
        changes = changes[labels[changes] >= 0]
        if changes.size:
            c = int(changes[np.argmin(np.abs(changes - f))])
            if f < c:
                labels[f:c] = labels[c]
            elif f > c:
                labels[c:f] = labels[c - 1]
    min_frames = max(1, round(min_note_s * ANALYSIS_SR / HOP))
    spec = stft(y)
    mag = np.abs(spec)
    total = np.pad(total_energy(mag), (0, max(0, n - mag.shape[1])), mode="edge")[:n]
    energies: dict[int, np.ndarray] = {}

    def energy(p: int) -> np.ndarray:  # the pitch's partials, at the clip's tuning
        if p not in energies:
            energies[p] = np.pad(pitch_energy(mag, p + tuning), (0, max(0, n - mag.shape[1])), mode="edge")[:n]
        return energies[p]

    novelties: dict[int, np.ndarray] = {}

    def novelty(p: int) -> np.ndarray:  # the phase novelty of the pitch's partials (once per pitch)
        if p not in novelties:
            novelties[p] = np.pad(pitch_novelty(spec, p + tuning), (0, max(0, n - mag.shape[1])), mode="edge")[:n]
        return novelties[p]

    # re-struck notes (a bowed or blown note dips and swells again, a struck one climbs): the restrike
    # model's peaks inside one pitch, at least a shortest note from either end and from each other
    reattack = np.zeros(n, dtype=bool)
    boundary = np.concatenate([[True], labels[1:] != labels[:-1]])
    for _, first, last in _runs(np.cumsum(boundary)):
        pitch = labels[first]
        if pitch < 0 or last - first < 2 * min_frames:
            continue
        frames = np.arange(first + min_frames, last - min_frames + 1)
        prob = onset_probability(onset_features(energy(int(pitch)), total, frames, novelty(int(pitch))), "restrike")
        for i in np.argsort(-prob):
            if prob[i] < SPLIT_P:
                break
            f = int(frames[i])
            e = energy(int(pitch))
            # a note that goes on: its partials come back near their level before the dip (a note's
            # end, where the tracker holds the pitch a little longer, dies away)
            goes_on = e[f + 3:f + RECOVER_FRAMES].max() >= e[max(f - RECOVER_FRAMES, 0):f + 1].max() - RECOVER_DB
            if goes_on and not reattack[max(f - min_frames, 0): f + min_frames + 1].any():
                reattack[f] = True
    boundary = reattack | boundary  # the labels have not changed since
    segment_id = np.cumsum(boundary)
    found: list[Candidate] = []
    prev_first = -min_frames
    for _, first, last in _runs(segment_id):
        seg = labels[first:last]
        if seg.size == 0 or np.mean(seg >= 0) < 0.5:
            continue
        voiced = midi_f[first:last][np.isfinite(midi_f[first:last])]
        if voiced.size < min_frames:
            continue
        pitch = int(np.round(np.median(voiced)))
        # the level over 23 ms windows, after the tracked start (the previous note's release overlaps it)
        peak = float(short[min(first + 1, last - 1):last].max())
        # the onset where the model finds the note's own partials starting, near the tracked start
        frames = np.arange(max(first - MOVE_BACK, prev_first + min_frames, 0),
                           min(first + MOVE_LATER, last - min_frames) + 1)
        onset_p = 0.0
        if frames.size:
            prob = onset_probability(onset_features(energy(pitch), total, frames))
            onset_p = float(prob.max())
            if onset_p >= MOVE_P:
                first = int(frames[int(np.argmax(prob))])
        prev_first = first
        found.append(Candidate(first, last, pitch, peak, onset_p))
    if not found:
        return [], np.zeros((0, NOTE_FEATURES), dtype=np.float32)
    features = note_features(found, energy, total, level)
    if heard is not y:
        # a note lasts while its pitch is heard: the suppression also takes a struck note's own decay
        # for a room's and would end it early (its features are judged on the suppressed track)
        held = np.round(pitch_track(heard, fmin_hz, fmax_hz)[0])
        found = [replace(c, last=_held_until(held, c.pitch, c.last)) for c in found]
    return found, features


def _held_until(held: np.ndarray, pitch: int, last: int) -> int:
    """The frame after the run of ``pitch`` in the track ``held`` that goes on from frame ``last``."""
    end = last
    while end < held.size and held[end] == pitch:
        end += 1
    return end


NOTE_FEATURES = 15


def note_features(found: list[Candidate], energy: Callable[[int], np.ndarray], total: np.ndarray,
                  level: np.ndarray) -> np.ndarray:
    """[len(found), F] features of "this tracked note was played": the onset model's confidence at its
    start, its length, its loudness (re the clip's loudest note), its own partials' share of the
    spectrum and their climb into its start, the frame level, its register, and beside the previous and
    the next note: the gap, its loudness re theirs and how much of their partials sound under it. A
    decaying note's tail tracked again, a subharmonic under a fading note or noise before an attack:
    none has partials of its own that climb, and each is quiet beside a note that does."""
    n = total.size
    loudest = max(c.peak for c in found)
    rows = []
    for i, c in enumerate(found):
        e = energy(c.pitch)
        a, b = c.first, max(c.last, c.first + 1)
        row = [c.onset_p, math.log(max(b - a, 1) * HOP / ANALYSIS_SR),
               max(-60.0, 20 * math.log10(max(c.peak, 1e-9) / max(loudest, 1e-9))) / 20,
               float(np.median(np.clip(e[a:b] - total[a:b], -40, 5))) / 10,
               min(float(e[a:min(a + 6, n)].max()) - float(e[max(a - 8, 0):a + 1].min()), 40.0) / 10,
               float(np.nanmedian(level[a:b])) / 40 if np.isfinite(level[a:b]).any() else -1.5,
               (c.pitch - 60) / 12]
        for j in (i - 1, i + 1):
            if 0 <= j < len(found):
                o = found[j]
                gap = (c.first - o.last) if j < i else (o.first - c.last)
                under = np.clip(energy(o.pitch)[a:b] - e[a:b], -30, 30) if o.pitch != c.pitch else np.zeros(1)
                row += [1.0, min(max(gap, 0) * HOP / ANALYSIS_SR, 1.0),
                        max(-60.0, 20 * math.log10(max(c.peak, 1e-9) / max(o.peak, 1e-9))) / 20,
                        float(np.median(under)) / 10]
            else:
                row += [0.0, 1.0, 0.0, 0.0]
        rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(-1, NOTE_FEATURES)


# ---------------------------------------------------------------------------------------------- onset model

ONSET_NFFT = 1024  # the STFT of the per-pitch energies (46 ms at 22050 Hz; frames on the HOP grid)
ONSET_PARTIALS = 5
E_LAGS = (-24, -16, -8, -5, -3, -2, -1, 1, 2, 3, 5, 8, 12, 18, 24, 32)  # frames: the pitch's energy trajectory around a frame
T_LAGS = (-3, -1, 1, 3, 6)  # frames: the whole spectrum's energy trajectory
ONSET_MODEL = Path(__file__).with_name("assets") / "onset_model.json"


def stft(y: np.ndarray) -> np.ndarray:
    """The complex STFT [ONSET_NFFT // 2 + 1, frames] of mono ``y`` at ANALYSIS_SR, frames on the HOP grid."""
    import librosa

    return librosa.stft(y, n_fft=ONSET_NFFT, hop_length=HOP, center=True)


def _partial_bins(n_bins: int, pitch: float) -> np.ndarray:
    """The STFT bins of ``pitch``'s first ONSET_PARTIALS partials, each +-1 bin."""
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    bins = []
    for h in range(1, ONSET_PARTIALS + 1):
        k = int(round(h * f0 * ONSET_NFFT / ANALYSIS_SR))
        if k + 1 >= n_bins:
            break
        bins += range(max(k - 1, 0), k + 2)
    return np.asarray(bins, dtype=np.int64)


def pitch_energy(mag: np.ndarray, pitch: float) -> np.ndarray:
    """dB per frame of the energy at ``pitch``'s first ONSET_PARTIALS partials (each +-1 bin)."""
    return 20 * np.log10(np.maximum(mag[_partial_bins(mag.shape[0], pitch)].sum(axis=0), 1e-6))


def pitch_novelty(spec: np.ndarray, pitch: float) -> np.ndarray:
    """Per frame, how far ``pitch``'s partials (complex STFT ``spec``) depart from a steady continuation
    of the two frames before (same magnitude, same phase advance: complex-domain onset detection, Bello
    et al. 2004), over their magnitude: about 0 for a held tone, up to 2 where a new tone starts with
    its own phase (a bow change or a tongued repeat that barely dips in level)."""
    x = spec[_partial_bins(spec.shape[0], pitch)]
    out = np.zeros(spec.shape[1])
    if x.shape[0] == 0 or x.shape[1] < 3:
        return out
    prev, before = x[:, 1:-1], x[:, :-2]
    target = np.abs(prev) * np.exp(1j * (2 * np.angle(prev) - np.angle(before)))
    out[2:] = np.abs(x[:, 2:] - target).sum(axis=0) / (np.abs(x[:, 2:]).sum(axis=0) + np.abs(prev).sum(axis=0) + 1e-9)
    return out


def total_energy(mag: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(mag.sum(axis=0), 1e-6))


N_LAGS = (-2, -1, 0, 1, 2, 3)  # frames: the pitch's novelty around a frame (the restrike model's)


def onset_features(e: np.ndarray, total: np.ndarray, frames: np.ndarray,
                   novelty: np.ndarray | None = None) -> np.ndarray:
    """[len(frames), F] features of "a note of this pitch starts at frame t": the pitch's energy ``e``
    (dB) and the spectrum's ``total`` (dB) around t, relative to their values at t, in 10 dB units,
    plus the pitch's share of the frame, its level under the clip's loudest frame, the fall into t
    and the climb after it (a re-struck sustained note dips, then swells; a new pitch climbs); with
    ``novelty`` (``pitch_novelty``), its values around t and their rise over the 100 ms before."""
    top = float(total.max())
    e = np.maximum(e, top - 80.0)
    total = np.maximum(total, top - 80.0)
    n = e.size
    frames = np.asarray(frames, dtype=np.int64)

    def at(x, lag):
        return x[np.clip(frames + lag, 0, n - 1)]

    def window(x, a, b, fn):
        return fn(np.stack([at(x, k) for k in range(a, b + 1)]), axis=0)

    e0, t0 = at(e, 0), at(total, 0)
    cols = [np.clip(at(e, k) - e0, -30, 30) / 10 for k in E_LAGS]
    cols += [np.clip(at(total, k) - t0, -30, 30) / 10 for k in T_LAGS]
    cols += [np.clip(e0 - t0, -40, 5) / 10, (e0 - top) / 40]
    low = window(e, 0, 6, np.min)
    cols += [(window(e, -3, 0, np.max) - low) / 10, (window(e, 1, 12, np.max) - low) / 10]
    if novelty is not None:
        cols += [at(novelty, k) for k in N_LAGS]
        cols += [window(novelty, -1, 2, np.max) - window(novelty, -12, -4, np.median)]
    return np.stack(cols, axis=1).astype(np.float32)


_MODELS: dict = {}


def onset_probability(features: np.ndarray, kind: str = "onset") -> np.ndarray:
    """P(a note starts) per row of ``features`` from the small MLPs in ``assets/onset_model.json``
    (fitted by benchmarks/fit_onsets.py on rendered corpus melodies): ``onset`` places a note's start,
    ``restrike`` finds the same pitch struck again inside a tracked note; ``note`` (over ``note_features``)
    judges whether a tracked note was played."""
    if kind not in _MODELS:
        import json

        raw = json.loads(ONSET_MODEL.read_text())["models"]
        for k, weights in raw.items():
            _MODELS.setdefault(k, {name: np.asarray(v, dtype=np.float32) for name, v in weights.items()})
    m = _MODELS[kind]
    if features.shape[1] != m["mean"].shape[0]:  # a stale asset: say so, not a shape error deep in numpy
        raise ValueError(f"{ONSET_MODEL.name}: the {kind!r} model takes {m['mean'].shape[0]} features, got "
                         f"{features.shape[1]}; refit it (benchmarks/fit_onsets.py)")
    h = np.tanh((features - m["mean"]) / m["std"] @ m["w1"] + m["b1"])
    z = h @ m["w2"] + m["b2"]
    return 1.0 / (1.0 + np.exp(-z[:, 0]))


def _rise_start(level: np.ndarray, frame: int) -> int:
    """The frame where the level's climb into ``frame`` began: back while it keeps falling, at most
    RISE_MAX_S, stopping where it is within 10 % of the local minimum reached."""
    limit = max(0, frame - round(RISE_MAX_S * ANALYSIS_SR / HOP))
    i = frame
    while i > limit and level[i - 1] < level[i]:
        i -= 1
    return i


def chord_windows(length_s: float, bpm: float, beats_per_window: int = 1) -> np.ndarray:
    """Window edges in seconds: every ``beats_per_window`` beats of ``bpm`` from 0 s, then the end."""
    if not (isinstance(beats_per_window, int) and beats_per_window >= 1):
        raise ValueError(f"beats_per_window must be an int >= 1, got {beats_per_window!r}")
    step = 60.0 / bpm * beats_per_window
    return np.concatenate([np.arange(0.0, length_s - 1e-9, step), [length_s]])


def chord_track(y: np.ndarray, edges: np.ndarray, qualities=DEFAULT_QUALITIES, *, silence_db: float = -40.0) -> list[Chord]:
    """Best template per window (cosine similarity with the mean CQT chroma); windows whose median
    RMS is ``silence_db`` below the loudest frame have no chord."""
    import librosa

    unknown = [q for q in qualities if q not in QUALITIES]
    if unknown:
        raise ValueError(f"qualities: unknown {unknown}; known: {sorted(QUALITIES)}")
    hop = 512
    chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_SR, hop_length=hop)  # [12, T]
    rms = librosa.feature.rms(y=y, hop_length=hop)[0]
    names, templates = [], []
    for q in qualities:
        for root in range(12):
            t = np.zeros(12)
            t[[(root + iv) % 12 for iv in QUALITIES[q]]] = 1.0
            names.append((root, q))
            templates.append(t / np.linalg.norm(t))
    templates = np.stack(templates)
    loud = max(float(rms.max()), 1e-9)
    chords: list[Chord] = []
    for a, b in zip(edges[:-1], edges[1:]):
        f0 = min(int(a * ANALYSIS_SR / hop), chroma.shape[1] - 1)
        f1 = max(f0 + 1, int(b * ANALYSIS_SR / hop))
        if 20 * math.log10(max(float(np.median(rms[f0:f1])), 1e-12) / loud) < silence_db:
            continue
        c = chroma[:, f0:f1].mean(axis=1)
        if not np.isfinite(c).all() or c.max() <= 0:
            continue
        root, q = names[int(np.argmax(templates @ (c / np.linalg.norm(c))))]
        if chords and chords[-1].root == root and chords[-1].quality == q and abs(chords[-1].end - a) < 1e-6:
            chords[-1] = Chord(chords[-1].start, float(b), root, q)
        else:
            chords.append(Chord(float(a), float(b), root, q))
    return chords


def transcribe(wave, sr: int, *, bpm: float = 120.0, chords: bool = True, qualities=DEFAULT_QUALITIES,
               fmin: str | float = "C2", fmax: str | float = "C7", beats_per_window: int = 1, dereverb: bool = True,
               on_progress: Callable[[str, float], None] | None = None) -> Transcription:
    """Audio ``[C, S]`` (or ``[S]``) at ``sr`` -> Transcription (monophonic melody + chords per
    ``beats_per_window`` beats of ``bpm``, the tempo of the written file; pass the project's).
    ``dereverb``: the melody's step 0 (the late reverberation subtracted; off for a dry struck instrument).
    ``on_progress(stage, fraction)`` with stages melody, chords, done."""
    import time

    report = on_progress or (lambda stage, fraction: None)
    if not (isinstance(bpm, (int, float)) and math.isfinite(bpm) and 1 <= bpm <= 1000):
        raise ValueError(f"bpm must be within 1..1000, got {bpm!r}")
    timings = {}
    y = _mono(wave, sr)
    report("melody", 0.0)
    t0 = time.perf_counter()
    melody = melody_notes(y, fmin=fmin, fmax=fmax, dereverb=dereverb)
    timings["melody"] = time.perf_counter() - t0
    report("chords", 0.6)
    t0 = time.perf_counter()
    found = chord_track(y, chord_windows(y.size / ANALYSIS_SR, bpm, beats_per_window), qualities) if chords else []
    timings["chords"] = time.perf_counter() - t0
    report("done", 1.0)
    return Transcription(melody, found, float(bpm), timings=timings)
