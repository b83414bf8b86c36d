"""Stem-aware edits, the pure part (no torch): which operation an edit asks for, and the remix.

An operation is one of

- ``remove X``: the mix without stem X (the other stems summed);
- ``keep X``: stem X alone;
- ``replace X with Y``: stem X replaced by new material Y (the decoder makes Y, the other stems are kept);
- ``add Y``: new material Y over the whole source.

It is chosen explicitly (``params.op`` + ``params.stem`` + ``params.instrument``) or read from the
instruction by ``parse``, a small grammar (case-insensitive, articles and "the" ignored)::

    remove|mute|drop|delete|take out|get rid of|lose  X    -> remove X
    ... without X                                         -> remove X
    only|just|isolate|solo|extract|keep only  X          -> keep X
    replace|swap|switch|change  X  with|for|by|to|into  Y -> replace X with Y
    add  Y                                                -> add Y

X must name a stem a separation model can make (``STEM_WORDS``: drums/percussion, bass/bassline,
vocals/voice/vox, guitar, piano/keys, other); Y is any short description ("strings", "a shaker
loop"). ``parse`` returns None for an instruction that is not a stem edit at all and raises
``StemOpError`` (with the reason) for one that is but cannot be served (an unknown stem).
``detect`` is the same without ``add``: what an edit with no explicit ``op`` is taken to mean
(an instruction such as "add some reverb" stays an ordinary edit unless ``op`` says add/auto).

``remix`` sums stems in a fixed order, so ``remove drums`` on stems drums/bass/other returns
exactly ``bass + other``: the kept stems are never scaled (their loudness is unchanged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

OPS = ("remove", "keep", "replace", "add")
STEMS_4 = ("drums", "bass", "other", "vocals")  # htdemucs, in its output order
STEMS_6 = STEMS_4 + ("guitar", "piano")  # htdemucs_6s
STEM_WORDS = {
    "drums": "drums", "drum": "drums", "drum kit": "drums", "kit": "drums", "percussion": "drums",
    "beat": "drums", "beats": "drums",
    "bass": "bass", "bassline": "bass", "bass line": "bass", "bass guitar": "bass",
    "vocals": "vocals", "vocal": "vocals", "voice": "vocals", "voices": "vocals", "vox": "vocals",
    "singing": "vocals", "singer": "vocals", "lead vocal": "vocals", "lead vocals": "vocals",
    "guitar": "guitar", "guitars": "guitar",
    "piano": "piano", "pianos": "piano", "keys": "piano",
    "other": "other", "rest": "other",
}
MAX_INSTRUMENT = 200

_ART = r"(?:(?:the|a|an|some|my|its|all(?: of)?(?: the)?)\s+)?"
_ENDS = r"(?:\s+(?:part|parts|track|tracks|stem|stems|sound|sounds))?"
_TAIL = r"\s*(?:(?:please|from (?:it|this|the (?:mix|track|song|loop|clip|region|selection)))\s*)*[.!]*\s*$"
_X = r"(?P<x>[a-z][a-z ]*?)"
_Y = r"(?P<y>[^.!?]+?)"
_RULES = (
    ("replace", re.compile(rf"^(?:please\s+)?(?:replace|swap|switch|change|exchange|substitute)\s+{_ART}{_X}{_ENDS}"
                           rf"\s+(?:with|for|by|to|into)\s+{_ART}{_Y}{_TAIL}")),
    ("remove", re.compile(rf"^(?:please\s+)?(?:remove|mute|drop|delete|cut|take out|get rid of|lose|kill)\s+"
                          rf"{_ART}{_X}{_ENDS}{_TAIL}")),
    ("remove", re.compile(rf"^(?:.*\s)?without\s+{_ART}{_X}{_ENDS}{_TAIL}")),
    ("keep", re.compile(rf"^(?:please\s+)?(?:(?:keep|leave|give me|play)\s+)?(?:only|just)\s+{_ART}{_X}{_ENDS}"
                        rf"(?:\s+only)?{_TAIL}")),
    ("keep", re.compile(rf"^(?:please\s+)?(?:isolate|solo|extract)\s+{_ART}{_X}{_ENDS}{_TAIL}")),
    ("add", re.compile(rf"^(?:please\s+)?add\s+{_ART}{_Y}{_TAIL}")),
)


class StemOpError(ValueError):
    """An instruction or options that name a stem edit which cannot be served; the message says why."""


@dataclass(frozen=True)
class StemOp:
    op: str  # remove | keep | replace | add
    stem: str | None = None  # the separated stem it acts on (None for add)
    instrument: str | None = None  # replace / add: what the new part is

    def __post_init__(self):
        if self.op not in OPS:
            raise StemOpError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.op != "add" and self.stem not in STEMS_6:
            raise StemOpError(f"{self.op} needs a stem: one of {', '.join(STEMS_6)} (got {self.stem!r})")
        if self.op in ("replace", "add") and not (self.instrument or "").strip():
            raise StemOpError(f"{self.op} needs what the new part is (instrument, e.g. 'strings')")

    @property
    def model(self) -> str:
        """The separation model it needs: htdemucs_6s for guitar / piano, htdemucs otherwise."""
        return "htdemucs_6s" if self.stem in ("guitar", "piano") else "htdemucs"

    def describe(self) -> str:
        return {"remove": f"removed the {self.stem}", "keep": f"kept only the {self.stem}",
                "replace": f"replaced the {self.stem} with {self.instrument}",
                "add": f"added {self.instrument}"}[self.op]

    def as_dict(self) -> dict:
        return {"op": self.op, "stem": self.stem, "instrument": self.instrument}


def stem_of(words: str) -> str:
    """A stem's name from the words that named it ('the bass line' -> 'bass'); StemOpError if none."""
    w = re.sub(r"\s+", " ", words.strip().lower())
    w = re.sub(r"\s+(?:part|parts|track|tracks|stem|stems|sound|sounds)$", "", w)
    if w in STEM_WORDS:
        return STEM_WORDS[w]
    raise StemOpError(f"cannot separate {words.strip()!r}: the stems are {', '.join(STEMS_6)} "
                      f"(drums/percussion, bass, vocals/voice, guitar, piano/keys, other)")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def parse(instruction: str, *, with_add: bool = True) -> StemOp | None:
    """The stem edit an instruction asks for; None when it is not one; StemOpError when it is one that
    cannot be served (see the module docstring for the grammar)."""
    text = _norm(instruction)
    for op, rule in _RULES:
        if op == "add" and not with_add:
            continue
        m = rule.match(text)
        if m is None:
            continue
        if op == "add":
            return StemOp("add", instrument=m.group("y").strip()[:MAX_INSTRUMENT])
        stem = stem_of(m.group("x"))
        instrument = m.group("y").strip()[:MAX_INSTRUMENT] if op == "replace" else None
        return StemOp(op, stem, instrument)
    return None


def detect(instruction: str) -> StemOp | None:
    """What an edit without an explicit op means: a stem edit only when it names a separable stem with
    remove / without / only / isolate / replace (never 'add': too often an ordinary edit); an
    instruction of that form about something no model separates ('remove the cowbell') stays an
    ordinary edit."""
    try:
        return parse(instruction, with_add=False)
    except StemOpError:
        return None


def resolve(prompt: str, op: str | None, stem: str | None, instrument: str | None) -> StemOp | None:
    """The edit's stem operation from its params: ``op`` None = detected from the prompt (or none);
    ``op`` "auto" = parsed from the prompt (StemOpError when it cannot be); an explicit op takes
    ``stem`` / ``instrument`` from the params, else from the prompt (an ``add`` / ``replace`` whose
    prompt is not in the grammar takes the whole prompt as what the new part is)."""
    if op is None and stem is None:
        return detect(prompt)
    if op in (None, "auto"):
        parsed = parse(prompt)
        if parsed is None:
            raise StemOpError(f"cannot read a stem edit from {prompt.strip()[:80]!r}; say e.g. 'remove the drums', "
                              "'only the vocals', 'replace the piano with strings', 'add a shaker', or give "
                              "op and stem explicitly")
        if stem is not None and parsed.stem is not None and parsed.stem != stem:
            raise StemOpError(f"the instruction names the {parsed.stem} but stem is {stem!r}")
        return StemOp(parsed.op, stem or parsed.stem, instrument or parsed.instrument)
    try:
        parsed = parse(prompt)
    except StemOpError:
        parsed = None
    if instrument is None and op in ("replace", "add"):
        instrument = parsed.instrument if parsed is not None and parsed.op == op else prompt.strip()[:MAX_INSTRUMENT]
    if stem is None and parsed is not None and parsed.op == op:
        stem = parsed.stem
    return StemOp(op, stem if op != "add" else None, instrument)


def remix(stems: dict[str, np.ndarray], keep: list[str] | tuple[str, ...]) -> np.ndarray:
    """The sum of the ``keep`` stems, in the stems' own order (zeros when none): sample-exact, unscaled."""
    first = next(iter(stems.values()))
    out = np.zeros_like(first, dtype=np.float32)
    for name, wave in stems.items():
        if name in keep:
            out = out + np.asarray(wave, dtype=np.float32)
    return out


def kept_stems(op: StemOp, names: list[str] | tuple[str, ...]) -> list[str]:
    """The stems an operation leaves in the mix untouched."""
    if op.op == "keep":
        return [op.stem]
    if op.op in ("remove", "replace"):
        return [n for n in names if n != op.stem]
    return list(names)
