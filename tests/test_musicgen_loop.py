"""MusicGen's own batched decode loop (m2ugen.musicgen_loop) against transformers' generate, on tiny presets.

Bitwise: on CPU ``torch.manual_seed(s)`` (what transformers' sampling draws from) and a
``torch.Generator`` seeded with s give the same stream, and the loop computes the same logits, so at
batch 1 the loop's audio equals transformers' exactly; in a batch every row keeps its own generator.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from m2ugen.config import M2UGenConfig
from m2ugen.decoders import AudioLDM2Decoder, DecodeRow, MusicGenDecoder, build_decoder
from m2ugen.musicgen_loop import MusicGenLoop, delay_pattern, undelay


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: several OpenMP threads only spin
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _data_dir(tmp_path_factory):
    old = os.environ.get("M2UGEN_DATA_DIR")
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("m2ugen-data"))
    yield
    if old is None:
        os.environ.pop("M2UGEN_DATA_DIR", None)
    else:
        os.environ["M2UGEN_DATA_DIR"] = old


_DECODERS: dict[str, MusicGenDecoder] = {}


def decoder(preset: str) -> MusicGenDecoder:
    if preset not in _DECODERS:
        _DECODERS[preset] = build_decoder(M2UGenConfig.preset(preset))
    return _DECODERS[preset]


def source(channels: int, samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, samples))).astype(np.float32)


def embeds(seed: int, n: int = 8) -> torch.Tensor:
    return torch.randn(1, n, 32, generator=torch.Generator().manual_seed(seed))


CHROMA = np.eye(12, dtype=np.float32)[np.random.default_rng(1).integers(0, 12, 20)]

CASES = {
    "text": ("tiny", dict(text="a calm piano melody")),
    "text-no-guidance": ("tiny", dict(text="a calm piano melody", guidance_scale=1.0)),
    "embeds": ("tiny", dict(embeds=embeds(0))),
    "continue": ("tiny", dict(text="rock", prompt=source(1, 9000))),
    "continue-with-prompt": ("tiny", dict(text="rock", prompt=source(1, 9000), with_prompt=True)),
    "stereo": ("tiny-stereo", dict(text="wide synth pad")),
    "stereo-continue": ("tiny-stereo", dict(embeds=embeds(1), prompt=source(2, 7000), with_prompt=True)),
    "melody-text": ("tiny-melody", dict(text="rock")),
    "melody-chroma": ("tiny-melody", dict(text="rock", chroma=CHROMA)),
    "melody-embeds-chroma": ("tiny-melody", dict(embeds=embeds(2), chroma=CHROMA, guidance_scale=5.0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loop_equals_transformers_generate(case):
    preset, kw = CASES[case]
    d = decoder(preset)
    ours = d.generate(duration_s=0.5, seed=3, **kw)
    theirs = d.generate(duration_s=0.5, seed=3, engine="transformers", **kw)
    prompt_samples = d.prompt_samples(kw["prompt"].shape[1]) if kw.get("with_prompt") else 0
    assert ours.shape == theirs.shape == (d.channels, d.num_samples(0.5) + prompt_samples)
    np.testing.assert_array_equal(ours, theirs)


def test_the_inputs_reach_the_loop():
    """Not vacuous: seed, guidance, conditioning, prompt and chroma each change the loop's result."""
    d = decoder("tiny")
    base = d.generate(text="rock", duration_s=0.4, seed=3)
    for other in (dict(seed=4), dict(guidance_scale=1.0), dict(text="calm piano"),
                  dict(prompt=source(1, 4000))):
        kw = {**dict(text="rock", duration_s=0.4, seed=3), **other}
        assert not np.array_equal(base, d.generate(**kw)), other
    m = decoder("tiny-melody")
    assert not np.array_equal(m.generate(text="rock", duration_s=0.4, seed=3),
                              m.generate(text="rock", duration_s=0.4, seed=3, chroma=CHROMA))


def _mixed_rows(d: MusicGenDecoder) -> list[DecodeRow]:
    c = d.channels
    return [
        DecodeRow(text="rock", duration_s=0.5, seed=5, prompt=source(c, 9000)),
        DecodeRow(text="rock", duration_s=0.5, seed=5, guidance_scale=1.0, prompt=source(c, 9000)),
        DecodeRow(text="calm piano", duration_s=0.3, seed=6, guidance_scale=1.0),
        DecodeRow(embeds=embeds(3), duration_s=0.7, seed=7, guidance_scale=5.0),
        DecodeRow(embeds=embeds(4, n=3), duration_s=0.4, seed=9),
        DecodeRow(text="jazz", duration_s=0.4, seed=8, prompt=source(c, 4000, seed=2), with_prompt=True),
    ]


@pytest.mark.parametrize("preset", ["tiny", "tiny-stereo"])
def test_batch_equals_each_row_alone(preset):
    """Text and embeds (of two lengths), guidance on and off, three lengths, prompts of two lengths:
    one loop, and each row's audio is bitwise what it gives alone (and what transformers gives)."""
    d = decoder(preset)
    rows = _mixed_rows(d)
    batch = d.generate_batch(rows)
    for row, out in zip(rows, batch):
        alone = d.generate_batch([row])[0]
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, alone)
    np.testing.assert_array_equal(batch[3], d.generate(embeds=embeds(3), duration_s=0.7, seed=7, guidance_scale=5.0,
                                                       engine="transformers"))
    assert batch[2].shape == (d.channels, d.num_samples(0.3))
    assert batch[5].shape == (d.channels, d.num_samples(0.4) + 4000 // 640 * 640)
    assert not np.array_equal(batch[0], batch[1])  # the per-row guidance scale is used


def test_melody_batch_equals_each_row_alone():
    d = decoder("tiny-melody")
    rows = [DecodeRow(text="rock", duration_s=0.5, seed=5, chroma=CHROMA),
            DecodeRow(text="rock", duration_s=0.5, seed=5),
            DecodeRow(embeds=embeds(5), duration_s=0.6, seed=1),
            DecodeRow(text="a", duration_s=0.3, seed=2, guidance_scale=1.0, chroma=CHROMA[:5])]
    batch = d.generate_batch(rows)
    for row, out in zip(rows, batch):
        np.testing.assert_array_equal(out, d.generate_batch([row])[0])
    assert not np.array_equal(batch[0], batch[1])  # the chroma of row 0 only


class Cancelled(Exception):
    pass


def test_bad_and_cancelled_rows_leave_the_others_alone():
    d = decoder("tiny")
    n = d.num_new_tokens(0.5)
    seen: list[float] = []

    def cancel_at_five(fraction: float):
        seen.append(fraction)
        if fraction >= 5 / n:
            raise Cancelled("stop")

    progress: list[float] = []
    rows = [DecodeRow(text="rock", duration_s=0.5, seed=5, on_progress=progress.append),
            DecodeRow(text=None, duration_s=0.5),
            DecodeRow(text="rock", duration_s=0.0),
            DecodeRow(text="jazz", duration_s=0.5, seed=1, on_progress=cancel_at_five),
            DecodeRow(text="rock", duration_s=0.3, seed=2, chroma=CHROMA),  # not a melody decoder
            DecodeRow(embeds=torch.zeros(1, 4, 31), duration_s=0.5),
            DecodeRow(text="calm", duration_s=0.8, seed=6)]
    out = d.generate_batch(rows)
    assert isinstance(out[1], ValueError) and "exactly one" in str(out[1])
    assert isinstance(out[2], ValueError) and "positive number" in str(out[2])
    assert isinstance(out[3], Cancelled)
    assert len(seen) == 5  # dropped at once: never called again
    assert isinstance(out[4], ValueError) and "melody" in str(out[4])
    assert isinstance(out[5], ValueError) and "[1, 4, 32]" in str(out[5])
    np.testing.assert_array_equal(out[0], d.generate(text="rock", duration_s=0.5, seed=5))
    np.testing.assert_array_equal(out[6], d.generate(text="calm", duration_s=0.8, seed=6))
    # progress: the fraction of this row's own tokens, although another row runs longer
    assert len(progress) == n and progress[-1] == 1.0 and all(b > a for a, b in zip(progress, progress[1:]))
    with pytest.raises(Cancelled):
        d.generate(text="jazz", duration_s=0.5, on_progress=cancel_at_five)
    with pytest.raises(ValueError, match="engine"):
        d.generate(text="jazz", duration_s=0.5, engine="jax")


@pytest.mark.parametrize("preset", ["tiny", "tiny-stereo"])
def test_delay_pattern_is_transformers(preset):
    d = decoder(preset)
    dec = d.model.decoder
    k = dec.num_codebooks
    codes = torch.randint(0, 64, (k, 5), generator=torch.Generator().manual_seed(0))
    start = torch.full((k, 1), 64)
    for prompt in (None, codes):
        ids = start if prompt is None else torch.cat([start, prompt], dim=1)
        _, theirs = dec.build_delay_pattern_mask(ids, pad_token_id=64, max_length=ids.shape[1] + 12)
        ours = delay_pattern(k, d.channels, ids.shape[1] + 12, 64, prompt)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    filled = torch.where(ours == -1, torch.randint(0, 64, ours.shape), ours)
    theirs = filled[filled != 64].reshape(k, -1)  # transformers' own undelaying
    torch.testing.assert_close(undelay(filled, d.channels), theirs, rtol=0, atol=0)


def test_compiled_step_is_one_graph_with_the_eager_codes():
    """The decode step traced by torch.compile (fullgraph) once serves every position, two lengths and
    two batch compositions of one shape; the codes equal the eager loop's. (A counting backend keeps the
    test fast on CPU; ``compile=True`` uses inductor, same graph.)"""
    d = decoder("tiny")
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    rows = [DecodeRow(text="rock", duration_s=0.4, seed=5), DecodeRow(embeds=embeds(6), duration_s=0.6, seed=6)]
    eager = d.generate_batch(rows)
    torch._dynamo.reset()
    compiled = build_decoder(M2UGenConfig.preset("tiny"))
    compiled.compile = counting_backend
    out = compiled.generate_batch(rows)
    again = compiled.generate_batch([DecodeRow(text="jazz", duration_s=0.5, seed=1),
                                     DecodeRow(text="calm", duration_s=0.3, seed=2, guidance_scale=2.0)])
    assert len(graphs) == 1
    for a, b in zip(eager, out):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again[0], d.generate(text="jazz", duration_s=0.5, seed=1))
    assert compiled._decode_loop.length_multiple == 256  # the cache length is bucketed when compiling


def test_loop_cache_is_preallocated_once():
    """Static shapes: the KV cache is allocated once per batch shape, sized for the longest row, and kept
    (zeroed) for the next batch of that shape."""
    d = decoder("tiny")
    loop = MusicGenLoop(d.model)
    step = loop.step_module
    shapes = []
    original = step.forward

    def spy(hidden, pos):
        shapes.append((tuple(hidden.shape), tuple(step.keys_0.shape), step.keys_0.data_ptr()))
        return original(hidden, pos)

    step.forward = spy
    rows = [d._loop_row(DecodeRow(text="rock", duration_s=0.3, seed=1))[0],
            d._loop_row(DecodeRow(text="rock", duration_s=0.5, seed=1, guidance_scale=1.0))[0]]
    assert all(r.error is None for r in loop.run(rows))
    n = d.num_new_tokens(0.5)
    assert len(shapes) == n  # prefill + n - 1 steps
    assert {s[1] for s in shapes} == {(3, 2, 1 + n, 24)}  # 3 slots (2 + 1), 2 heads, the longest row
    assert len({s[2] for s in shapes}) == 1
    assert {s[0] for s in shapes[1:]} == {(3, 1, 48)}
    first = shapes[0][2]
    shapes.clear()
    loop.run([d._loop_row(DecodeRow(text="jazz", duration_s=0.5, seed=2, guidance_scale=1.0))[0],
              d._loop_row(DecodeRow(text="pop", duration_s=0.2, seed=3))[0]])
    assert {s[2] for s in shapes} == {first}


def test_audioldm2_generate_batch_is_serial_with_row_errors():
    d = build_decoder(M2UGenConfig.preset("tiny-audioldm2"))
    assert isinstance(d, AudioLDM2Decoder)
    emb = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(0))

    def cancel(fraction):
        raise Cancelled("stop")

    out = d.generate_batch([DecodeRow(embeds=emb, duration_s=0.2, seed=2),
                            DecodeRow(text="calm", duration_s=0.2, prompt=source(1, 3200)),
                            DecodeRow(embeds=emb, duration_s=0.2, seed=3, on_progress=cancel),
                            DecodeRow(embeds=emb, duration_s=0.2, seed=3)])
    np.testing.assert_array_equal(out[0], d.generate(embeds=emb, duration_s=0.2, seed=2))
    assert isinstance(out[1], ValueError) and "continue" in str(out[1])
    assert isinstance(out[2], Cancelled)
    assert out[3].shape == (1, 3200) and not np.array_equal(out[0], out[3])
