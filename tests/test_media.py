"""Input loading and validation: every bad input gives a ValueError that names the problem."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from m2ugen.media import frame_indices, load_audio, load_image, load_video_audio, load_video_frames


def _tone(sr: int, seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right][:channels]).astype(np.float32)  # [channels, samples]


def _write_video(path, n_frames: int, size=(32, 24), codec="mpeg4", with_audio=False) -> list[np.ndarray]:
    """Write a tiny video whose frame i has mean brightness ~ 8*i; returns the frames written."""
    w, h = size
    frames = []
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=10)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if with_audio:
            aus = out.add_stream("aac", rate=16000)
            aus.layout = "mono"
        for i in range(n_frames):
            img = np.full((h, w, 3), min(8 * i + 16, 240), dtype=np.uint8)
            frames.append(img)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if with_audio:
            t = np.arange(16000) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[None, :]
            for start in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp", layout="mono")
                af.sample_rate = 16000
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode():
                out.mux(packet)
    return frames


# ----------------------------------------------------------------------------------------------
# audio: good inputs


@pytest.mark.parametrize("fmt,ext,subtype", [("WAV", "wav", "PCM_16"), ("FLAC", "flac", "PCM_24"), ("OGG", "ogg", "VORBIS")])
def test_stereo_48k_file_becomes_mono_24k(tmp_path, fmt, ext, subtype):
    wave = _tone(48000, 1.5)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, wave.T, 48000, format=fmt, subtype=subtype)
    out = load_audio(path, 24000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.shape[0] - 36000) <= 2
    # mean of channels: the 440 Hz part at half amplitude of the left channel -> peak ~ 0.375
    assert 0.3 < np.abs(out).max() < 0.45


def test_wave_tuple_numpy_torch_and_int16():
    wave = _tone(48000, 1.0)
    a = load_audio((wave, 48000), 24000)
    b = load_audio((torch.from_numpy(wave), 48000), 24000)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (24000,)
    mono = load_audio((wave[0], 24000), 24000)  # no resampling when the rate matches
    np.testing.assert_array_equal(mono, wave[0])
    pcm = (wave[0] * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio((pcm, 24000), 24000), wave[0], atol=1e-4)


# ----------------------------------------------------------------------------------------------
# audio: bad inputs


@pytest.mark.parametrize(
    "audio,match",
    [
        ((np.zeros(0, np.float32), 24000), "empty"),
        ((np.zeros((2, 0), np.float32), 24000), "empty"),
        ((np.full(100, np.nan, np.float32), 24000), "all NaN"),
        ((np.array([0.1, np.inf, 0.2], np.float32), 24000), "non-finite"),
        ((np.zeros(100, np.float32), 0), "sample rate must be positive"),
        ((np.zeros(100, np.float32), -8000), "sample rate must be positive"),
        ((np.zeros((2, 2, 10), np.float32), 24000), "1-D"),
        ((np.zeros((48000, 2), np.float32), 24000), r"\[samples, channels\]"),
        (12345, "wave, sample_rate"),
    ],
)
def test_bad_audio_raises_value_error(audio, match):
    with pytest.raises(ValueError, match=match):
        load_audio(audio, 24000)


def test_audio_too_long():
    with pytest.raises(ValueError, match=r"3\.0 s long; the limit is 2 s"):
        load_audio((np.zeros(72000, np.float32), 24000), 24000, max_seconds=2)


def test_audio_file_too_long_is_refused(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(8000 * 5, np.float32), 8000)
    with pytest.raises(ValueError, match=r"long\.flac' is 5\.0 s long; the limit is 4 s"):
        load_audio(path, 24000, max_seconds=4)
    assert load_audio(path, 8000, max_seconds=5).shape == (40000,)


def test_bad_audio_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load_audio(empty, 24000)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    with pytest.raises(ValueError, match="cannot be decoded"):
        load_audio(text, 24000)
    with pytest.raises(ValueError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 24000)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros((0, 2), np.float32), 48000)
    with pytest.raises(ValueError, match="0 samples"):
        load_audio(zero, 24000)


# ----------------------------------------------------------------------------------------------
# images


def test_rgba_png_becomes_rgb(tmp_path):
    arr = np.zeros((6, 5, 4), np.uint8)
    arr[..., 0] = 200
    arr[..., 3] = 255
    arr[0, 0, 3] = 0  # one fully transparent pixel -> white
    path = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 6)
    px = np.asarray(img)
    assert tuple(px[1, 1]) == (200, 0, 0)
    assert tuple(px[0, 0]) == (255, 255, 255)


def test_image_modes_and_arrays():
    assert load_image(Image.new("L", (4, 3), 7)).mode == "RGB"
    assert load_image(Image.new("P", (4, 3))).mode == "RGB"
    assert np.asarray(load_image(np.full((3, 4, 3), 9, np.uint8)))[0, 0, 0] == 9
    assert np.asarray(load_image(np.full((3, 4, 3), 1.0, np.float32)))[0, 0, 0] == 255
    assert load_image(np.zeros((3, 4), np.uint8)).size == (4, 3)


def test_bad_images(tmp_path):
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load_image(empty)
    text = tmp_path / "t.png"
    text.write_text("hello, not a picture")
    with pytest.raises(ValueError, match="not an image"):
        load_image(text)
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match="too small"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        load_image(np.full((2, 2, 3), 3.0, np.float32))
    with pytest.raises(ValueError, match="file path, a PIL image"):
        load_image(42)


# ----------------------------------------------------------------------------------------------
# video


def test_frame_indices():
    np.testing.assert_array_equal(frame_indices(9, 5), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(frame_indices(3, 5), [0, 0, 1, 2, 2])  # repeats to fill
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = frame_indices(100, 32, "reference", rng)
        assert len(idx) == 32 and idx.min() >= 0 and idx.max() < 100
        assert np.all(np.diff(idx) >= 0) and idx[-1] - idx[0] <= 31  # one 32-frame window
    with pytest.raises(ValueError, match="only 1 frame"):
        frame_indices(1, 4)
    with pytest.raises(ValueError, match="sampling"):
        frame_indices(10, 4, "random")


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_video_uniform_frames(tmp_path, codec):
    path = tmp_path / f"clip_{codec}.mp4"
    written = _write_video(path, 12, codec=codec)
    frames = load_video_frames(path, 4)
    assert len(frames) == 4
    assert all(f.dtype == np.uint8 and f.shape == (24, 32, 3) for f in frames)
    # uniform over the whole clip: frames 0, 4, 7, 11 (brightness ~ 8*i+16)
    expected = [written[i].mean() for i in (0, 4, 7, 11)]
    np.testing.assert_allclose([f.mean() for f in frames], expected, atol=6)


def test_video_reference_sampling_is_seeded(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path, 12)
    a = load_video_frames(path, 4, "reference", np.random.default_rng(3))
    b = load_video_frames(path, 4, "reference", np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_short_video_repeats_frames(tmp_path):
    path = tmp_path / "two.mp4"
    _write_video(path, 2)
    frames = load_video_frames(path, 5)
    assert len(frames) == 5
    assert np.array_equal(frames[0], frames[1])


def test_bad_videos(tmp_path):
    one = tmp_path / "one.mp4"
    _write_video(one, 1)
    with pytest.raises(ValueError, match="has only 1 frame; need at least 2"):
        load_video_frames(one, 4)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load_video_frames(empty, 4)
    text = tmp_path / "text.mp4"
    text.write_text("definitely not a video\n" * 50)
    with pytest.raises(ValueError, match="not a video"):
        load_video_frames(text, 4)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        load_video_frames([np.zeros((4, 4), np.uint8)] * 3, 2)


def test_video_soundtrack(tmp_path):
    silent = tmp_path / "silent.mp4"
    _write_video(silent, 3)
    assert load_video_audio(silent) is None
    loud = tmp_path / "loud.mp4"
    _write_video(loud, 10, with_audio=True)
    wave, sr = load_video_audio(loud)
    assert sr == 16000 and wave.dtype == np.float32
    assert abs(wave.shape[0] - 16000) < 3000 and 0.2 < np.abs(wave).max() < 0.45
    # and load_audio reads a video's soundtrack through the PyAV fallback
    assert abs(load_audio(loud, 8000).shape[0] - 8000) < 1500
