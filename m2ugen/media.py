"""Loading and validating the model's inputs: audio, images and video.

Every function here turns user input into plain arrays the encoders accept, or raises ``ValueError``
naming the input and what is wrong with it, so bad input never reaches torch.

- audio: soundfile decodes files (WAV/FLAC/OGG/MP3/...), PyAV is the fallback for other containers
  (m4a, mp4 soundtracks); channels are averaged; soxr resamples.
- images: Pillow; every mode is converted to RGB (transparent pixels are composited onto white).
- video: PyAV decodes only the frames that are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SAMPLINGS = ("uniform", "reference")


def _describe(x: Any) -> str:
    if isinstance(x, (str, Path)):
        return f"{str(x)!r}"
    return type(x).__name__


def _check_file(path: str | os.PathLike, kind: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{kind} file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"{kind} path {str(p)!r} is not a file")
    if p.stat().st_size == 0:
        raise ValueError(f"{kind} file {str(p)!r} is empty (0 bytes)")
    return p


# ----------------------------------------------------------------------------------------------
# audio


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array ({e})") from None


def _checked_wave(wave: Any, name: str) -> np.ndarray:
    """[samples] or [channels, samples] numpy/torch, any numeric dtype -> float array (PCM integers
    scaled to [-1, 1)), same shape; ValueError naming what is wrong."""
    w = _to_numpy(wave, name)
    if w.dtype == np.bool_ or not np.issubdtype(w.dtype, np.number):
        raise ValueError(f"{name}: wave must be numeric, got dtype {w.dtype}")
    if np.issubdtype(w.dtype, np.complexfloating):
        raise ValueError(f"{name}: wave must be real-valued, got dtype {w.dtype}")
    if np.issubdtype(w.dtype, np.integer):  # PCM integers -> [-1, 1)
        info = np.iinfo(w.dtype)
        w = w.astype(np.float64) / float(max(abs(info.min), info.max + 1))
    if w.ndim == 2:
        if w.shape[0] > 16 and w.shape[1] <= 16:
            raise ValueError(
                f"{name}: wave of shape {list(w.shape)} looks like [samples, channels]; pass [channels, samples] "
                "(e.g. wave.T)"
            )
        if w.shape[0] == 0:
            raise ValueError(f"{name}: wave has 0 channels")
    elif w.ndim != 1:
        raise ValueError(f"{name}: wave must be 1-D [samples] or 2-D [channels, samples], got shape {list(w.shape)}")
    if w.size == 0 or w.shape[-1] == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    if np.isnan(w).all():
        raise ValueError(f"{name}: audio is all NaN")
    if not np.isfinite(w).all():
        bad = int((~np.isfinite(w)).sum())
        raise ValueError(f"{name}: audio contains {bad} non-finite value(s) (NaN or inf)")
    return w


def _decode_audio_file(p: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """-> (float32 [channels, samples], sample rate). soundfile first, then PyAV for other containers.

    With ``max_seconds``, a file whose header already says it is longer is refused before decoding.
    """
    import soundfile as sf

    if max_seconds is not None:
        try:
            info = sf.info(str(p))
        except Exception:
            info = None
        if info is not None and info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
            raise ValueError(f"audio file {str(p)!r} is {info.frames / info.samplerate:.1f} s long; "
                             f"the limit is {max_seconds:g} s")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # [frames, channels]
        return data.T, int(sr)
    except Exception as sf_error:  # libsndfile cannot read it: try ffmpeg through PyAV
        decoded = _decode_audio_with_av(p)
        if decoded is None:
            raise ValueError(f"audio file {str(p)!r} could not be decoded as audio ({sf_error})") from None
        return decoded[0][None, :], decoded[1]


def _decode_audio_with_av(p: Path) -> tuple[np.ndarray, int] | None:
    """First audio stream of any ffmpeg-readable file -> (float32 mono [samples], rate); None if none."""
    import av

    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate or None)
            chunks: list[np.ndarray] = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    rate = rate or int(out.sample_rate)
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    if not chunks or rate <= 0:
        return None
    return np.concatenate(chunks).astype(np.float32), rate


def load_audio(audio: Any, target_sr: int, max_seconds: float | None = None, channels: int | None = None) -> np.ndarray:
    """``(wave, sr)`` or a path -> float32 mono [samples] at ``target_sr`` (channels averaged, soxr resampling).

    ``channels`` (1 or 2): float32 [channels, samples] instead; a source with that many channels keeps
    them, any other is averaged to mono first (and copied to both channels for 2).
    """
    import soxr

    if target_sr <= 0:
        raise ValueError(f"target sample rate must be positive, got {target_sr}")
    if isinstance(audio, (str, os.PathLike)):
        p = _check_file(audio, "audio")
        name = f"audio file {str(p)!r}"
        wave, sr = _decode_audio_file(p, max_seconds)
        if wave.shape[-1] == 0:
            raise ValueError(f"{name} decodes to 0 samples")
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        wave, sr = audio
        name = "audio"
        if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
            raise ValueError(f"audio: sample rate must be a number, got {type(sr).__name__}")
        if not np.isfinite(sr) or sr <= 0:
            raise ValueError(f"audio: sample rate must be positive, got {sr}")
    else:
        raise ValueError(f"audio must be a (wave, sample_rate) pair or a file path, got {_describe(audio)}")

    if channels not in (None, 1, 2):
        raise ValueError(f"channels must be None, 1 or 2, got {channels!r}")
    w = _checked_wave(wave, name)  # [samples] or [C, samples]
    if channels is None or w.ndim == 1 or w.shape[0] != channels:
        w = w if w.ndim == 1 else w.mean(axis=0)
    w = np.ascontiguousarray(w, dtype=np.float32)
    seconds = w.shape[-1] / float(sr)
    if max_seconds is not None and seconds > max_seconds:
        raise ValueError(f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s")
    if float(sr) != float(target_sr):  # soxr: [samples] or [samples, channels]
        w = soxr.resample(w.T, float(sr), float(target_sr)).T.astype(np.float32, copy=False)
    if w.shape[-1] == 0:
        raise ValueError(f"{name} is too short: {seconds * 1e3:.3f} ms gives 0 samples at {target_sr} Hz")
    if channels is not None:
        w = np.broadcast_to(w if w.ndim == 2 else w[None], (channels, w.shape[-1]))
    return np.ascontiguousarray(w, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# images


def _pil_to_rgb(img: Image.Image, name: str) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise ValueError(f"{name} is too small: {img.width}x{img.height} pixels")
    if img.mode == "RGB":
        return img
    if img.mode == "P" or img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":  # composite transparent pixels onto white
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bit
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW (torch ToTensor layout) -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{name}: array must be HxW, HxWx3 or HxWx4, got shape {list(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} is too small: {arr.shape[1]}x{arr.shape[0]} pixels")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: array contains NaN or inf")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(
                f"{name}: float pixels must be in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]"
            )
        arr = np.round(arr * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"{name}: array dtype must be uint8 or float, got {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr))


def load_image(image: Any) -> Image.Image:
    """A path, PIL image or HWC array (uint8, or float in [0, 1]) -> an RGB ``PIL.Image``."""
    if isinstance(image, (str, os.PathLike)):
        p = _check_file(image, "image")
        name = f"image file {str(p)!r}"
        try:
            with Image.open(p) as img:
                img = ImageOps.exif_transpose(img)
                img.load()
        except UnidentifiedImageError:
            raise ValueError(f"{name} is not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"{name} could not be decoded ({e})") from None
        return _pil_to_rgb(img, name)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, "image")
    if isinstance(image, np.ndarray) or hasattr(image, "detach"):
        return _array_to_pil(_to_numpy(image, "image"), "image")
    raise ValueError(f"image must be a file path, a PIL image or an HxWxC array, got {_describe(image)}")


# ----------------------------------------------------------------------------------------------
# video


def frame_indices(
    num_available: int, num_frames: int, sampling: str = "uniform", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Which of ``num_available`` frames to keep (int64 [num_frames], non-decreasing).

    ``uniform``: spread over the whole clip, deterministic. ``reference``: the official
    ``sample_frame_indices(clip_len=num_frames, frame_sample_rate=1, seg_len=n)``: a random end index in
    ``[num_frames, n)`` and ``num_frames`` linearly spaced indices in the window before it. Clips with no
    more than ``num_frames`` frames (where the official code crashes) use ``uniform``, repeating frames.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"video sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_available < 2:
        raise ValueError(f"video has only {num_available} frame(s); need at least 2")
    if sampling == "reference" and num_available > num_frames:
        rng = rng if rng is not None else np.random.default_rng()
        end = int(rng.integers(num_frames, num_available))  # like np.random.randint(clip_len, seg_len)
        start = end - num_frames
        idx = np.linspace(start, end, num=num_frames)
        return np.clip(idx, start, end - 1).astype(np.int64)
    return np.round(np.linspace(0, num_available - 1, num=num_frames)).astype(np.int64)


def _open_video(p: Path, name: str):
    import av

    try:
        container = av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{name} is not a video PyAV can open ({e})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{name} has no video stream")
    return container


def _decode_frames(p: Path, name: str, wanted: set[int] | None) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the whole video stream; -> (frame count, {index: rgb24 frame} for the wanted indices)."""
    import av

    kept: dict[int, np.ndarray] = {}
    n = 0
    container = _open_video(p, name)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if wanted is not None and n in wanted:
                kept[n] = frame.to_ndarray(format="rgb24")
            n += 1
    except av.FFmpegError as e:
        if n == 0:
            raise ValueError(f"{name} could not be decoded ({e})") from None
        # a damaged tail: keep what decoded
    finally:
        container.close()
    return n, kept


def _header_frame_count(p: Path, name: str) -> int:
    container = _open_video(p, name)
    try:
        return int(container.streams.video[0].frames or 0)
    finally:
        container.close()


def load_video_frames(
    video: Any, num_frames: int, sampling: str = "uniform", rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """A video file (or pre-decoded frames [T, H, W, 3] uint8) -> ``num_frames`` uint8 RGB frames [H, W, 3].

    Only the selected frames are converted to RGB. The container's frame count is trusted when it is
    right; otherwise a second decoding pass counts the frames first.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"video sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if isinstance(video, (list, tuple, np.ndarray)):
        frames = [np.asarray(f) for f in video]
        for i, f in enumerate(frames):
            if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8 or f.shape[0] < 1 or f.shape[1] < 1:
                raise ValueError(
                    f"video frame {i} must be a uint8 HxWx3 array, got {f.dtype} {list(f.shape)}"
                )
        if len(frames) < 2:
            raise ValueError(f"video has only {len(frames)} frame(s); need at least 2")
        idx = frame_indices(len(frames), num_frames, sampling, rng)
        return [frames[i] for i in idx]
    if not isinstance(video, (str, os.PathLike)):
        raise ValueError(f"video must be a file path or a list of frames, got {_describe(video)}")

    p = _check_file(video, "video")
    name = f"video {str(p)!r}"
    n = _header_frame_count(p, name)
    if n >= 2:
        idx = frame_indices(n, num_frames, sampling, rng)
        actual, kept = _decode_frames(p, name, set(idx.tolist()))
        if actual == n and all(i in kept for i in idx):
            return [kept[i] for i in idx]
    # unknown or wrong count in the header: count, then decode the chosen frames
    n, _ = _decode_frames(p, name, None)
    if n < 2:
        raise ValueError(f"{name} has only {n} frame; need at least 2")
    idx = frame_indices(n, num_frames, sampling, rng)
    _, kept = _decode_frames(p, name, set(idx.tolist()))
    return [kept[i] for i in idx]


def load_video_audio(video: str | os.PathLike) -> tuple[np.ndarray, int] | None:
    """The soundtrack of a video file as (float32 mono [samples], sample rate), or None if it has none."""
    p = _check_file(video, "video")
    return _decode_audio_with_av(p)
