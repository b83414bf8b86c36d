"""Continuous batching of ``chat`` requests (iteration-level scheduling, as in Orca and vLLM).

``Engine(model)`` keeps one running batch per model stage and moves every row one step at a time:

    engine = model.engine(max_rows=4)
    a = engine.admit(ChatRequest("calm piano", want_audio=True, seed=1))
    for _ in range(3):
        engine.step()
    b = engine.admit(ChatRequest("loud drums", want_audio=True, seed=2))   # joins the running decode
    done = {}
    while not engine.idle:
        done.update(engine.step())                                        # {handle: Reply | exception}

A row goes through the stages of ``M2UGen.chat_batch`` (the same steps of the model, shared code):

1. encoding: its audio / image / video inputs through the encoders (at most one row with inputs per step);
2. thinking: the LLaMA stage (``m2ugen.text_stage``): a slot of the KV cache pool, its prompt prefilled
   alone in chunks of ``prefill_chunk`` tokens (one chunk per step; 8 on a CPU, 32 on a GPU: about one
   decode step's time), then one decode step per engine step
   together with every other running row; it leaves the step it stops;
3. generating: the music decoder. MusicGen(-Melody): the MusicGen stage (``m2ugen.musicgen_stage``),
   the same slot / chunk / step scheme over the decoder's cache; the finished codes become audio
   (EnCodec or MBD) when the row leaves: on the ``finisher`` executor when one is given (EnCodec only; MBD
   reports progress), so the other rows' steps go on meanwhile, the row's last event then sent from the
   stepping thread at the first step after its audio is ready (callbacks never leave that thread). When no
   row is left to step, the stepping thread makes the audio of a row the finisher has not started itself
   (rows that end together share the two threads instead of queueing on one).
   AudioLDM2 (no step loop): the row is decoded whole, one per step.

Each row keeps its own seed (its own ``torch.Generator`` per stage), sampling settings, length, guidance,
mode (continue prompt, melody chroma) and adapters, and is prefilled alone, so its result is the one it
gets alone, whoever joins or leaves around it. A row whose ``on_event`` raises (a cancel), or that fails,
ends alone with that exception; ``cancel(handle)`` ends one row at the next step.

The engine owns the model's LLaMA KV cache while it has rows (another ``generate`` on the same model then
refuses to start); it releases it when idle. Not thread-safe: one thread drives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from m2ugen.musicgen_stage import MusicGenStage
from m2ugen.text_stage import TextRow, TextStage, prefill_chunk as default_chunk


class RowCancelled(Exception):
    """The result of a row ended by ``Engine.cancel`` without an exception of the caller's."""


@dataclass(eq=False)
class _EngineRow:
    row: Any  # m2ugen.model._Row (or the planning error)
    stage: str = "encoding"  # encoding | thinking | generating | done
    text: TextRow | None = None
    music: Any = None  # MusicGenStage's StageRow
    decode: Any = None  # the decoder's DecodeRow
    info: dict | None = None  # what the decoder needs to finish the row's audio
    t0: float = 0.0
    finishing: Any = None  # concurrent.futures.Future of its audio (codes -> EnCodec) on the finisher
    finish_args: tuple | None = None  # what that audio is made of (``_audio_of``'s arguments)


class Engine:
    def __init__(self, model, max_rows: int = 4, prefill_chunk: int | None = None, finisher=None):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.model = model
        self.max_rows = max_rows
        self.prefill_chunk = prefill_chunk or default_chunk(model.device)  # text_stage.PREFILL_CHUNK
        self.text = TextStage(model.llama, model.tokenizer, max_rows, prefill_chunk)
        self._music: MusicGenStage | None = None
        self._rows: dict[int, _EngineRow] = {}
        self._ended: list[int] = []  # ended outside a step (cancel, a bad request): reported by the next step
        self._next = 0
        self.finisher = finisher  # a concurrent.futures.Executor for the rows' audio (None: on this thread)

    # --- the caller's face -----------------------------------------------------------------------------
    def admit(self, request) -> int:
        """Queue one ``ChatRequest``; -> its handle. It starts at the next ``step``. A request that fails its
        checks ends at the next step with the ValueError (as ``chat_batch`` returns it)."""
        handle, self._next = self._next, self._next + 1
        try:
            row = self.model._plan_row(request)
        except Exception as e:
            self._rows[handle] = _EngineRow(row=e, stage="done")
            self._ended.append(handle)
            return handle
        self._rows[handle] = _EngineRow(row=row, t0=time.perf_counter())
        return handle

    def cancel(self, handle: int, error: BaseException | None = None) -> None:
        """End one row now (its slots are free at once); reported by the next ``step`` with ``error``."""
        er = self._rows.get(handle)
        if er is None or er.stage == "done" or handle in self._ended:
            return
        err = error or RowCancelled(f"row {handle} cancelled")
        er.row.error = er.row.error or err
        if er.text is not None:
            self.text.cancel(er.text, err)
        if er.music is not None and self._music is not None:
            self._music.cancel(er.music, err)
        if er.finishing is not None:
            er.finishing.cancel()  # not started: never runs; running: its audio is dropped
        er.stage = "done"
        self._ended.append(handle)

    @property
    def idle(self) -> bool:
        return not self._rows

    @property
    def rows(self) -> int:
        """Rows in the engine (every stage)."""
        return len(self._rows)

    def room(self) -> int:
        """Rows that can join the LLaMA stage now without waiting for a slot."""
        waiting = sum(1 for er in self._rows.values() if er.stage == "encoding")
        return max(0, self.text.free_slots - waiting)

    @torch.no_grad()  # as chat_batch: the encoders' inference tensors go through the bridges untracked
    def step(self) -> dict[int, Any]:
        """One step of every stage; -> {handle: Reply or exception} of the rows that ended in it."""
        ended = self._ended
        self._ended = []
        self._reap_finished()
        self._encode_one()
        for tr in self.text.step():
            self._after_thinking(self._owner("text", tr), tr)
        if self._music is not None:
            for sr in self._music.step():
                self._after_music(self._owner("music", sr), sr)
        self._decode_whole_one()
        for h, er in self._rows.items():
            if er.stage == "done" and h not in ended:
                ended.append(h)
        out = {}
        for h in ended:
            er = self._rows.pop(h, None)
            if er is not None:
                out[h] = er.row if isinstance(er.row, BaseException) else er.row.result()
        if self.idle:
            self.text.release()
        elif not out and all(er.stage == "finishing" for er in self._rows.values()):
            self._wait_finishing()  # nothing to step: wait (a little) for the finisher instead of spinning
        return out

    def abort(self, error: BaseException) -> dict[int, Any]:
        """End every row with ``error`` (after an error of a stage itself, e.g. out of memory); the engine is
        empty and usable again. -> {handle: error}."""
        out = {}
        for h, er in list(self._rows.items()):
            out[h] = er.row if isinstance(er.row, BaseException) else (er.row.error or error)
        self._rows.clear()
        self._ended = []
        self.text = TextStage(self.model.llama, self.model.tokenizer, self.max_rows, self.prefill_chunk)
        self.model.llama.clear_cache()
        self._music = None
        return out

    def warm_up(self, music_s: float = 30.0) -> None:
        """Run each stage's decode step once at every fixed batch size (compiled steps compile now, once per
        size, instead of at the first jobs); ``music_s``: the music pool's length (rows of up to that many
        seconds then run the warmed shapes)."""
        self.text.warm_up(self.model.adapters())
        music = self._music_stage()
        if music is not None:
            dec = self.model.decoder
            music.warm_up(dec.num_new_tokens(music_s, self.model.cfg.musicgen_tokens_per_s) + 64)

    # --- stages ------------------------------------------------------------------------------------------
    def _owner(self, stage: str, part) -> int:
        return next(h for h, er in self._rows.items() if (er.text if stage == "text" else er.music) is part)

    def _music_stage(self) -> MusicGenStage | None:
        dec = self.model.decoder
        if self._music is None and hasattr(dec, "_loop_row"):  # MusicGen(-Melody): a step loop
            self._music = MusicGenStage(dec._loop(), 2 * self.max_rows, self.prefill_chunk)
        return self._music

    def _encode_one(self) -> None:
        """Encode the waiting rows without inputs (no encoder runs) and at most one with inputs."""
        for er in [er for er in self._rows.values() if er.stage == "encoding"]:
            req = er.row.req
            heavy = any(x is not None for x in (req.audio, req.image, req.video))
            self._encode(er)
            if heavy:
                return

    def _encode(self, er: "_EngineRow") -> None:
        row, model = er.row, self.model
        if not model._guard(row, model._encode_row, row):
            er.stage = "done"
            return
        er.stage, er.t0 = "thinking", time.perf_counter()
        er.text = TextRow(ids=row.ids, max_new_tokens=row.max_new_tokens, temperature=row.temperature,
                          top_p=row.top_p, generator=torch.Generator(device=model.device).manual_seed(row.seed),
                          adapters=row.adapters, audio_token_ids=list(model.audio_token_ids),
                          on_step=self._streamer(row) if row.req.on_event is not None else None)
        try:
            self.text.admit(er.text)
        except Exception as e:
            row.error, er.stage = e, "done"

    def _streamer(self, row):
        from m2ugen.model import Event, _clean

        tokenizer = self.model.tokenizer

        def on_step(tokens: list[int]) -> None:
            so_far = tokenizer.decode(tokens, skip_special_tokens=True).split("\n", 1)[0]  # official
            row.emit(Event("thinking", min(1.0, len(tokens) / row.max_new_tokens), _clean(so_far)))

        return on_step

    def _after_thinking(self, handle: int, tr: TextRow) -> None:
        er, model = self._rows[handle], self.model
        row = er.row
        er.text = None
        row.timings["thinking"] = time.perf_counter() - er.t0
        if tr.error is not None:
            row.error = row.error or tr.error
            er.stage = "done"
            return
        with self.text.unbound():  # teacher forcing runs the LLaMA without the cache
            ok = model._guard(row, model._finish_reply, row, tr.result)
        if not ok or not row.decode_music:
            er.stage = "done"
            return
        er.stage, er.t0 = "generating", time.perf_counter()
        try:
            er.decode = model._decode_row(row)
            music = self._music_stage()
            if music is not None:
                loop_row, er.info = model.decoder._loop_row(er.decode)
                er.music = music.admit(loop_row)
        except Exception as e:
            row.error, er.stage = e, "done"

    def _after_music(self, handle: int, sr) -> None:
        er = self._rows[handle]
        row = er.row
        er.music, er.stage = None, "done"
        row.timings["generating"] = time.perf_counter() - er.t0
        if sr.result.error is not None:
            row.error = row.error or sr.result.error
            return
        if self.finisher is not None and er.decode.vocoder != "mbd":  # MBD reports progress: on this thread
            er.stage = "finishing"
            er.finish_args = (er.decode, sr.result.tokens, er.info)
            er.finishing = self.finisher.submit(self._audio_of, *er.finish_args)
            return
        try:
            audio, row.timings["vocoder"] = self._audio_of(er.decode, sr.result.tokens, er.info)
        except Exception as e:  # e.g. MBD's progress cancelling this row
            row.error = e
            return
        self._finish_audio(row, audio)

    def _audio_of(self, decode, tokens, info) -> tuple[Any, float]:
        """The row's codes -> audio (EnCodec or MBD), and the seconds it took (on any thread)."""
        t0 = time.perf_counter()
        with torch.inference_mode():  # as generate_batch runs it (EnCodec's kernels: the same bits)
            audio = self.model.decoder._finish_row(decode, tokens, info)
        return audio, time.perf_counter() - t0

    def _reap_finished(self) -> None:
        """Rows whose audio the finisher made: their last event, here (callbacks stay on this thread)."""
        for er in self._rows.values():
            if er.stage != "finishing" or not er.finishing.done():
                continue
            fut, er.finishing, er.stage = er.finishing, None, "done"
            try:
                audio, er.row.timings["vocoder"] = fut.result()
            except Exception as e:
                er.row.error = er.row.error or e
                continue
            self._finish_audio(er.row, audio)

    def _wait_finishing(self, timeout_s: float = 0.05) -> None:
        """Nothing left to step: make a row's audio here when the finisher has not started it (it is busy with
        another row's, or with a job's results: rows that end together would otherwise queue behind each other
        while this thread idles), else wait a little for the finisher."""
        from concurrent.futures import FIRST_COMPLETED, Future, wait

        for er in self._rows.values():
            if er.stage == "finishing" and er.finishing.cancel():  # still queued: it never runs there now
                er.finishing = Future()
                er.finishing.set_running_or_notify_cancel()
                try:
                    er.finishing.set_result(self._audio_of(*er.finish_args))
                except Exception as e:
                    er.finishing.set_exception(e)
                return
        wait([er.finishing for er in self._rows.values() if er.finishing is not None], timeout=timeout_s,
             return_when=FIRST_COMPLETED)

    def _finish_audio(self, row, audio) -> None:
        from m2ugen.model import Event

        row.audio = np.asarray(audio, dtype=np.float32)[:, :row.keep]
        self.model._guard(row, row.emit, Event("generating", 1.0, ""))

    def _decode_whole_one(self) -> None:
        """A decoder without a step loop (AudioLDM2): one waiting row decoded whole per step."""
        if hasattr(self.model.decoder, "_loop_row"):
            return
        er = next((er for er in self._rows.values() if er.stage == "generating"), None)
        if er is None:
            return
        er.stage = "done"
        out = self.model.decoder.generate_batch([er.decode])[0]
        er.row.timings["generating"] = time.perf_counter() - er.t0
        if isinstance(out, BaseException):
            er.row.error = er.row.error or out
        else:
            self._finish_audio(er.row, out)
