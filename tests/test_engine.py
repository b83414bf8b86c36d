"""Issue 25: continuous batching (m2ugen/engine.py). Driven step by step, without threads: rows join the
running LLaMA and MusicGen decodes and leave them the step they finish, and each row's result is the one
``chat`` gives it alone (text equal, audio bit for bit on CPU); a cancelled or failing row ends alone."""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import tone
from m2ugen import M2UGen, M2UGenConfig
from m2ugen.engine import RowCancelled
from m2ugen.model import ChatRequest, Event
from m2ugen.text_stage import BUCKETS

SR = 22050


@pytest.fixture(scope="module")
def model():
    return M2UGen.from_config(M2UGenConfig.preset("tiny"))


def requests():
    """Rows that differ in everything: text only hearing a source, music of two lengths (one greedy), a
    continuation of a source, and a long prompt (several prefill chunks)."""
    return [
        ChatRequest("Describe this music.", audio=(tone(1.0, SR, 1)[0], SR), want_audio=False, max_new_tokens=6,
                    seed=1),
        ChatRequest("Make a calm piano piece", want_audio=True, duration_s=0.3, max_new_tokens=4, seed=2),
        ChatRequest("Fast drums please, very loud", want_audio=True, duration_s=0.5, max_new_tokens=9,
                    temperature=0.0, seed=3),
        ChatRequest("Continue it", audio=(tone(1.0, SR, 1, 330.0)[0], SR), mode="continue", duration_s=0.2,
                    max_new_tokens=3, seed=4),
        ChatRequest("A long request: " + "warm analog synth pads with slow attack, " * 6, want_audio=True,
                    duration_s=0.25, max_new_tokens=5, seed=5),
    ]


@pytest.fixture(scope="module")
def solo(model):
    """Each of ``requests()`` run alone (``chat_batch`` of one row: what ``chat`` returns)."""
    return [alone(model, r) for r in requests()]


def alone(model, req: ChatRequest):
    return model.chat_batch([req])[0]


def assert_same(a, b):
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException), (a, b)
    assert a.raw_text == b.raw_text and a.seed == b.seed
    if a.audio is None:
        assert b.audio is None
    else:
        np.testing.assert_array_equal(a.audio, b.audio)


def run_to_end(engine, out: dict | None = None, on_step=None) -> dict:
    out = {} if out is None else out
    while not engine.idle:
        out.update(engine.step())
        if on_step is not None:
            on_step()
    return out


def occupied(engine) -> tuple[int, int]:
    text = sum(s is not None for s in engine.text.slots)
    music = 0 if engine._music is None else len({id(s) for s in engine._music.slots if s is not None})
    return text, music


def test_rows_that_join_a_running_decode_get_what_they_get_alone(model, solo):
    engine = model.engine(max_rows=4, prefill_chunk=8)
    reqs = requests()
    h = [engine.admit(reqs[0])]
    out = {}
    while engine.text.slots[0] is None or not engine.text.slots[0].generated:  # until A is decoding
        out.update(engine.step())
    h.append(engine.admit(reqs[1]))
    out.update(engine.step())
    h += [engine.admit(r) for r in reqs[2:]]  # 5 rows for 4 slots: the last waits for a free one
    most = [0, 0]

    def watch():
        t, m = occupied(engine)
        most[0], most[1] = max(most[0], t), max(most[1], m)

    run_to_end(engine, out, watch)
    assert most[0] >= 3 and most[1] >= 2  # rows really ran together in both stages
    for handle, s in zip(h, solo):
        assert_same(out[handle], s)
    assert len({out[x].raw_text for x in h}) == 5  # five different rows, not one copied
    assert out[h[1]].timings.keys() >= {"encoding", "thinking", "generating", "vocoder"}


def test_a_finished_row_leaves_at_once_and_its_slot_is_reused(model):
    engine = model.engine(max_rows=2)
    short = engine.admit(ChatRequest("hi", want_audio=False, max_new_tokens=2, seed=1, temperature=0.0))
    long = engine.admit(ChatRequest("tell me about jazz", want_audio=False, max_new_tokens=12, seed=2))
    out = {}
    while short not in out:
        out.update(engine.step())
    assert long not in out and not engine.idle  # the short row left while the long one runs on
    assert sum(s is not None for s in engine.text.slots) == 1
    third = engine.admit(ChatRequest("more please", want_audio=False, max_new_tokens=3, seed=3))
    run_to_end(engine, out)
    assert_same(out[long], alone(model, ChatRequest("tell me about jazz", want_audio=False, max_new_tokens=12, seed=2)))
    assert_same(out[third], alone(model, ChatRequest("more please", want_audio=False, max_new_tokens=3, seed=3)))


def test_a_joining_prompt_is_prefilled_in_chunks_while_the_running_rows_go_on(model):
    engine = model.engine(max_rows=2, prefill_chunk=16)
    a = engine.admit(ChatRequest("go", want_audio=False, max_new_tokens=30, seed=1, temperature=0.9))
    while engine.text.slots[0] is None or not engine.text.slots[0].generated:  # until A is decoding
        engine.step()
    row_a = engine.text.slots[0]
    b_req = requests()[4]
    b_req.want_audio = False
    b = engine.admit(b_req)
    before = len(row_a.generated)
    engine.step()  # b is encoded and its first chunk prefilled
    row_b = engine.text.slots[1]
    n_prompt = len(row_b.ids)
    assert n_prompt > 3 * 16 and row_b.prefilled == 16 and len(row_a.generated) == before + 1
    chunks = 1
    while row_b.prefilled < n_prompt:
        before, done_before = len(row_a.generated), row_b.prefilled
        engine.step()
        chunks += 1
        assert row_b.prefilled - done_before <= 16  # one chunk a step at most
        assert len(row_a.generated) == before + 1  # and the running row made its token in that step
    assert chunks == -(-n_prompt // 16)
    out = run_to_end(engine)
    b_alone = requests()[4]
    b_alone.want_audio = False
    assert_same(out[b], alone(model, b_alone))
    assert out[a].raw_text == alone(model, ChatRequest("go", want_audio=False, max_new_tokens=30, seed=1,
                                                       temperature=0.9)).raw_text


def test_a_joining_chunk_rides_in_the_decode_forward_and_computes_what_it_computes_alone(model):
    """fused_step: one forward for a decode step and a joining row's chunk gives each part what its own
    forward gives (decode_step; the prompt forward on the slot's view), and writes the same cache."""
    from m2ugen.text_stage import TextRow, fused_step

    llama = model.llama
    llama.setup_cache(4)
    try:
        with torch.no_grad():
            ids = list(range(5, 29))
            llama.bind_cache(0)
            llama(torch.tensor([ids[:7]]), start_pos=0)  # slot 0: 7 columns of a running row
            llama.bind_cache()
            tokens, pos = torch.tensor([[ids[7]], [3]]), torch.tensor([7, 4])  # slot 1: prefilling, a dummy at 4
            valid = torch.ones(2, llama.cache_len, dtype=torch.bool)
            row = TextRow(ids=list(range(30, 42)), max_new_tokens=1, temperature=0.0, top_p=1.0, generator=None,
                          slot=1, prefilled=4)
            llama.bind_cache(1)
            llama(torch.tensor([row.ids[:4]]), start_pos=0)
            llama.bind_cache()
            store = llama._kv_store
            before = [(c.k.clone(), c.v.clone()) for c in store]
            logits, h = llama.decode_step(tokens, pos, pos, valid)
            llama.bind_cache(1)
            c_logits, c_h = llama(torch.tensor([row.ids[4:10]]), start_pos=4)
            llama.bind_cache()
            alone = [(c.k.clone(), c.v.clone()) for c in store]
            for c, (k, v) in zip(store, before):
                c.k.copy_(k)
                c.v.copy_(v)
            f_logits, f_h, fc_logits, fc_h = fused_step(llama, tokens, pos, valid, None, row, 6)
        torch.testing.assert_close(f_logits, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(f_h, h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fc_logits, c_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fc_h, c_h[:, -1], rtol=1e-5, atol=1e-5)
        for c, (k, v) in zip(store, alone):
            torch.testing.assert_close(c.k[:2, :11], k[:2, :11], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(c.v[:2, :11], v[:2, :11], rtol=1e-5, atol=1e-5)
    finally:
        llama.clear_cache()


def test_joining_chunks_go_through_the_fused_step_while_rows_decode(model, monkeypatch):
    from m2ugen import text_stage

    fused, separate = [], []
    original_fused, original_chunk = text_stage.fused_step, text_stage.TextStage._prefill_chunk
    monkeypatch.setattr(text_stage, "fused_step", lambda *a, **k: fused.append(a[-1]) or original_fused(*a, **k))
    monkeypatch.setattr(text_stage.TextStage, "_prefill_chunk",
                        lambda self, row, n: separate.append(n) or original_chunk(self, row, n))
    engine = model.engine(max_rows=2, prefill_chunk=8)
    a = engine.admit(ChatRequest("go", want_audio=False, max_new_tokens=30, seed=1, temperature=0.9))
    engine.step()
    assert len(separate) == 1 and not fused  # alone: the whole prompt at once, nothing to fold into
    b_req = requests()[4]
    b_req.want_audio = False
    b = engine.admit(b_req)
    out = run_to_end(engine)
    assert len(separate) == 1 and len(fused) == -(-len(model.prompt_ids(b_req.prompt)) // 8)
    b_alone = requests()[4]
    b_alone.want_audio = False
    assert_same(out[b], alone(model, b_alone))
    assert out[a].raw_text == alone(model, ChatRequest("go", want_audio=False, max_new_tokens=30, seed=1,
                                                       temperature=0.9)).raw_text


def test_a_joining_row_whose_prefill_fails_or_is_cancelled_ends_alone(model, monkeypatch):
    from m2ugen import text_stage

    def broken(*a, **k):
        raise RuntimeError("chunk failed")

    running = ChatRequest("go on", want_audio=False, max_new_tokens=25, seed=4, temperature=0.8)
    solo_running = alone(model, running).raw_text
    for how in ("fails", "cancelled"):
        engine = model.engine(max_rows=3, prefill_chunk=8)
        a = engine.admit(running)
        engine.step()  # a prefilled whole, decoding
        joiner = requests()[4]
        joiner.want_audio = False
        b = engine.admit(joiner)
        c = engine.admit(ChatRequest("more please", want_audio=False, max_new_tokens=3, seed=3))
        engine.step()  # b and c take slots; b's first chunk rides in the decode step
        row_b = engine.text.slots[1]
        assert 0 < row_b.prefilled < len(row_b.ids)
        if how == "fails":
            with monkeypatch.context() as m:
                m.setattr(text_stage, "fused_step", broken)
                m.setattr(text_stage.TextStage, "_prefill_chunk",
                          lambda self, row, n: broken() if row is row_b else None)
                out = engine.step()
            assert isinstance(out[b], RuntimeError) and "chunk failed" in str(out[b])
        else:
            engine.cancel(b)
            out = engine.step()
            assert isinstance(out[b], RowCancelled)
        assert engine.text.slots[1] is None  # its slot is free at once
        out.update(run_to_end(engine))
        assert out[a].raw_text == solo_running
        assert_same(out[c], alone(model, ChatRequest("more please", want_audio=False, max_new_tokens=3, seed=3)))


def test_joining_never_moves_the_running_rows_cache(model):
    engine = model.engine(max_rows=4, prefill_chunk=8)
    engine.admit(ChatRequest("first row", want_audio=False, max_new_tokens=20, seed=1))
    while engine.text.slots[0] is None or not engine.text.slots[0].generated:  # until it decodes
        engine.step()
    kv = model.llama._kv_store[0]
    row = engine.text.slots[0]
    cols = row.column  # written so far
    ptr, before = kv.k.data_ptr(), kv.k[0, :cols].clone()
    engine.admit(requests()[4])
    for _ in range(3):  # the joiner is encoded and prefilled into its own slot
        engine.step()
    assert engine.text.slots[1] is not None and engine.text.slots[1].prefilled > 0
    assert kv.k.data_ptr() == ptr  # the pool was not reallocated
    torch.testing.assert_close(kv.k[0, :cols], before, rtol=0, atol=0)  # nor the running row's slot touched
    run_to_end(engine)
    assert not model.llama.has_cache  # released when idle


def test_decode_batches_have_fixed_sizes(model, monkeypatch):
    from m2ugen.musicgen_stage import bucket

    seen, music_seen = set(), set()
    step = model.llama.decode_step

    def counting(tokens, *a, **k):
        seen.add(tokens.shape[0])
        return step(tokens, *a, **k)

    monkeypatch.setattr(model.llama, "decode_step", counting)
    engine = model.engine(max_rows=4, prefill_chunk=64)  # a joining prompt in one step: the rows overlap
    model.decoder.load()
    music = engine._music_stage()
    module = music.step_module
    original = module.forward

    def forward(hidden, pos, first=0, upto=None, **kw):
        if hidden.shape[1] == 1:
            music_seen.add(hidden.shape[0])
        return original(hidden, pos, first, upto, **kw)

    monkeypatch.setattr(module, "forward", forward)
    reqs = requests()
    engine.admit(reqs[0])
    engine.step()
    for r in reqs[1:]:
        engine.admit(r)
        engine.step()
    run_to_end(engine)
    assert seen and seen <= set(BUCKETS) and 4 in seen  # 3 running rows ran as 4
    assert music_seen and music_seen <= {bucket(n, 8) for n in range(1, 9)}


def test_cancelling_one_row_mid_way_leaves_the_others(model, solo):
    class Cancel(Exception):
        pass

    def cancel_when_generating(ev: Event):
        if ev.stage == "generating" and ev.fraction > 0.3:
            raise Cancel()

    engine = model.engine(max_rows=4, prefill_chunk=8)
    reqs = requests()[:4]
    reqs[1].on_event = cancel_when_generating  # ends itself in the music stage (its on_event raises)
    h = [engine.admit(r) for r in reqs]
    out = {}
    while engine._rows[h[2]].text is None or not engine._rows[h[2]].text.generated:
        out.update(engine.step())
    engine.cancel(h[2])  # the caller ends one row while it thinks
    run_to_end(engine, out)
    assert isinstance(out[h[1]], Cancel)
    assert isinstance(out[h[2]], RowCancelled)
    for i in (0, 3):
        assert_same(out[h[i]], solo[i])


class HeldFinisher(Executor):
    """An executor that runs nothing until ``run_all``: a row's audio is pending for as many steps as the
    test wants, without threads."""

    def __init__(self):
        self.tasks: list = []

    def submit(self, fn, /, *args, **kwargs):
        fut = Future()
        self.tasks.append((fut, fn, args, kwargs))
        return fut

    def run_all(self) -> int:
        ran, self.tasks = self.tasks, []
        for fut, fn, args, kwargs in ran:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except Exception as e:
                    fut.set_exception(e)
        return len(ran)


def test_finished_rows_become_audio_on_the_finisher_while_the_others_decode(model, solo):
    held = HeldFinisher()
    engine = model.engine(max_rows=4, prefill_chunk=8, finisher=held)
    reqs = requests()[1:4]  # music of 0.3 s, 0.5 s, a 0.2 s continuation
    h = [engine.admit(r) for r in reqs]
    out = {}
    while not held.tasks:  # until the first row's codes are done
        out.update(engine.step())
    first = next(x for x in h if engine._rows[x].stage == "finishing")
    steps = engine._music.steps
    out.update(engine.step())
    assert engine._music.steps == steps + 1 and first not in out  # the others decode on, its audio pending
    events: list[Event] = []
    engine._rows[first].row.emit = events.append  # its last event comes from the stepping thread, when reaped
    while not engine.idle:
        held.run_all()
        out.update(engine.step())
    assert [e.stage for e in events] == ["generating"] and events[0].fraction == 1.0
    for handle, s in zip(h, solo[1:4]):
        assert_same(out[handle], s)
        assert out[handle].timings["vocoder"] > 0
    with ThreadPoolExecutor(1) as pool:  # a real thread gives the same bits
        engine = model.engine(max_rows=4, prefill_chunk=8, finisher=pool)
        h = [engine.admit(r) for r in requests()[1:4]]
        out = run_to_end(engine)
    for handle, s in zip(h, solo[1:4]):
        assert_same(out[handle], s)


def test_rows_left_only_finishing_get_their_audio_from_the_stepping_thread_too(model, solo):
    held = HeldFinisher()  # a finisher busy elsewhere: it starts nothing queued
    engine = model.engine(max_rows=4, prefill_chunk=8, finisher=held)
    h = [engine.admit(r) for r in requests()[1:4]]
    out = {}
    while any(er.stage != "finishing" for er in engine._rows.values()):
        out.update(engine.step())
    assert engine._rows and len(held.tasks) == len(engine._rows)  # their audio queued on the finisher
    for _ in range(2 * len(h)):  # nothing else to step: a queued row's audio made here, reported the next step
        out.update(engine.step())
    assert engine.idle and all(fut.cancelled() for fut, *_ in held.tasks)  # the finisher never ran them
    for handle, s in zip(h, solo[1:4]):
        assert_same(out[handle], s)
        assert out[handle].timings["vocoder"] > 0


def test_a_row_cancelled_or_failing_on_the_finisher_ends_alone(model, solo, monkeypatch):
    held = HeldFinisher()
    engine = model.engine(max_rows=4, prefill_chunk=8, finisher=held)
    h = [engine.admit(r) for r in requests()[1:3]]
    out = {}
    while not held.tasks:
        out.update(engine.step())
    pending = next(x for x in h if engine._rows[x].stage == "finishing")
    fut = held.tasks[0][0]
    engine.cancel(pending)
    out.update(engine.step())
    assert isinstance(out[pending], RowCancelled) and fut.cancelled()  # its audio is never made
    while not engine.idle:
        held.run_all()
        out.update(engine.step())
    other = next(x for x in h if x != pending)
    assert_same(out[other], solo[1 + h.index(other)])
    original = model.decoder._finish_row

    def finish_row(row, tokens, info):
        if row.duration_s < 0.4:
            raise RuntimeError("codec failed")
        return original(row, tokens, info)

    monkeypatch.setattr(model.decoder, "_finish_row", finish_row)
    engine = model.engine(max_rows=4, prefill_chunk=8, finisher=held)
    h = [engine.admit(r) for r in requests()[1:3]]
    out = {}
    while not engine.idle:
        held.run_all()
        out.update(engine.step())
    assert isinstance(out[h[0]], RuntimeError) and "codec failed" in str(out[h[0]])
    assert_same(out[h[1]], solo[2])


def test_a_failing_row_ends_alone(model, solo, monkeypatch):
    engine = model.engine(max_rows=4)
    bad = engine.admit(ChatRequest("x", duration_s=-1.0, want_audio=True))  # refused by its own checks
    good = engine.admit(requests()[1])
    broken = requests()[2]
    broken.mode = "melody"  # the tiny MusicGen cannot: refused before any work
    refused = engine.admit(broken)
    out = run_to_end(engine)
    assert isinstance(out[bad], ValueError) and "duration" in str(out[bad])
    assert isinstance(out[refused], ValueError)
    assert_same(out[good], solo[1])
    # a row whose decoder preparation raises mid-way (after thinking) fails; the row beside it does not
    engine = model.engine(max_rows=4)
    original = model._decode_row

    def decode_row(row):
        if row.req.prompt.startswith("Fast drums"):
            raise RuntimeError("boom")
        return original(row)

    monkeypatch.setattr(model, "_decode_row", decode_row)
    h = [engine.admit(requests()[1]), engine.admit(requests()[2])]
    out = run_to_end(engine)
    assert isinstance(out[h[1]], RuntimeError)
    assert_same(out[h[0]], solo[1])


def test_abort_empties_the_engine_and_it_serves_again(model, solo):
    engine = model.engine(max_rows=2)
    h = engine.admit(requests()[1])
    engine.step()
    engine.step()
    out = engine.abort(RuntimeError("oom"))
    assert isinstance(out[h], RuntimeError) and engine.idle and not model.llama.has_cache
    h = engine.admit(requests()[1])
    assert_same(run_to_end(engine)[h], solo[1])


def test_compiled_warm_up_compiles_each_size_once(model, solo):
    """warm_up runs every fixed size once; afterwards a run with rows joining and leaving traces nothing new
    (a counting backend stands in for inductor)."""
    compiled: list[tuple] = []

    def backend(gm, example_inputs):
        compiled.append(tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor))[:1])
        return gm.forward

    llama = model.llama
    llama.compile_decode(mode=None, backend=backend)
    model.decoder.compile = backend  # the MusicGen stage's decode step through the same counting backend
    try:
        engine = model.engine(max_rows=4)
        engine.warm_up(music_s=1.0)
        sizes = len(compiled)
        assert sizes == 3 + 4  # LLaMA batches of 1, 2, 4; MusicGen slots 1, 2, 4, 8
        reqs = requests()
        h = [engine.admit(reqs[0])]
        for r in (reqs[2], reqs[4]):
            engine.step()
            engine.step()
            h.append(engine.admit(r))
        out = run_to_end(engine)
        assert len(compiled) == sizes  # nothing compiled while rows joined and left
        for handle, i in zip(h, (0, 2, 4)):
            assert_same(out[handle], solo[i])
    finally:
        llama.eager_decode()
        model.decoder.compile = False


# --- the MusicGen stage alone, on the decoders the tiny M2UGen does not use: Melody (a decoder prefix
# instead of cross-attention) and stereo (interleaved codebooks), with audio prompts and unguided rows
def stage_run(d, rows, join_at: list[int], chunk: int = 4) -> dict[int, np.ndarray]:
    from m2ugen.musicgen_stage import MusicGenStage

    stage = MusicGenStage(d._loop(), slots=8, prefill_chunk=chunk)
    prepared = [d._loop_row(r) for r in rows]
    owner: dict[int, int] = {}
    out: dict[int, np.ndarray] = {}
    step = 0
    while len(out) < len(rows):
        for i, (loop_row, _) in enumerate(prepared):
            if join_at[i] == step:
                owner[id(stage.admit(loop_row))] = i
        for sr in stage.step():
            i = owner[id(sr)]
            assert sr.result.error is None, sr.result.error
            with torch.inference_mode():
                out[i] = d._finish_row(rows[i], sr.result.tokens, prepared[i][1])
        step += 1
    assert stage.idle
    return out


@pytest.mark.parametrize("preset", ["tiny-melody", "tiny-stereo"])
def test_music_stage_rows_that_join_later_equal_each_row_alone(preset):
    from m2ugen.decoders import DecodeRow, build_decoder

    d = build_decoder(M2UGenConfig.preset(preset))
    rng = np.random.default_rng(0)
    if preset == "tiny-melody":
        chroma = np.eye(12, dtype=np.float32)[rng.integers(0, 12, 20)]
        rows = [DecodeRow(text="rock", duration_s=0.5, seed=5, chroma=chroma),
                DecodeRow(text="a", duration_s=0.3, seed=2, guidance_scale=1.0, chroma=chroma[:5]),  # one slot
                DecodeRow(embeds=torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(5)),
                          duration_s=0.4, seed=1)]
    else:
        prompt = (0.1 * rng.standard_normal((2, 7000))).astype(np.float32)
        rows = [DecodeRow(text="wide synth pad", duration_s=0.4, seed=3),
                DecodeRow(text="rock", prompt=prompt, with_prompt=True, duration_s=0.3, seed=4),  # chunked prefill
                DecodeRow(text="calm", duration_s=0.2, seed=6, guidance_scale=1.0)]
    joined = stage_run(d, rows, join_at=[0, 3, 5])
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(joined[i], d.generate_batch([row])[0])
    assert not np.array_equal(joined[0][:, :1000], joined[2][:, :1000])


def test_music_stage_samples_rows_together_and_each_gets_what_it_gets_alone(monkeypatch):
    """Rows with their own seed, guidance (on, off, two scales), prompt length and conditioning share one
    step: their scores are guided, warped (temperature, top-k, top-p) and turned into probabilities in one
    call and only the draw is per row, and cross-attention stops at the longest kept prompt position; each
    row's audio is bitwise what it gives alone."""
    from m2ugen.decoders import DecodeRow, build_decoder
    from m2ugen.musicgen_loop import MusicGenStep
    from m2ugen.musicgen_stage import kept_length

    d = build_decoder(M2UGenConfig.preset("tiny"))
    gc = d.model.generation_config
    monkeypatch.setattr(gc, "temperature", 0.7)
    monkeypatch.setattr(gc, "top_p", 0.9)
    rows = [DecodeRow(text="rock", duration_s=0.4, seed=5),
            DecodeRow(text="rock", duration_s=0.4, seed=6),  # only the seed differs
            DecodeRow(text="rock", duration_s=0.4, seed=5, guidance_scale=1.0),  # only the guidance differs
            DecodeRow(text="a long calm piano melody with soft strings", duration_s=0.3, seed=7,
                      guidance_scale=5.0),
            DecodeRow(embeds=torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(5)), duration_s=0.2,
                      seed=1)]
    seen: list[int | None] = []
    forward = MusicGenStep.forward

    def spy(self, hidden, pos, first=0, upto=None, cross_upto=None):
        if hidden.shape[0] > 2:  # a decode step (a joining row's prefill has one or two slots)
            seen.append(cross_upto)
        return forward(self, hidden, pos, first=first, upto=upto, cross_upto=cross_upto)

    monkeypatch.setattr(MusicGenStep, "forward", spy)
    together = stage_run(d, rows, join_at=[0, 0, 0, 0, 2])
    lc = d._loop().step_module.cross_keys_0.shape[2]
    monkeypatch.setattr(MusicGenStep, "forward", forward)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(together[i], d.generate_batch([row])[0])
    assert not np.array_equal(together[0], together[1]) and not np.array_equal(together[0], together[2])

    def kept(row):
        r = d._loop_row(row)[0]
        return kept_length([r.cond] + ([r.uncond] if r.guided else []),
                           [r.cond_mask] + ([r.uncond_mask] if r.guided else []))

    assert seen[0] == max(kept(r) for r in rows[:4]) < lc  # the first decode: the four rows of step 0
    assert all(c is not None and c < lc for c in seen)  # never the padded tail


def test_kept_length_is_one_past_the_last_kept_position():
    from m2ugen.musicgen_stage import kept_length

    c = torch.zeros(6, 2)
    keep = torch.tensor([True, True, False, True, False, False])
    assert kept_length([c, c], [keep, torch.zeros(6, dtype=torch.bool)]) == 4  # the null branch keeps none
    assert kept_length([c], [torch.zeros(6, dtype=torch.bool)]) == 1
    assert kept_length([c[:3]], [None]) == 3
