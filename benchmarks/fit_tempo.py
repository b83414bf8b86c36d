"""Fit the tempo-level and meter models of the measured analysis on rendered corpus music.

Writes ``m2ugen/assets/tempo_level_model.json`` (which of a clip's tempo relatives 1, 1/2, 2, 2/3, 3/2,
1/3, 3 is the beat: ``m2ugen.beats.choose_tempo_level``) and ``m2ugen/assets/meter_model.json`` (3 or
4 beats per bar, and which beat is the downbeat: ``m2ugen.meter``). Both are linear scores over
standardised features: the tempo level a conditional logit over the clip's candidates, the bar length
a logistic regression, the downbeat a conditional logit over the bar's phases. Fitted by
``scipy.optimize.minimize`` (L-BFGS, L2 penalty; deterministic), stored as JSON, read with numpy only.

Training material: the ``train`` split of ``benchmarks/mir_set.py`` (Bach chorales and folk tunes other
than dev's, nottingham, misc folk, ... on organ, synth strings, voices, accordion, marimba, celesta,
bandoneon, ...; half with drums, 3/4 and 4/4, 60-160 BPM), its melodies included, drawn three times
(``--seeds 0 1 2``: seed 0 is the split as ``mir_set.load_set`` builds it; 1 and 2 play the same
excerpts at other tempos, transpositions, instruments and drums, rendered once into their own cache
directories, minutes each). No held-out composer or instrument. The bar-length model weighs 3/4 and 4/4
equally (the split holds few 3/4 excerpts). The dev split is the validation set the script prints,
beside the tempo as first found ("before"); the L2 penalties were chosen on it.

    .venv/bin/python benchmarks/fit_tempo.py [--seeds 0 1 2] [--dev-items 72]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ASSETS = Path(__file__).resolve().parent.parent / "m2ugen" / "assets"
TOLERANCE = 0.04   # Acc1: a candidate within 4 % of the set tempo is right


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-split", default="train", help="(dev only for a smoke test of this script)")
    ap.add_argument("--train-items", type=int, default=160)
    ap.add_argument("--train-melodies", type=int, default=40)
    ap.add_argument("--dev-items", type=int, default=72)
    ap.add_argument("--dev-melodies", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="train renders: 0 is the split as mir_set.load_set builds it; others draw it again")
    ap.add_argument("--l2-tempo", type=float, default=1.0, help="L2 penalty of the tempo-level model (chosen on dev)")
    ap.add_argument("--l2-meter", type=float, default=3.0, help="L2 penalty of the bar-length model (chosen on dev)")
    ap.add_argument("--l2-phase", type=float, default=3.0, help="L2 penalty of the downbeat model (chosen on dev)")
    ap.add_argument("--only", choices=("tempo", "meter"), default=None, help="fit one model, keep the other")
    return ap.parse_args()


def rendered(split: str, n_items: int, n_melodies: int, seed: int = 0):
    """The split's items and WAVs; seed > 0: the same scores drawn again (other tempos, transpositions,
    instruments and drums), rendered into their own cache directory."""
    import mir_set

    if seed == 0:
        return mir_set.load_set(split, n_items, n_melodies)
    directory = mir_set.cache_dir() / f"{split}-seed{seed}"
    # scores of more than 9 parts are left out: FluidSynth did not finish one (bwv248.64-6, 14 parts)
    items = mir_set.cached_manifest(
        directory / f"manifest-v{mir_set.MANIFEST_VERSION}-{n_items}-{n_melodies}.json",
        lambda: [i for i in mir_set.build_manifest(split, n_items, n_melodies, seed=seed) if len(i.parts) <= 9])
    return items, [mir_set.render(i, directory) for i in items]


def clips(split: str, n_items: int, n_melodies: int, seeds=(0,)):
    """(item, mono analysis signal, constant-Q spectrum) of each rendered item of a split (each seed)."""
    import soundfile as sf

    from m2ugen.spectrum import analysis_signal, constant_q

    pairs = [p for seed in seeds for p in zip(*rendered(split, n_items, n_melodies, seed))]
    for item, wav in pairs:
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        mono = analysis_signal(np.ascontiguousarray(y.T), sr)
        yield item, mono, constant_q(mono)


# ---------------------------------------------------------------------------------------------- fitting


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 1e-9, std, 1.0)


def fit_choice(groups: list[np.ndarray], labels: list[int], l2: float, mean=None, std=None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditional logit: one score w.x per row, softmax within each group, the labelled row's
    log-likelihood maximised with an L2 penalty. Returns (mean, std, weights) for standardised x."""
    from scipy.optimize import minimize

    if mean is None:
        mean, std = standardise(np.concatenate(groups))
    zs = [(g - mean) / std for g in groups]

    def loss(w):
        total, grad = 0.5 * l2 * float(w @ w), l2 * w
        for z, y in zip(zs, labels):
            s = z @ w
            s = s - s.max()
            p = np.exp(s) / np.exp(s).sum()
            total -= float(s[y] - np.log(np.exp(s).sum()))
            grad = grad - (z[y] - p @ z)
        return total, grad

    w = minimize(loss, np.zeros(mean.size), jac=True, method="L-BFGS-B").x
    return mean, std, w


def fit_choice_raw(groups, labels, l2: float):
    """``fit_choice`` without standardising (for features already in common units)."""
    n = groups[0].shape[1]
    return fit_choice(groups, labels, l2, np.zeros(n), np.ones(n))


def fit_binary(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Logistic regression P(y=1) = sigmoid(w.z + b) on standardised x, L2 on w, the two classes
    weighted equally (the training set's class balance is no prior for music at large). (mean, std, w, b)."""
    from scipy.optimize import minimize

    mean, std = standardise(x)
    z = (x - mean) / std
    weight = np.where(y > 0.5, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1.0 - y.mean(), 1e-9))

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        s = z @ w + b
        p = 1.0 / (1.0 + np.exp(-s))
        total = float(np.sum(weight * (np.logaddexp(0.0, s) - y * s))) + 0.5 * l2 * float(w @ w)
        g = weight * (p - y)
        return total, np.concatenate([z.T @ g + l2 * w, [g.sum()]])

    theta = minimize(loss, np.zeros(mean.size + 1), jac=True, method="L-BFGS-B").x
    return mean, std, theta[:-1], float(theta[-1])


def _rounded(a) -> list[float]:
    return [round(float(v), 6) for v in np.atleast_1d(a)]


# ---------------------------------------------------------------------------------------------- tempo level


def tempo_rows(split: str, n_items: int, n_melodies: int, seeds=(0,)):
    """Per clip: (item, candidates, features, index of the right candidate or -1)."""
    from m2ugen import beats

    out = []
    for item, mono, spec in clips(split, n_items, n_melodies, seeds):
        tempo, functions = beats.pulse(mono, spec=spec)
        if tempo is None:
            out.append((item, np.zeros(0), np.zeros((0, len(beats.tempo_level_feature_names()))), -1))
            continue
        cands = beats.tempo_candidates(tempo)
        x = beats.tempo_level_features(cands, functions)
        err = np.abs(np.log(cands / item.bpm))
        label = int(np.argmin(err)) if err.min() <= np.log1p(TOLERANCE) else -1
        out.append((item, cands, x, label))
    return out


def tempo_accuracy(rows, scores_of) -> tuple[float, float]:
    """(Acc1 of the chosen candidate over all clips, over clips without drums)."""
    right = [(r[3] >= 0 and int(np.argmax(scores_of(r[2]))) == r[3]) if r[1].size else False for r in rows]
    plain = [ok for ok, r in zip(right, rows) if not r[0].drums]
    return float(np.mean(right)), float(np.mean(plain))


def fit_tempo(args) -> None:
    from m2ugen import beats

    train = tempo_rows(args.train_split, args.train_items, args.train_melodies, args.seeds)
    dev = tempo_rows("dev", args.dev_items, args.dev_melodies)
    usable = [r for r in train if r[3] >= 0 and r[1].size >= 2]
    mean, std, w = fit_choice([r[2] for r in usable], [r[3] for r in usable], args.l2_tempo)
    model = lambda x: ((x - mean) / std) @ w  # noqa: E731
    first = lambda x: -np.arange(len(x), dtype=float)  # noqa: E731 - the tempo as found (candidate 0)
    for name, rows in (("train", train), ("dev", dev)):
        b, m = tempo_accuracy(rows, first), tempo_accuracy(rows, model)
        print(f"tempo level {name}: {len(rows)} clips, reachable {np.mean([r[3] >= 0 for r in rows]):.3f}; "
              f"Acc1 before {b[0]:.3f} (no drums {b[1]:.3f}) -> model {m[0]:.3f} (no drums {m[1]:.3f})", flush=True)
    names = beats.tempo_level_feature_names()
    print("weights:", ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, w)))
    (ASSETS / "tempo_level_model.json").write_text(json.dumps({
        "what": "m2ugen.beats tempo level: score = weights . (features - mean) / std per candidate; "
                "the highest-scoring candidate is the beat",
        "fitted_by": "benchmarks/fit_tempo.py", "clips": len(usable), "l2": args.l2_tempo,
        "features": names, "mean": _rounded(mean), "std": _rounded(std), "weights": _rounded(w)}, indent=1) + "\n")
    beats._tempo_level_model.cache_clear()


# ---------------------------------------------------------------------------------------------- meter


def meter_rows(split: str, n_items: int, n_melodies: int, seeds=(0,)):
    """Per clip with a tempo and harmony or bass: (item, tempo right, meter features, phase features for
    3 and 4 beats per bar, index of the right phase at the true meter or -1)."""
    from m2ugen import beats as B
    from m2ugen import meter as M

    out = []
    for item, mono, spec in clips(split, n_items, n_melodies, seeds):
        if item.melody:
            continue
        beats = B.track_beats(mono, spec=spec)
        if beats.bpm is None or beats.frames.size < 8:
            out.append((item, False, None, None, -1))
            continue
        per_beat = M._beat_features(mono, beats, B.ANALYSIS_SR, spec)
        if not any(np.any(f) for f in per_beat.feats[M.HARMONY_FEATURES]):
            out.append((item, False, None, None, -1))  # accents alone: the rule, not the model
            continue
        tempo_right = abs(np.log(beats.bpm / item.bpm)) <= np.log1p(TOLERANCE)
        phases = {m: M.phase_features(per_beat, m) for m in (3, 4)}
        ref = np.asarray(item.downbeats)
        hits = [np.mean([np.min(np.abs(ref - t)) <= 0.07 for t in beats.times[p::item.meter]])
                for p in range(item.meter)]
        label = int(np.argmax(hits)) if tempo_right and max(hits) >= 0.5 else -1
        out.append((item, tempo_right, M.meter_features(per_beat, beats), phases, label))
    return out


def fit_meter(args) -> None:
    from m2ugen import meter as M

    train = meter_rows(args.train_split, args.train_items, args.train_melodies, args.seeds)
    dev = meter_rows("dev", args.dev_items, args.dev_melodies)
    use = [r for r in train if r[2] is not None and r[1]]
    x = np.stack([r[2] for r in use])
    y = np.array([float(r[0].meter == 4) for r in use])
    mean, std, w, b = fit_binary(x, y, args.l2_meter)
    groups = [r[3][r[0].meter] for r in use if r[4] >= 0]
    labels = [r[4] for r in use if r[4] >= 0]
    _, _, pw = fit_choice_raw(groups, labels, args.l2_phase)

    def meter_of(r):
        return 4 if float(((r[2] - mean) / std) @ w + b) >= 0 else 3

    for name, rows in (("train", train), ("dev", dev)):
        ok = [r for r in rows if r[2] is not None]
        right = [meter_of(r) == r[0].meter for r in ok]
        plain = [v for v, r in zip(right, ok) if not r[0].drums]
        at_tempo = [v for v, r in zip(right, ok) if r[1]]
        ph = [int(np.argmax(r[3][r[0].meter] @ pw)) == r[4] for r in ok if r[4] >= 0]
        print(f"meter {name}: {len(rows)} clips, {len(ok)} with harmony; right {np.mean(right):.3f} "
              f"(no drums {np.mean(plain):.3f}, tempo right {np.mean(at_tempo):.3f}); "
              f"downbeat phase right {np.mean(ph):.3f} of {len(ph)}", flush=True)
    print("meter weights:", ", ".join(f"{n} {v:+.2f}" for n, v in zip(M.meter_feature_names(), w)), f"bias {b:+.2f}")
    print("phase weights:", ", ".join(f"{n} {v:+.2f}" for n, v in zip(M.phase_feature_names(), pw)))
    (ASSETS / "meter_model.json").write_text(json.dumps({
        "what": "m2ugen.meter: 4 beats per bar where meter_weights . (meter_features - mean) / std + bias >= 0, "
                "else 3; the downbeat is the phase with the highest phase_weights . phase_features",
        "fitted_by": "benchmarks/fit_tempo.py", "clips": len(use), "phase_clips": len(groups), "l2": [args.l2_meter, args.l2_phase],
        "meter_features": M.meter_feature_names(), "meter_mean": _rounded(mean), "meter_std": _rounded(std),
        "meter_weights": _rounded(w), "meter_bias": round(b, 6),
        "phase_features": M.phase_feature_names(), "phase_weights": _rounded(pw)}, indent=1) + "\n")
    M._meter_model.cache_clear()


def main() -> None:
    args = _args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import warnings

    warnings.simplefilter("ignore", UserWarning)
    if args.only in (None, "tempo"):
        fit_tempo(args)
    if args.only in (None, "meter"):
        fit_meter(args)


if __name__ == "__main__":
    main()
