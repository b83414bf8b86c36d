"""Stem-aware edits inside the ``edit`` kind (``params.op``, resolved at submit: protocol.check_stem_edit).

The source is separated once per job (``separating``, server/kinds/stems.py; the separator also keeps
the last regions it separated, so takes and a later edit of the same region do not repeat it), then:

- ``remove X`` / ``keep X``: the result is the remix of the stems the operation keeps
  (m2ugen.stem_ops.remix): sample-exact, the source's length, rate and channels, nothing rescaled. The
  LLM still answers (its text is the reply); no music is decoded; one take.
- ``replace X with Y``: the decoder makes Y for the region, conditioned on X's melody (the chroma of
  the separated X, when the decoder is MusicGen-Melody), else continuing the kept stems (MusicGen's
  continuation), else on text alone; its text is the reply plus "Y only, <tempo>, <key>". The new
  part is fitted to the region (length, the source's rate and channels; loudness matched to X's) and
  added to the kept stems, which stay bit-identical in the mix.
- ``add Y``: the decoder makes Y for the region (text, or the edit's own mode), with the measured
  tempo and key in its text; fitted like a replacement, its loudness ``ADD_LEVEL_DB`` under the
  source's, and added to the source, which stays bit-identical in the mix.

``analysis`` is the source's and ``result_analysis`` is measured on the result, as for every edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from m2ugen.stem_ops import StemOp, kept_stems, remix
from server import audio_io, finishing
from server.kinds import stems as stems_kind

ADD_LEVEL_DB = -6.0  # an added part's loudness relative to the source's


@dataclass
class StemPlan:
    op: StemOp
    model: str
    stems: dict[str, np.ndarray]  # [C, N] each, at the source's rate
    sr: int
    kept: np.ndarray  # the stems the operation keeps, summed: the result of remove / keep
    mode: str = "text"  # what the decoder hears (replace / add)

    @property
    def generates(self) -> bool:
        return self.op.op in ("replace", "add")

    @property
    def samples(self) -> int:
        return self.kept.shape[-1]

    def reference(self) -> np.ndarray:
        """What the new part's loudness is matched to: the replaced stem, or the whole source."""
        return self.stems[self.op.stem] if self.op.op == "replace" else self.kept  # add: kept is the source

    def summary(self) -> dict[str, Any]:
        return {**self.op.as_dict(), "model": self.model, "kept": kept_stems(self.op, list(self.stems)),
                "mode": self.mode if self.generates else None, "done": self.op.describe()}


def decoder_modes(worker) -> tuple[str, ...]:
    modes = (worker.model_info.get("decoder") or {}).get("modes")
    return tuple(modes) if modes else ("text",)


def music_hint(op: StemOp, tempo: float | None, analysis: dict | None) -> str:
    """What the music decoder is told besides the reply: the new part alone, the region's tempo and key."""
    facts = [f"{op.instrument} only"]
    tempo = tempo or (analysis or {}).get("bpm")  # the project's, else the region's measured tempo
    if tempo:
        facts.append(f"{round(tempo)} bpm")
    key = (analysis or {}).get("key_name")
    if key and op.op == "add":
        facts.append(str(key))
    return ", ".join(facts)


def plan(worker, job, the_plan, analysis: dict | None) -> None:
    """Separate the source and turn ``the_plan`` (server/kinds/chat.Plan) into the stem edit's."""
    from m2ugen import chroma as chroma_features
    from m2ugen import media

    p = job.params
    op = StemOp(p["op"], p.get("stem"), p.get("instrument"))
    wave, sr = the_plan.source
    stems = stems_kind.separate(worker, job, (wave, sr), p["stem_model"], stage="separating")
    kept = wave if op.op == "add" else remix(stems, kept_stems(op, list(stems)))
    sp = StemPlan(op=op, model=p["stem_model"], stems=stems, sr=sr, kept=kept)
    the_plan.stem = sp
    the_plan.duration = wave.shape[-1] / sr
    if not sp.generates:
        the_plan.takes, the_plan.options = 1, {}
        return
    the_plan.decode_s = finishing.decode_length(p, the_plan.duration)
    options = {k: v for k, v in the_plan.options.items() if k in ("vocoder",)}
    modes = decoder_modes(worker)
    mode = p["mode"]
    if op.op == "replace" and mode == "text":
        mode = "melody" if "melody" in modes else "continue" if "continue" in modes else "text"
    if mode == "melody":
        target = stems[op.stem] if op.op == "replace" else wave
        mono = media.load_audio((target, sr), chroma_features.SAMPLE_RATE)
        options["chroma"] = chroma_features.chroma_from_audio(mono, chroma_features.SAMPLE_RATE)
    elif mode == "continue":
        options["audio"] = (np.ascontiguousarray(kept), sr)  # the kept stems are what it continues
    options["mode"] = mode
    if not p.get("reference_prompt"):
        options["music_hint"] = music_hint(op, the_plan.tempo, analysis)
    sp.mode = mode
    the_plan.options = options


def take(the_plan, reply, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """One take's result [C, N] at the source's rate, and notes on what was done."""
    sp: StemPlan = the_plan.stem
    notes: dict[str, Any] = {"stem_edit": sp.summary()}
    if not sp.generates:
        return sp.kept.copy(), notes
    fit_params = {**params, "channels": sp.kept.shape[0], "loop": False}
    new, fitted = finishing.fit_take(reply.audio, int(reply.sample_rate), fit_params, out_sr=sp.sr,
                                     duration_s=sp.samples / sp.sr, tempo=the_plan.tempo,
                                     source=(sp.reference(), sp.sr))
    new = audio_io.fit_length(new, sp.samples, sp.sr) if new.shape[-1] != sp.samples else new
    if sp.op.op == "add":
        new = new * np.float32(10.0 ** (ADD_LEVEL_DB / 20.0))
    notes.update(fitted)
    return sp.kept + new, notes
