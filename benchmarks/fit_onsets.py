"""Fit the transcriber's onset model (m2ugen/assets/onset_model.json) on rendered corpus melodies.

The model answers "does a note of pitch p start at this frame?" from the energy at p's partials and the
whole spectrum's energy around the frame (``m2ugen.transcribe.onset_features``). It splits re-struck
same-pitch notes (a sustained instrument dips and swells again, a struck one climbs) and places each onset
where the note's own partials start, whatever the attack.

Training material: the top lines of dev-split excerpts (Bach, Mozart, Monteverdi, Ryan's Mammoth; see
benchmarks/mir_set.py) that the benchmark's dev melodies do not use, each rendered by FluidSynth on two
of 14 General MIDI instruments (bowed and plucked strings, organ, choir, voice, flute, recorder, sax,
accordion, electric piano, vibraphone, synth strings). Never the held-out split's composers or its melody
instruments (clarinet, oboe, trumpet, piano): ``bench_mir.py --split heldout`` measures how it generalises.
Frames are sampled on each reference note's pitch from 12 frames before its onset to 3 before its end;
a frame within one hop (11.6 ms) of the onset is positive. Every render is also heard in one of ROOMS
(``mir_set.in_room``), and all are read as the transcriber reads them, late reverberation suppressed
(``m2ugen.dereverb``). The shipped asset's ``restrike`` is fitted so (``--only restrike``); its ``onset`` and
``note`` are the earlier fits on dry renders read without the suppression (refitted in rooms they lost
0.03 dry onset F1 on dev: docs/analysis.md).

A third model, ``note`` (``m2ugen.transcribe.note_features``), judges each note the transcriber tracks
(with the two models above in place): played where it matches a reference note of its pitch starting
within 100 ms. It also sees the train split's melodies (benchmarks/mir_set.py: other composers; recorder,
viola, whistle, synth lead), each again on one of STRUCK (marimba, harp, celesta, ...; no held-out
instrument), so it learns what a decaying note's tail looks like. ``--only note`` keeps the two onset
models of ``--out`` and fits only this one.

    .venv/bin/python benchmarks/fit_onsets.py [--items 60] [--steps 1500] [--only restrike note]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROGRAMS = {"flute": 73, "violin": 40, "voice": 53, "viola": 41, "cello": 42, "strings": 48, "organ": 19,
            "choir": 52, "alto sax": 65, "recorder": 74, "accordion": 21, "electric piano": 4, "vibraphone": 11,
            "synth strings": 50}
# struck and plucked timbres none of the held-out splits uses (its piano, guitar and harpsichord are
# kept out): the keep model learns what a decaying note's tail looks like on these
STRUCK = {"marimba": 12, "harp": 46, "celesta": 8, "vibraphone": 11, "electric piano 2": 5, "music box": 10,
          "kalimba": 108, "dulcimer": 15}
HIDDEN = 16
# rooms (mir_set.in_room: RT60 s, direct-to-reverberant dB) the training renders are also heard in, one
# per render in turn: the models learn notes as the transcriber sees them after its late-reverberation
# suppression (m2ugen.dereverb), dry and reverberant. Seeds apart from the benchmark's (0, 1, ...).
ROOMS = ((0.6, 3.0), (1.0, -3.0), (1.6, -6.0), (2.2, -12.0))
ROOM_SEED = 1000


def in_rooms(pairs):
    """(item, wav, room) triples: every (item, wav) pair dry (room None), then each in one of ROOMS in turn."""
    return [(it, w, None) for it, w in pairs] + [(it, w, ROOMS[j % len(ROOMS)]) for j, (it, w) in enumerate(pairs)]


def read_mono(wav, room, seed: int = 0) -> np.ndarray:
    """The render as the transcriber reads it (m2ugen.transcribe._mono), first heard in ``room`` if any."""
    import soundfile as sf

    import mir_set
    from m2ugen import transcribe as T

    y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    y = np.ascontiguousarray(y.T)
    if room is not None:
        y = mir_set.in_room(y, sr, *room, seed=ROOM_SEED + seed)
    return T._mono(y, sr)


def training_items(n_items: int, skip: int = 12):
    """(item, wav) pairs: the top lines of dev excerpts ``skip``.. on two instruments each."""
    import mir_set

    directory = mir_set.cache_dir() / "onset-train"
    items = mir_set.cached_manifest(directory / f"manifest-v{mir_set.MANIFEST_VERSION}-{n_items}.json",
                                    lambda: mir_set.build_manifest("dev", n_items, n_items))
    melodies = [i for i in items if i.melody][skip:]
    names = list(PROGRAMS)
    out = []
    for j, it in enumerate(melodies):
        for r in range(2):
            inst = names[(2 * j + r) % len(names)]
            new = replace(it, name=f"onset-{j:02d}-{r}", ensemble=inst, programs=[PROGRAMS[inst]])
            out.append((new, mir_set.render(new, directory)))
    return out


def train_split_items(n_items: int, n_melody: int):
    """(item, wav) pairs: the train split's melodies (recorder, viola, whistle, synth lead: other composers,
    no held-out instrument), each on its own instrument and again on one of STRUCK."""
    import mir_set

    items, wavs = mir_set.load_set("train", n_items, n_melody)
    directory = mir_set.cache_dir() / "onset-train"
    names = list(STRUCK)
    out = []
    for j, (it, wav) in enumerate((i, w) for i, w in zip(items, wavs) if i.melody):
        inst = names[j % len(names)]
        struck = replace(it, name=f"{it.name}-struck", ensemble=inst, programs=[STRUCK[inst]])
        out += [(it, wav), (struck, mir_set.render(struck, directory))]
    return out


def note_examples(item, wav, room=None, seed: int = 0):
    """(note_features, played) of the transcriber's tracked notes of one render (in ``room``, if any):
    played where the note matches a reference note of its pitch starting within 100 ms (mir_eval's
    matching, no offsets)."""
    import mir_eval

    from m2ugen import transcribe as T

    found, x = T.note_candidates(read_mono(wav, room, seed))
    played = np.zeros(len(found), dtype=np.float32)
    if found:
        ref = np.asarray(item.notes, float)
        est = np.array([(c.first * T.HOP / T.ANALYSIS_SR, max(c.last, c.first + 1) * T.HOP / T.ANALYSIS_SR) for c in found])
        hz = lambda p: 440.0 * 2 ** ((np.asarray(p, float) - 69) / 12)  # noqa: E731
        for _, j in mir_eval.transcription.match_notes(ref[:, :2], hz(ref[:, 2]), est, hz([c.pitch for c in found]),
                                                       onset_tolerance=0.1, offset_ratio=None):
            played[j] = 1.0
    return x, played


def features_of(item, wav, room=None, seed: int = 0):
    """{"onset": (x, y), "restrike": (x, y)}: frames of each reference note's pitch in the render (in
    ``room``, if any, then with its late reverberation suppressed, as the transcriber does). onset: from 12
    frames before the onset to 3 before the end, positive within one hop of the onset. restrike: the
    frames inside notes (a shortest note from either end) and around the onsets of notes that repeat
    the previous pitch, positive within one hop of those onsets."""
    from m2ugen import transcribe as T
    from m2ugen.dereverb import suppress_late_reverb

    mono = suppress_late_reverb(read_mono(wav, room, seed), T.ANALYSIS_SR)
    spec = T.stft(mono)
    mag = np.abs(spec)
    total = T.total_energy(mag)
    n = mag.shape[1]
    out = {"onset": ([], []), "restrike": ([], [])}
    energies = {}
    edge = round(0.06 * T.ANALYSIS_SR / T.HOP)
    prev = None
    for a, b, p in item.notes:
        if p not in energies:
            energies[p] = T.pitch_energy(mag, p)
        on, off = int(round(a * T.ANALYSIS_SR / T.HOP)), int(round(b * T.ANALYSIS_SR / T.HOP))
        frames = np.arange(max(on - 12, 0), min(max(off - 3, on + 2), n))
        out["onset"][0].append(T.onset_features(energies[p], total, frames))
        out["onset"][1].append((np.abs(frames - on) <= 1).astype(np.float32))
        repeat = prev is not None and prev[2] == p and abs(prev[1] - a) < 0.01
        inner = np.arange(on + edge, off - edge)
        if repeat:
            inner = np.union1d(inner, np.arange(max(on - 3, 0), on + 4))
        inner = inner[(inner >= 0) & (inner < n)]
        if inner.size:
            out["restrike"][0].append(T.onset_features(energies[p], total, inner, T.pitch_novelty(spec, p)))
            out["restrike"][1].append(((np.abs(inner - on) <= 1) & repeat).astype(np.float32))
        prev = (a, b, p)
    return {k: (np.concatenate(x), np.concatenate(y)) for k, (x, y) in out.items()}


def fit(x: np.ndarray, y: np.ndarray, steps: int, seed: int = 0) -> dict:
    import torch

    torch.manual_seed(seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    xt = torch.tensor((x - mean) / std)
    yt = torch.tensor(y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-5)
    for _ in range(steps):  # full batch: a few hundred thousand frames, a few hundred weights
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt)[:, 0], yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w1, b1 = net[0].weight.detach().numpy().T, net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy().T, net[2].bias.detach().numpy()
    return {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=60, help="dev excerpts built (the first 12 are the benchmark's)")
    ap.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps")
    ap.add_argument("--only", nargs="+", choices=("onset", "restrike", "note"), default=("onset", "restrike", "note"),
                    help="fit only these models, keep the others of --out")
    ap.add_argument("--train-split", type=int, nargs=2, default=(160, 40), metavar=("ITEMS", "MELODIES"),
                    help="the train split's size (mir_set.load_set), whose melodies are added")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "m2ugen" / "assets" / "onset_model.json")
    args = ap.parse_args()
    pairs = training_items(args.items)
    # the last quarter of the excerpts checks the fit on music it has not seen
    cut = len(pairs) - len(pairs) // 4
    cut -= cut % 2
    fitted = [k for k in ("onset", "restrike") if k in args.only]
    heard = in_rooms(pairs[:cut]) + in_rooms(pairs[cut:])  # dry and in a room, each side of the cut
    cut_heard = 2 * cut
    data = [features_of(it, w, room, j) for j, (it, w, room) in enumerate(heard)] if fitted else []
    from m2ugen import transcribe as T

    models = {}
    if set(args.only) != {"onset", "restrike", "note"}:
        old = json.loads(args.out.read_text())["models"]
        models = {kind: {k: np.asarray(v, np.float32) for k, v in m.items()} for kind, m in old.items()}
    for kind in fitted:
        x_tr, y_tr = (np.concatenate([d[kind][i] for d in data[:cut_heard]]) for i in (0, 1))
        x_va, y_va = (np.concatenate([d[kind][i] for d in data[cut_heard:]]) for i in (0, 1))
        print(f"{kind}: {len(pairs)} renders dry and in a room ({cut} train, {len(pairs) - cut} check), {len(x_tr)} / {len(x_va)} "
              f"frames, {int(y_tr.sum())} / {int(y_va.sum())} positive", flush=True)
        T._MODELS[kind] = {k: np.asarray(v, np.float32) for k, v in fit(x_tr, y_tr, args.steps).items()}
        for name, x, y in (("train", x_tr, y_tr), ("check", x_va, y_va)):
            p = T.onset_probability(x, kind)
            print(f"  {name}: " + "  ".join(f"p>={th}: recall {(p >= th)[y == 1].mean():.3f} false {(p >= th)[y == 0].mean():.4f}"
                                            for th in (0.3, 0.5, 0.7)), flush=True)
        # the final model is fitted on everything
        models[kind] = fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), args.steps)
    # the keep model judges the notes the transcriber tracks with the two models above in place
    for kind in ("onset", "restrike"):
        T._MODELS[kind] = {k: np.asarray(v, np.float32) for k, v in models[kind].items()}
    if "note" not in args.only:
        return _write(args, 2 * len(pairs), json.loads(args.out.read_text()).get("note_renders"), models)
    # ... on those renders and on the train split's melodies (own and struck timbres), the last quarter
    # of each to check
    more = train_split_items(*args.train_split)
    cut_more = len(more) - len(more) // 4
    cut_more -= cut_more % 2
    train, check = in_rooms(pairs[:cut] + more[:cut_more]), in_rooms(pairs[cut:] + more[cut_more:])
    notes = [note_examples(it, w, room, j) for j, (it, w, room) in enumerate(train + check)]
    cut_notes = len(train)
    x_tr, y_tr = (np.concatenate([d[i] for d in notes[:cut_notes]]) for i in (0, 1))
    x_va, y_va = (np.concatenate([d[i] for d in notes[cut_notes:]]) for i in (0, 1))
    print(f"note: {len(x_tr)} / {len(x_va)} tracked notes, {int(len(y_tr) - y_tr.sum())} / {int(len(y_va) - y_va.sum())} "
          "not played", flush=True)
    T._MODELS["note"] = {k: np.asarray(v, np.float32) for k, v in fit(x_tr, y_tr, args.steps).items()}
    p = T.onset_probability(x_va, "note")
    print("  check: " + "  ".join(f"p<{th}: drops {(p < th)[y_va == 0].mean():.3f} of unplayed, {(p < th)[y_va == 1].mean():.4f} "
                                  f"of played" for th in (0.2, 0.3, 0.5)), flush=True)
    models["note"] = fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), args.steps)
    _write(args, 2 * len(pairs), 2 * (len(pairs) + len(more)), models)


def _write(args, renders: int, note_renders: int | None, models: dict) -> None:
    args.out.write_text(json.dumps({
        "what": "m2ugen.transcribe onset models: P(a note of this pitch starts at this frame | onset_features); "
                "onset: anywhere, restrike: inside a note of the same pitch; note: P(a tracked note was played | "
                "note_features)",
        "fitted_by": "benchmarks/fit_onsets.py", "renders": renders, "note_renders": note_renders,
        "models": {kind: {k: np.round(v, 5).tolist() for k, v in m.items()} for kind, m in models.items()}}) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
