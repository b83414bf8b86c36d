"""server.audio_io: decoding every supported format, cropping, limits, resampling, mixing, length and fades."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from m2ugen import media
from server import audio_io


def encode(x: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,subtype,sr,channels", [
    ("WAV", "PCM_16", 44100, 2), ("WAV", "PCM_24", 48000, 1), ("WAV", "FLOAT", 22050, 6),
    ("WAV", "PCM_U8", 8000, 1), ("FLAC", "PCM_16", 96000, 2), ("OGG", "VORBIS", 44100, 2),
    ("MP3", "MPEG_LAYER_III", 44100, 2), ("AIFF", "PCM_16", 32000, 1),
])
def test_decode_formats_channels_rates(fmt, subtype, sr, channels):
    x = tone(0.5, sr, channels)
    wave, got_sr = media.decode_audio(encode(x, sr, fmt, subtype), name="clip")
    assert got_sr == sr and wave.dtype == np.float32 and wave.shape[0] == channels
    assert abs(wave.shape[1] - x.shape[1]) <= 2048  # lossy codecs pad a little
    if fmt in ("WAV", "FLAC", "AIFF"):
        assert wave.shape[1] == x.shape[1]
        assert np.abs(wave - x).max() < 0.02


def test_decode_from_path_and_crop(tmp_path):
    x = tone(2.0, 16000, 2)
    p = tmp_path / "a.flac"
    sf.write(p, x.T, 16000)
    wave, sr = media.decode_audio(p, start=0.5, end=1.25)
    assert sr == 16000 and wave.shape == (2, 12000)
    assert np.allclose(wave, x[:, 8000:20000], atol=1e-4)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"), (b"definitely not audio" * 20, "cannot be decoded"),
])
def test_decode_rejects_junk(data, match):
    with pytest.raises(media.MediaError, match=match):
        media.decode_audio(data, name="upload")


def test_decode_rejects_nan_long_big_and_bad_crop():
    x = tone(1.0, 8000, 1)
    x[0, 10] = np.inf
    with pytest.raises(media.MediaError, match="NaN or infinite"):
        media.decode_audio(encode(x, 8000, "WAV", "FLOAT"))
    ok = encode(tone(2.0, 8000, 1), 8000, "WAV", "PCM_16")
    with pytest.raises(media.MediaError, match="limit is 1 s"):
        media.decode_audio(ok, max_seconds=1.0)
    media.decode_audio(ok, max_seconds=1.0, start=0.0, end=0.9)  # a crop inside the limit is fine
    with pytest.raises(media.MediaError, match="MiB"):
        media.decode_audio(ok, max_bytes=1000)
    with pytest.raises(media.MediaError, match="past the end"):
        media.decode_audio(ok, start=3.0)


def test_resample_and_mix():
    x = tone(1.0, 32000, 1, freq=1000.0)
    y = audio_io.resample(x, 32000, 44100)
    assert y.shape == (1, 44100) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) - 1000) <= 1  # 1 Hz bins: the tone stays at 1 kHz
    st = audio_io.mix_channels(x, 2)
    assert st.shape == (2, 32000) and np.array_equal(st[0], st[1])
    mono = audio_io.mix_channels(np.stack([x[0], -x[0]]), 1)
    assert np.allclose(mono, 0.0)
    assert audio_io.mix_channels(np.zeros((3, 10), np.float32), 5).shape == (5, 10)


def test_fit_length_trims_pads_and_fades():
    sr = 1000
    x = np.ones((1, 500), np.float32)
    padded = audio_io.fit_length(x, 800, sr, fade_s=0.01)
    assert padded.shape == (1, 800)
    assert padded[0, 0] == 0.0 and padded[0, 250] == 1.0 and padded[0, 499] == 0.0
    assert np.all(padded[0, 500:] == 0.0)
    trimmed = audio_io.fit_length(x, 300, sr, fade_s=0.01)
    assert trimmed.shape == (1, 300) and trimmed[0, 299] == 0.0 and trimmed[0, 150] == 1.0


def test_prepare_output_exact_shape_and_wav_roundtrip(tmp_path):
    model_out = np.random.default_rng(0).standard_normal((1, 32000 * 3)).astype(np.float32) * 2.0
    y = audio_io.prepare_output(model_out, 32000, 48000, 2, 2.5)
    assert y.shape == (2, 120000) and np.abs(y).max() <= 1.0
    path = tmp_path / "sub" / "out.wav"
    audio_io.write_wav(path, y, 48000)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 120000, "PCM_24")
    assert not list(path.parent.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_m4a_decodes_through_the_one_decoder_the_server_uses(server, tmp_path):
    """An AAC .m4a (not readable by libsndfile) reaches the server's intake through PyAV, as in `m2ugen chat`."""
    import av

    from server.client import Client

    path = tmp_path / "clip.m4a"
    sr = 44100
    x = tone(1.0, sr, 2)
    with av.open(str(path), "w", format="ipod") as out:
        st = out.add_stream("aac", rate=sr, layout="stereo")
        for i in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 1024]), format="fltp", layout="stereo")
            frame.sample_rate = sr
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))
    wave, got_sr = media.decode_audio(path, sample_rate=32000, max_channels=2, dtype="int16")
    assert got_sr == 32000 and wave.shape[0] == 2 and abs(wave.shape[1] / 32000 - 1.0) < 0.1
    with Client(server) as c:
        r = c.call("submit", kind="ask", params={"prompt": "what is this?", "max_new_tokens": 2},
                   inputs={"audio": c.upload(path)})
    assert r.op == "accepted", r.header
