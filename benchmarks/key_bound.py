"""How far the key can go on the benchmark's labels: the items' exact score notes, with no audio, through
this project's key back-end, beside what it reads from the audio.

Each mixed item of ``bench_mir``'s set (``mir_set``: the piece's home key as the label) is read four ways:

- from the audio: ``m2ugen.key.key_analysis`` (what ``analyze`` reports);
- from the exact notes through the same back-end: per 0.5 s segment of the audio's note fit, each score
  note's sounding time in that segment takes the place of the fitted activation (a note doubled in two
  parts counts twice), then ``key_inputs_of`` / ``key_of_inputs`` as for the audio (square-root weights
  from C2, the profiles and the chord view, the no-key rules);
- the same without the chord view (the literature profiles alone);
- the notes' duration-weighted pitch-class profile through the profiles alone (durations as they are:
  no square root, no no-key rules): the plain symbolic reading.

Where the audio reads as well as the exact notes, a front end nearer the notes has nothing to gain there;
where no reading of the exact notes reaches a target, the labels (what a 25 s opening tells of the key
its piece ends in) bound it. docs/analysis.md reports the figures.

    .venv/bin/python benchmarks/key_bound.py [--splits train dev heldout]   # train: fit_key's training pool
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPLITS = {"dev": (("dev", 72, 12, 0),), "heldout": (("heldout", 36, 12, 0),)}
READINGS = ("this project, from the audio",
            "exact notes, this project's back-end (square-root weights from C2, profiles + chords)",
            "exact notes, its profiles alone",
            "exact notes, duration-weighted profiles alone")


def note_seconds(item, segments: int, seg_s: float) -> np.ndarray:
    """[84, segments] (C1..B7): each score note's sounding seconds in each segment, summed over parts."""
    acts = np.zeros((84, segments))
    for part in item.parts:
        for onset, offset, midi in part:
            note = int(round(midi)) - 24
            if not 0 <= note < 84:
                continue
            a, b = onset / seg_s, offset / seg_s
            for s in range(max(0, int(a)), min(segments, int(np.ceil(b)))):
                acts[note, s] += (min(b, s + 1) - max(a, s)) * seg_s
    return acts


def readings(item, mono, spec) -> list[str | None]:
    """The item's key read the four ways of READINGS ("D major", or None for no key)."""
    from m2ugen.key import _key_of, _profile_scores, clip_key_inputs, key_inputs_of, key_of_inputs, segment_frames
    from m2ugen.spectrum import CQT_HOP, KEY_SR

    def name(found):
        return None if found is None else f"{found[0]} {found[1]}"

    audio = None if spec is None else clip_key_inputs(mono, spec=spec)
    seg_s = segment_frames() * CQT_HOP / KEY_SR
    segments = audio[2].shape[1] if audio else max(1, int(item.duration_s / seg_s))
    notes = note_seconds(item, segments, seg_s)
    exact = key_inputs_of(notes, seg_s)
    profile = notes.reshape(7, 12, -1).sum(axis=(0, 2))
    return [name(None if audio is None else key_of_inputs(*audio)),
            name(None if exact is None else key_of_inputs(*exact)),
            name(None if exact is None else key_of_inputs(exact[0], None, exact[2], exact[3])),
            name(_key_of(_profile_scores(profile / profile.sum())))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", nargs="+", choices=("train", "dev", "heldout"), default=["train", "dev", "heldout"])
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import mir_eval.key

    from fit_key import TRAIN
    from fit_tempo import clips

    columns = {}
    for split in args.splits:
        scores = []
        for item, mono, spec in clips([(*s[:3], (s[3],)) for s in (TRAIN if split == "train" else SPLITS[split])]):
            if item.melody or not item.key:
                continue
            scores.append([0.0 if est is None else mir_eval.key.weighted_score(item.key, est)
                           for est in readings(item, mono, spec)])
        columns[split] = np.array(scores)
    print("| key exact (MIREX) | " + " | ".join(f"{s} ({len(c)})" for s, c in columns.items()) + " |")
    print("|---|" + "---|" * len(columns))
    for k, reading in enumerate(READINGS):
        print(f"| {reading} | " + " | ".join(f"{100 * np.mean(c[:, k] == 1.0):.1f} % ({np.mean(c[:, k]):.3f})"
                                              for c in columns.values()) + " |")


if __name__ == "__main__":
    main()
