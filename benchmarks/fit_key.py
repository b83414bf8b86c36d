"""Fit the key confidence (m2ugen/assets/key_model.json) on rendered corpus music, and check it on dev.

``m2ugen.key`` reads a clip's key from the Pearson correlations of its harmonic-suppressed pitch-class
profile with the 24 rotations of Temperley's and of Aarden's major and minor profiles (the mean of the
two correlations per key); its confidence is the best key's share of a softmax over those 24 scores
times one gain. That gain is fitted here, by maximum
likelihood of the true key (one number; bounded 1-D search, deterministic), on the ``train`` split of
``benchmarks/mir_set.py`` (Bach chorales, folk tunes and exercises on organs, synth strings, voices,
accordion, marimba, cello section, pad, celesta and bandoneon: no dev or held-out composer or instrument),
and checked on the ``dev`` split: a calibrated confidence averages about the share of keys that are right,
and "sure" keys (confidence at least ``KEY_UNSURE``) are right more often than unsure ones.

Only the gain is fitted. Learning the profiles themselves (24 weights, or per-register, opening and
closing profiles, about 150 weights, each rotated to the candidate tonic and shared by the 12 keys of a
mode) fitted the train split better and read dev worse than the fixed profiles, so they are not used.

    .venv/bin/python benchmarks/fit_key.py [--check]   # --check: report only, do not write the asset
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TRAIN = ("train", 160, 40)
DEV = ("dev", 72, 12)
GAIN_BOUNDS = (1.0, 100.0)


def key_index(name: str) -> int:
    """'F# minor' -> 18: rows as ``m2ugen.key.key_profiles`` (0..11 major on C..B, 12..23 minor); names
    parsed as mir_eval scores them."""
    import mir_eval.key

    pc, mode = mir_eval.key.split_key_string(name)
    return pc + (12 if mode == "minor" else 0)


def correlations(split: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """([items, 24] profile correlations, [items] true key rows) of the split's mixed items with a key."""
    import soundfile as sf

    import mir_set
    from m2ugen.key import clip_key_scores
    from m2ugen.spectrum import analysis_signal

    items, wavs = mir_set.load_set(*split)
    rs, truth = [], []
    for item, wav in zip(items, wavs):
        if item.melody:
            continue
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        mono = analysis_signal(np.ascontiguousarray(y.T), sr)
        found = None if mono is None else clip_key_scores(mono)
        if found is not None:
            rs.append(found[0])
            truth.append(key_index(item.key))
    return np.array(rs), np.array(truth)


def nll(gain: float, r: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-likelihood of the true keys under ``key_posterior(r, gain)``."""
    z = gain * (r - r.max(axis=1, keepdims=True))
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(truth.size), truth].mean())


def fit_gain(r: np.ndarray, truth: np.ndarray) -> float:
    import scipy.optimize

    res = scipy.optimize.minimize_scalar(nll, bounds=GAIN_BOUNDS, args=(r, truth), method="bounded",
                                         options={"xatol": 1e-4})
    return float(res.x)


def report(gain: float, r: np.ndarray, truth: np.ndarray) -> dict:
    from m2ugen.key import KEY_UNSURE, key_posterior

    p = np.stack([key_posterior(row, gain) for row in r])
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == truth
    sure = conf >= KEY_UNSURE

    def share(mask):
        return round(float(right[mask].mean()), 3) if mask.any() else None

    return {"items": int(truth.size), "nll": round(nll(gain, r, truth), 3), "exact": round(float(right.mean()), 3),
            "mean_confidence": round(float(conf.mean()), 3), "called_sure": round(float(sure.mean()), 3),
            "exact_where_sure": share(sure), "exact_where_unsure": share(~sure)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="report only; do not write the asset")
    ap.add_argument("--compare-gain", type=float, default=20.0, help="a gain to report beside the fitted one")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import mir_set
    from m2ugen.key import KEY_MODEL

    r_train, y_train = correlations(TRAIN)
    r_dev, y_dev = correlations(DEV)
    gain = round(fit_gain(r_train, y_train), 3)
    out = {"softmax_gain": gain, "fitted_on": f"mir_set.load_set{TRAIN}, manifest v{mir_set.MANIFEST_VERSION}",
           "train": report(gain, r_train, y_train),
           "dev": report(gain, r_dev, y_dev)}
    for split, r, y in (("train", r_train, y_train), ("dev", r_dev, y_dev)):
        print(f"{split:5s} gain {gain:6.2f}: {report(gain, r, y)}")
        print(f"{split:5s} gain {args.compare_gain:6.2f}: {report(args.compare_gain, r, y)}")
    if not args.check:
        KEY_MODEL.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {KEY_MODEL}")


if __name__ == "__main__":
    main()
