"""The rendered MIR benchmark set of ``bench_mir.py``: music21 corpus scores -> MIDI -> FluidSynth -> WAV.

Each item is an excerpt (about 25 s) of a corpus score, played at a tempo chosen here (one steady tempo,
no ritardandi or fermatas), transposed by a few semitones, on a General MIDI instrument set, with or
without a simple GM drum track (channel 10), and rendered by FluidSynth with the FluidR3 GM soundfont
(Debian ``fluidsynth`` and ``fluid-soundfont-gm``; ``./dev bench-setup`` installs them).
Melody items play the top line (soprano / first violin) alone, on one melodic instrument.

Ground truth comes from the score, never from audio:
- tempo: the one set here (quarter notes per minute; only 3/4 and 4/4 excerpts are used, so the beat is
  the quarter note); beats: every quarter note from the first bar line's phase; downbeats: the bar lines
  (a pickup bar is skipped; excerpts stop at the first bar that breaks the regular grid).
- meter: the time signature's numerator (3 or 4).
- key: the piece's home key (every excerpt starts at the piece's beginning), decided by music theory
  and never by an audio key estimator. A piece's tonic is its final: the pitch class of its last bass
  note (the lowest note of the closing sonority: the root of the final cadence). A key signature names
  two keys, a major and its relative minor; where the final is the tonic of one of them (``key_source:
  "final"``), or a fifth below the minor tonic (a Dorian minor written with one flat too few, Bach's G
  minor with one flat: ``"modal"``; no major or minor piece ends on its ii or iv), that final is the
  tonic, and the mode is the one its third names: minor where the minor third above the final sounds
  longer over the whole piece than the major third (a Picardy third is one chord; folk-song collections
  write a minor tune under its major's signature with the accidentals in the notes), else major (the
  signature's mode where they tie). A final a fifth above the major tonic decides nothing (a Mixolydian
  major, or a half close: Mozart's K. 545 exposition ends in the dominant). A declared minor ``Key``
  wins (``"declared"``; music21 reads a MusicXML key without a <mode> as major, so a declared major is
  treated as a bare signature), except that a Dorian final still names its tonic (Bach's chorales
  declare their Dorian G minor as "D minor"). Only where none of these applies (the written end is not
  the piece's end: a da capo, dal segno or Fine, or the bass part silent for more than its last bar; the
  piece closes under another signature; or its final is another note) the older rule decides: of the
  two keys, the one music21's key analysis of the first 12 bars (its default key-profile correlation)
  ranks higher (``"signature"``), or music21's best key where it is neither and its correlation beats
  both by more than 0.1 (``"analysed"``). Then transposed by the item's semitones. (Manifest v5 and
  older used the analysis rule alone; unison or dominant openings, e.g. Beethoven's op. 18 no. 1 in F
  major, were labelled the relative minor.)
- notes (melody items): the top line's notes (highest note of a chord), ties merged, in seconds.

Dev and held-out splits use different composers AND different instruments, so a method tuned on dev is
measured on music and timbres it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SR = 44100
EXCERPT_S = 25.0
SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
MANIFEST_VERSION = 6
RENDER_TIMEOUT_S = 120

# (composer corpus names, ensembles, melody instruments) per split; GM programs (0-based)
SPLITS = {
    "dev": {
        "composers": ["bach", "mozart", "monteverdi", "airdsAirs", "ryansMammoth"],
        "ensembles": {"organ": [19, 19, 19, 19], "string quartet": [40, 40, 41, 42],
                      "choir": [52, 52, 52, 52], "string ensemble": [48, 48, 48, 48],
                      "electric piano": [4, 4, 4, 4], "harp": [46, 46, 46, 46],
                      "pizzicato strings": [45, 45, 45, 45], "mallets": [12, 12, 11, 11]},
        "melody": {"flute": 73, "violin": 40, "voice": 53},
        # tunes tried per book of tunes (an Opus: airdsAirs); plucked and struck timbres, folk tunes
        # and drum tracks on every ensemble, so dev sees what held-out has without its instruments
        "tunes_per_book": 40,
        "every_nth": 3,
        "rotate_drums": True,
    },
    "heldout": {
        "composers": ["haydn", "beethoven", "schumann_robert", "schumann_clara", "schubert", "handel",
                      "corelli", "cpebach", "chopin", "beach", "verdi", "weber", "joplin", "essenFolksong",
                      "oneills1850"],
        "ensembles": {"piano": [0, 0, 0, 0], "guitar": [24, 24, 24, 24], "woodwinds": [73, 68, 71, 70],
                      "brass": [56, 60, 57, 58], "harpsichord": [6, 6, 6, 6]},
        "melody": {"clarinet": 71, "oboe": 68, "trumpet": 56, "piano": 0},
    },
    # for fitting small models (benchmarks/fit_*.py): no held-out composer or instrument; Bach chorales
    # and Ryan's tunes other than dev's (every third, from the second), so dev stays a validation set
    "train": {
        "composers": ["bach", "ryansMammoth", "nottingham-dataset", "miscFolk", "liliuokalani",
                      "johnson_j_r", "theoryExercises"],
        "ensembles": {"church organ": [19, 19, 19, 19], "synth strings": [50, 50, 50, 50],
                      "voices": [53, 52, 52, 52], "rock organ": [18, 18, 18, 18],
                      "accordion": [21, 21, 21, 21], "marimba": [12, 12, 12, 12],
                      "cello section": [40, 41, 42, 42], "warm pad": [89, 89, 89, 89],
                      "celesta": [8, 8, 8, 8], "bandoneon": [23, 23, 23, 23]},
        "melody": {"recorder": 74, "viola": 41, "whistle": 78, "synth lead": 80},
        "tunes_per_book": 60,
        "every_nth": 3,
        "offset": 1,
        "rotate_drums": True,
    },
    # more fitting material (issue 23, fourth pass): the third of the Bach chorales and of Ryan's tunes that
    # neither dev nor train uses, on ten more ensembles that no other split plays
    "train2": {
        "composers": ["bach", "ryansMammoth"],
        "ensembles": {"sax quartet": [64, 65, 66, 67], "tremolo strings": [44, 44, 44, 44],
                      "reed organ": [20, 20, 20, 20], "polysynth": [90, 90, 90, 90],
                      "clavinet": [7, 7, 7, 7], "music box": [10, 10, 10, 10],
                      "slow strings": [49, 49, 49, 49], "harmonica": [22, 22, 22, 22],
                      "percussive organ": [17, 17, 17, 17], "brass section": [61, 61, 61, 61]},
        "melody": {"ocarina": 79, "soprano sax": 64, "shakuhachi": 77, "sawtooth lead": 81},
        "every_nth": 3,
        "offset": 2,
        "rotate_drums": True,
    },
}
SPLIT_SEEDS = {"dev": 0, "heldout": 1000, "train": 2000, "train2": 3000}


@dataclass
class Item:
    name: str
    source: str
    start_measure: int
    composer: str
    ensemble: str
    programs: list[int]
    bpm: float
    transpose: int
    drums: bool
    meter: int
    key: str               # "D major"
    key_source: str        # "signature" | "declared" | "analysed"
    beats: list[float]
    downbeats: list[float]
    duration_s: float
    melody: bool = False
    notes: list[list[float]] = field(default_factory=list)   # [onset_s, offset_s, midi]
    parts: list[list[list[float]]] = field(default_factory=list)  # per part [[onset_s, offset_s, midi], ...]


def soundfont() -> str:
    for p in SOUNDFONT_CANDIDATES:
        if Path(p).exists():
            return p
    raise SystemExit("no GM soundfont: run `./dev bench-setup` (Debian fluid-soundfont-gm)")


def cache_dir() -> Path:
    root = os.environ.get("M2UGEN_BENCH_CACHE")
    if root:
        return Path(root)
    import platformdirs

    return Path(platformdirs.user_cache_dir("m2ugen")) / "bench_mir"


# ---------------------------------------------------------------------------------------------- scores


NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(tonic_pc: int, mode: str) -> str:
    return f"{(MINOR_NAMES if mode == 'minor' else NAMES)[tonic_pc % 12]} {mode}"


def _key_truth(excerpt, ending: tuple[int, int, str | None] | None = None) -> tuple[int, str, str] | None:
    """(tonic pitch class, mode, source) of an excerpt (see the module docstring). ``ending``: the whole
    piece's (closing key signature's sharps, pitch class of its last bass note, the mode its third above
    that note names), or None where the written end is not where the piece ends (``_piece_ending``)."""
    from music21 import key as m21key

    old = _key_truth_analysed(excerpt)
    if old is None:  # the item set stays the one the analysis rule picked
        return None
    sharps = excerpt.flatten().getElementsByClass(m21key.KeySignature)[0].sharps
    found = _key_from_final(sharps, ending)
    if old[2] == "declared":  # a declared minor stays minor; a Dorian final still names its tonic
        return found if found is not None and found[1:] == ("minor", "modal") else old
    return old if found is None else found


def _key_from_final(sharps: int, ending: tuple[int, int, str | None] | None) -> tuple[int, str, str] | None:
    """The home key a signature of ``sharps`` names, decided by the piece's final bass note: its major
    or relative minor, whichever has the final as tonic ("final"), in the mode of the third that sounds
    longer above it (``third_mode``; the signature's where they tie); a final a fifth below the minor
    tonic is a Dorian minor written with one flat too few ("modal": no major or minor piece ends on its
    ii or iv). None where the piece closes under another signature or on another note: a final a fifth above
    the major tonic may be a Mixolydian major or a half close (an exposition ending in the dominant), so
    it decides nothing."""
    if ending is None or ending[0] != sharps:
        return None
    final, third = ending[1] % 12, ending[2]
    major = (7 * sharps) % 12
    minor = (major + 9) % 12
    if final == major:
        return major, third or "major", "final"
    if final == minor:
        return minor, third or "minor", "final"
    if final == (minor + 5) % 12:
        return final, third or "minor", "modal"
    return None


def _piece_ending(score, parts_notes) -> tuple[int, int, str | None] | None:
    """(sharps of the closing key signature, pitch class of the lowest note of the final sonority, the
    mode of its longer-sounding third) of a whole score; None where it has a da capo, dal segno or Fine
    (the written end is not the piece's end), no key signature or no final (``final_bass``)."""
    from music21 import expressions, key as m21key, repeat

    flat = score.flatten()
    if flat.getElementsByClass(repeat.RepeatExpression):
        return None
    for t in flat.getElementsByClass(expressions.TextExpression):
        text = (t.content or "").lower().replace(" ", "")
        if any(m in text for m in ("d.c.", "dacapo", "d.s.", "dalsegno", "fine")):
            return None
    sigs = list(flat.getElementsByClass(m21key.KeySignature))
    bass = final_bass(parts_notes)
    if not sigs or bass is None:
        return None
    return sigs[-1].sharps, bass % 12, third_mode(bass % 12, parts_notes)


def final_bass(parts_notes) -> int | None:
    """The lowest pitch of the final sonority: of the notes that end each part (``_notes_of_part``
    tuples; all voices of a part that end together) in the parts that end within a bar (4 quarters) of
    the piece's end; None for no notes, or where the bass part (the lowest by median pitch) falls silent
    more than a bar before the end (an upper line alone at the written end, such as a lead-in to a trio,
    is no final cadence)."""
    parts = [notes for notes in parts_notes if notes]
    if not parts:
        return None
    ends = [max(b for _, b, _ in notes) for notes in parts]
    medians = [float(np.median([min(pitches) for _, _, pitches in notes if pitches] or [128])) for notes in parts]
    end = max(ends)
    if ends[int(np.argmin(medians))] < end - 4.0:
        return None
    return min(min(pitches) for notes, part_end in zip(parts, ends) if part_end >= end - 4.0
               for _, b, pitches in notes if pitches and b >= part_end - 1e-6)


def third_mode(tonic_pc: int, parts_notes) -> str | None:
    """The mode ("minor" or "major") whose third above ``tonic_pc`` sounds longer over the whole piece (a
    mode is named by its third; a signature can be written for the other one, and a Picardy third is one
    chord); None for a tie."""
    minor = major = 0.0
    for notes in parts_notes:
        for a, b, pitches in notes:
            for p in pitches:
                minor += (b - a) * ((p - tonic_pc) % 12 == 3)
                major += (b - a) * ((p - tonic_pc) % 12 == 4)
    return "minor" if minor > major else "major" if major > minor else None


def _key_truth_analysed(excerpt) -> tuple[int, str, str] | None:
    """The fallback: the signature's key music21's analysis of the excerpt ranks higher (module docstring)."""
    from music21 import key as m21key

    flat = excerpt.flatten()
    declared = list(flat.getElementsByClass(m21key.KeySignature))
    if not declared:
        return None
    analysed = excerpt.analyze("key")
    ranked = [analysed] + list(analysed.alternateInterpretations)
    first = declared[0]
    if isinstance(first, m21key.Key) and first.mode == "minor":  # MusicXML files without <mode> read as major
        return first.tonic.pitchClass, first.mode, "declared"
    sharps = first.sharps
    cands = [k for k in ranked if k.sharps == sharps and k.mode in ("major", "minor")]
    if not cands:
        return None
    best_sig = cands[0]
    if analysed.sharps != sharps and analysed.correlationCoefficient > best_sig.correlationCoefficient + 0.1:
        return analysed.tonic.pitchClass, analysed.mode, "analysed"
    return best_sig.tonic.pitchClass, best_sig.mode, "signature"


def _notes_of_part(part) -> list[tuple[float, float, list[int]]]:
    """(offset_ql, end_ql, midi pitches) of every note/chord of a part, ties merged, grace notes dropped."""
    out = []
    for n in part.stripTies().flatten().notes:
        ql = float(n.quarterLength)
        if ql <= 0:
            continue
        off = float(n.offset)
        out.append((off, off + ql, [int(p.midi) for p in n.pitches]))
    return out


def excerpts_of(path: str, rng: np.random.Generator, max_excerpts: int, tunes_tried: int | None = None):
    """Yield (start_measure, meter, bar_offsets_ql, end_ql, key_truth, parts_notes) for 3/4 or 4/4 excerpts:
    of a book of tunes (an Opus), at most ``max_excerpts`` from its first ``tunes_tried`` tunes (default
    ``max_excerpts``)."""
    from music21 import corpus

    parsed = corpus.parse(path)
    scores = list(parsed.scores)[: tunes_tried or max_excerpts] if hasattr(parsed, "scores") else [parsed]
    found_count = 0
    for score in scores:
        found = _excerpt_of(score)
        if found is not None and found_count < max_excerpts:
            found_count += 1
            yield found


def _excerpt_of(score):
    """The excerpt from the first full bar while the bar grid stays regular (pieces start in their key)."""
    from music21 import meter as m21meter

    parts = list(score.parts)
    if not parts:
        return None
    measures = list(parts[0].getElementsByClass("Measure"))
    if len(measures) < 8:
        return None
    tss = list(parts[0].flatten().getElementsByClass(m21meter.TimeSignature))
    if not tss or tss[0].denominator != 4 or tss[0].numerator not in (3, 4):
        return None
    if any(ts.ratioString != tss[0].ratioString for ts in tss):
        return None
    beats_per_bar = tss[0].numerator
    all_notes = [_notes_of_part(p) for p in parts]
    # the regular bar grid: from the first full bar, measure offsets every beats_per_bar quarters
    offsets = [float(m.offset) for m in measures]
    first_full = 1 if measures[0].duration.quarterLength < beats_per_bar - 1e-6 else 0
    s = first_full
    grid = [offsets[s]]
    for j in range(s + 1, len(measures)):
        if abs(offsets[j] - grid[-1] - beats_per_bar) > 1e-6:
            break
        grid.append(offsets[j])
    if len(grid) < 6:
        return None
    end = grid[-1] + beats_per_bar if len(grid) == len(measures) - s else grid[-1]
    # the key over the first ~12 bars (what a 25 s excerpt holds at most tempos)
    m_first, m_last = measures[s].number, measures[min(s + 11, s + len(grid) - 1)].number
    try:
        ending = _piece_ending(score, all_notes)
    except Exception:  # noqa: BLE001 - an unreadable ending leaves the analysis rule
        ending = None
    try:
        truth = _key_truth(score.measures(m_first, m_last), ending)
    except Exception:  # noqa: BLE001 - music21 cannot cut some scores; skip them
        truth = None
    if truth is None:
        return None
    return s, beats_per_bar, grid, end, truth, all_notes


def build_manifest(split: str, n_items: int, n_melody: int, seed: int = 0) -> list[Item]:
    from music21 import corpus

    cfg = SPLITS[split]
    rng = np.random.default_rng(seed + SPLIT_SEEDS[split])
    paths = []
    for comp in cfg["composers"]:
        ps = [str(p) for p in corpus.getComposer(comp) if str(p).endswith((".mxl", ".xml", ".krn", ".musicxml", ".abc"))]
        ps = [p for p in ps if "opus132" not in p and "opus133" not in p]
        if comp in ("bach", "ryansMammoth"):
            ps = ps[cfg.get("offset", 0)::cfg.get("every_nth", 7)]  # a spread, not all 400 or 1000
        rng.shuffle(ps)
        paths.append(ps)
    # round-robin over composers so no one composer dominates
    order = []
    for i in range(max(len(p) for p in paths)):
        order += [p[i] for p in paths if i < len(p)]
    items: list[Item] = []
    ensembles = list(cfg["ensembles"].items())
    per_meter = {3: 0, 4: 0}
    for path in order:
        if len(items) >= n_items:
            break
        try:
            found = list(excerpts_of(path, rng, max_excerpts=2, tunes_tried=cfg.get("tunes_per_book")))
        except Exception:  # noqa: BLE001 - an unparsable corpus file is skipped
            continue
        for s, bpb, grid, end, (tonic, mode, source), parts in found:
            if per_meter[bpb] >= (n_items + 1) // 2 or len(items) >= n_items:
                continue
            per_meter[bpb] += 1
            k = len(items)
            ens_name, programs = ensembles[k % len(ensembles)]
            bpm = float(np.round(rng.uniform(60, 160)))
            transpose = int(rng.integers(-5, 7))
            # with an even number of ensembles, alternate which half of them gets drums each round
            shift = k // len(ensembles) if cfg.get("rotate_drums") else 0
            drums = bool((k + shift) % 2 == 0)
            q = 60.0 / bpm
            t0 = grid[0]
            # start the audio half a beat before the first bar line so the first downbeat is heard
            lead = 0.5
            end_ql = min(end, t0 + (EXCERPT_S / q))
            part_notes = []
            for pn in parts:
                seq = []
                for a, b, pitches in pn:
                    if b <= t0 or a >= end_ql:
                        continue
                    a2, b2 = max(a, t0), min(b, end_ql)
                    for p in pitches:
                        seq.append([round((a2 - t0 + lead) * q, 4), round((b2 - t0 + lead) * q, 4), p + transpose])
                part_notes.append(seq)
            if sum(len(s_) for s_ in part_notes) < 20 or (end_ql - t0) * q < 15.0:
                per_meter[bpb] -= 1
                continue
            nbeats = int(round(end_ql - t0))
            beats = [round((lead + j) * q, 4) for j in range(nbeats)]
            downbeats = [round((g - t0 + lead) * q, 4) for g in grid if g < end_ql - 1e-6]
            name = f"{split}-{k:02d}"
            items.append(Item(name=name, source=path.split("/corpus/")[-1], start_measure=int(s),
                              composer=path.split("/corpus/")[-1].split("/")[0], ensemble=ens_name,
                              programs=list(programs), bpm=bpm, transpose=transpose, drums=drums, meter=bpb,
                              key=key_name(tonic + transpose, mode), key_source=source, beats=beats,
                              downbeats=downbeats, duration_s=round((end_ql - t0 + lead) * q + 1.0, 3),
                              parts=part_notes))
    # melody items: the top line of the first n_melody items, alone
    mel_instruments = list(cfg["melody"].items())
    for j, base in enumerate(items[:n_melody]):
        top = _top_line(base.parts[0])
        if len(top) < 10:
            continue
        inst, prog = mel_instruments[j % len(mel_instruments)]
        items.append(Item(name=base.name + "-melody", source=base.source, start_measure=base.start_measure,
                          composer=base.composer, ensemble=inst, programs=[prog], bpm=base.bpm,
                          transpose=base.transpose, drums=False, meter=base.meter, key=base.key,
                          key_source=base.key_source, beats=base.beats, downbeats=base.downbeats,
                          duration_s=base.duration_s, melody=True, notes=top, parts=[top]))
    return items


def _top_line(notes: list[list[float]]) -> list[list[float]]:
    """Highest note at each onset; a note is cut where the next onset starts (a monophonic line)."""
    by_onset: dict[float, list[float]] = {}
    for a, b, p in notes:
        if a not in by_onset or p > by_onset[a][2]:
            by_onset[a] = [a, b, p]
    line = [by_onset[a] for a in sorted(by_onset)]
    for i in range(len(line) - 1):
        line[i][1] = min(line[i][1], line[i + 1][0])
    return [n for n in line if n[1] - n[0] > 0.03]


# ---------------------------------------------------------------------------------------------- rendering


def write_midi(item: Item, path: Path) -> None:
    import mido

    tpq = 480
    q = 60.0 / item.bpm
    mid = mido.MidiFile(type=1, ticks_per_beat=tpq)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=int(round(q * 1e6)), time=0))
    conductor.append(mido.MetaMessage("time_signature", numerator=item.meter, denominator=4, time=0))
    mid.tracks.append(conductor)

    def track(events):
        tr = mido.MidiTrack()
        now = 0
        # note-offs before note-ons at the same tick (a re-struck note is re-attacked)
        for tick, order, msg in sorted(events, key=lambda e: (e[0], e[1])):
            tr.append(msg.copy(time=tick - now))
            now = tick
        return tr

    def tick(seconds):
        return int(round(seconds / q * tpq))

    for i, notes in enumerate(item.parts):
        ch = i if i < 9 else i + 1
        prog = item.programs[i % len(item.programs)]
        ev = [(0, -1, mido.Message("program_change", channel=ch, program=prog, time=0))]
        for a, b, p in notes:
            if not 0 <= p <= 127:
                continue
            ev.append((tick(a), 1, mido.Message("note_on", channel=ch, note=int(p), velocity=80)))
            ev.append((tick(b), 0, mido.Message("note_off", channel=ch, note=int(p), velocity=0)))
        mid.tracks.append(track(ev))
    if item.drums:
        ev = []
        first_down = item.downbeats[0]
        for t in item.beats:
            k = int(round((t - first_down) / q)) % item.meter
            hits = [(42, 70)]
            if k == 0:
                hits.append((36, 100))
            elif item.meter == 4 and k == 2:
                hits.append((36, 85))
            elif item.meter == 4 or k == 2:
                hits.append((38, 85) if item.meter == 4 else (38, 60))
            for note, vel in hits:
                ev.append((tick(t), 1, mido.Message("note_on", channel=9, note=note, velocity=vel)))
                ev.append((tick(t + 0.1), 0, mido.Message("note_off", channel=9, note=note, velocity=0)))
        mid.tracks.append(track(ev))
    mid.save(str(path))


def render(item: Item, directory: Path) -> Path:
    """The item's WAV (44.1 kHz stereo), rendered once and cached by the hash of what is played (not its
    name or key label, so relabelling re-renders nothing)."""
    spec = json.dumps({k: v for k, v in asdict(item).items() if k not in ("name", "key", "key_source")},
                      sort_keys=True)
    digest = hashlib.sha1(spec.encode()).hexdigest()[:12]
    wav = directory / f"{item.name}-{digest}.wav"
    if wav.exists():
        return wav
    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth not found: run `./dev bench-setup`")
    directory.mkdir(parents=True, exist_ok=True)
    mid = wav.with_suffix(".mid")
    write_midi(item, mid)
    tmp = wav.with_suffix(".tmp.wav")
    try:  # an excerpt renders in seconds; a runaway score (a 14-part cantata once wrote 2.6 GB) is stopped
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SR), "-F", str(tmp), soundfont(), str(mid)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        mid.unlink(missing_ok=True)
        raise RuntimeError(f"fluidsynth did not finish {item.name} ({item.source}) in {RENDER_TIMEOUT_S} s") from None
    import soundfile as sf

    y, sr = sf.read(str(tmp), dtype="float32", always_2d=True)
    n = int(item.duration_s * sr)
    sf.write(str(wav), y[:n], sr, subtype="PCM_16")
    tmp.unlink()
    mid.unlink()
    return wav


def with_rubato(item: Item, depth: float, period_s: float = 8.0, seed: int = 0) -> Item:
    """The item played with a smoothly swaying tempo, as a player who is not on a click: the tempo at
    score time t is ``bpm * (1 + depth * sin(2 pi t / period_s + phase))`` (phase drawn by ``seed``), so
    every note, beat and downbeat time moves through the same warp and the labels stay true; ``bpm``
    stays the set tempo (the warp's mean tempo is within depth^2 / 2 of it)."""
    from dataclasses import replace

    phase = float(np.random.default_rng(seed).uniform(0, 2 * np.pi))
    grid = np.linspace(0.0, item.duration_s + 1.0, int((item.duration_s + 1.0) * 1000) + 1)
    rate = 1.0 + depth * np.sin(2 * np.pi * grid / period_s + phase)
    warped = np.concatenate([[0.0], np.cumsum(np.diff(grid) / rate[:-1])])  # performance time of score time

    def at(t):
        return float(np.interp(t, grid, warped))

    def notes(ns):
        return [[at(a), at(b), p] for a, b, p in ns]

    return replace(item, beats=[at(t) for t in item.beats], downbeats=[at(t) for t in item.downbeats],
                   notes=notes(item.notes), parts=[notes(p) for p in item.parts], duration_s=at(item.duration_s),
                   name=f"{item.name}-rubato{depth:g}")


def with_noise(y: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """[channels, samples] with pink noise (power falling 3 dB an octave: tape hiss, a room's air, an
    audience) added ``snr_db`` under the signal's mean power, each channel its own noise. The same seed
    gives the same noise."""
    rng = np.random.default_rng(seed)
    n = y.shape[1]
    k = np.arange(n // 2 + 1, dtype=np.float64)
    k[0] = 1.0
    noise = np.stack([np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(k), n) for _ in y])
    noise *= np.sqrt(float(np.mean(y.astype(np.float64) ** 2)) / max(float(np.mean(noise ** 2)), 1e-30) / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def in_room(y: np.ndarray, sr: int, rt60_s: float, direct_to_reverb_db: float, seed: int = 0) -> np.ndarray:
    """[channels, samples] as heard in a reverberant room: each channel convolved with its own impulse
    response, a direct path then (after 5 ms) an exponentially decaying Gaussian tail that falls 60 dB in
    ``rt60_s`` (a concert hall: 1.5-2 s, a studio live room: 0.4-0.8 s), the direct path's energy
    ``direct_to_reverb_db`` above the tail's (a close microphone: +10 dB and up; far in a hall: -10 dB
    and down). Peak level kept. The same seed gives the same room."""
    from scipy.signal import fftconvolve

    n = int(rt60_s * sr)
    rng = np.random.default_rng(seed)
    out = []
    for channel in y:
        ir = rng.standard_normal(n) * np.exp(-6.91 * np.arange(n) / (rt60_s * sr))
        ir[: int(0.005 * sr)] = 0.0
        ir[0] = np.sqrt(np.sum(ir ** 2) * 10 ** (direct_to_reverb_db / 10))
        out.append(fftconvolve(channel, ir / ir[0])[: channel.size])
    wet = np.stack(out)
    return (wet * (np.abs(y).max() / max(np.abs(wet).max(), 1e-12))).astype(np.float32)


def load_set(split: str, n_items: int, n_melody: int, rebuild: bool = False,
             version: int = MANIFEST_VERSION) -> tuple[list[Item], list[Path]]:
    """The split's items (manifest cached as JSON) and their rendered WAVs. ``version`` reads an older
    cached manifest (4: excerpts from anywhere in a piece, 2 per piece) instead of building one."""
    directory = cache_dir() / split
    items = cached_manifest(directory / f"manifest-v{version}-{n_items}-{n_melody}.json",
                            lambda: build_manifest(split, n_items, n_melody), rebuild)
    return items, [render(i, directory) for i in items]


def cached_manifest(manifest: Path, build, rebuild: bool = False) -> list[Item]:
    """The items cached as JSON in ``manifest``, else ``build()`` and cache them (the fit scripts' own
    draws use it too)."""
    if manifest.exists() and not rebuild:
        return [Item(**d) for d in json.loads(manifest.read_text())]
    items = build()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps([asdict(i) for i in items]))
    return items
