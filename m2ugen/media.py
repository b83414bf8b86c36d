"""Loading and validating the model's inputs: audio, images and video.

Every function here turns user input into plain arrays the encoders accept, or raises ``ValueError``
naming the input and what is wrong with it, so bad input never reaches torch.

- audio: soundfile decodes files (WAV/FLAC/OGG/MP3/...), PyAV is the fallback for other containers
  (m4a, mp4 soundtracks); channels are averaged; soxr resamples.
- images: Pillow; every mode is converted to RGB (transparent pixels are composited onto white).
- video: PyAV decodes only the frames that are kept.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

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


# limits every decoder shares (the server's defaults, the model's when it is given a file)
MAX_AUDIO_S = 600.0
MAX_AUDIO_BYTES = 512 * 1024 * 1024
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
_BLOCK_FRAMES = 1 << 16


class MediaError(ValueError):
    """An input that cannot be used; ``kind`` is "audio", "image" or "video"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _Intake:
    """Downmix, resample (soxr, streaming) and store decoded blocks, so that memory is bounded by the
    output format (``channels`` x ``rate`` x ``dtype``) rather than by the source's."""

    def __init__(self, name: str, sr_in: int, channels_in: int, sample_rate: int | None, max_channels: int | None,
                 dtype: str):
        import soxr

        self.name = name
        self.channels = channels_in if max_channels is None or channels_in <= max_channels else 1
        self.sr_out = sr_in if sample_rate is None else int(min(sample_rate, sr_in))
        self.dtype = np.dtype(dtype)
        self.stream = None if self.sr_out == sr_in else soxr.ResampleStream(
            sr_in, self.sr_out, self.channels, dtype="float32", quality="HQ")
        self.blocks: list[np.ndarray] = []
        self.frames = 0

    def push(self, block: np.ndarray, last: bool = False) -> None:
        """``block``: float32 [frames, channels_in]."""
        if block.size and not np.isfinite(block).all():
            raise MediaError("audio", f"{self.name} contains NaN or infinite samples")
        if block.shape[1] != self.channels:
            block = block.mean(axis=1, keepdims=True)
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self.stream is not None:
            block = self.stream.resample_chunk(block, last=last).reshape(-1, self.channels)
        if not block.size:
            return
        self.frames += block.shape[0]
        if self.dtype.kind == "i":
            scale = float(np.iinfo(self.dtype).max)
            block = np.clip(np.round(block * scale), -scale - 1, scale).astype(self.dtype)
        self.blocks.append(block)

    def result(self) -> tuple[np.ndarray, int]:
        if not self.blocks:
            return np.zeros((self.channels, 0), self.dtype), self.sr_out
        wave = np.concatenate(self.blocks, axis=0).T
        self.blocks = []
        return np.ascontiguousarray(wave), self.sr_out


def _crop_frames(name: str, sr: int, total: int | None, start: float | None, end: float | None,
                 max_seconds: float) -> tuple[int, int | None]:
    """[start, end) seconds -> [s0, s1) frames (s1 None: to the end); checks the limit on the crop."""
    s0 = 0 if start is None else int(round(start * sr))
    s1 = None if end is None else int(round(end * sr))
    if total is not None:
        if start is not None and s0 >= total:
            raise MediaError("audio", f"{name}: start {start:g} s is past the end of the audio "
                                      f"({total / sr:.3f} s)")
        s1 = total if s1 is None else min(total, s1)
    if s1 is not None and (s1 - s0) / sr > max_seconds:
        raise MediaError("audio", f"{name} is {(s1 - s0) / sr:.1f} s long; the limit is {max_seconds:g} s "
                                  f"(crop it with start/end)")
    return s0, s1


def _decode_with_soundfile(opener: Any, name: str, start, end, max_seconds, sample_rate, max_channels, dtype):
    import soundfile as sf

    with sf.SoundFile(opener) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE or not 1 <= channels <= 64:
            raise MediaError("audio", f"{name} has an unusable header: {sr} Hz, {channels} channel(s) "
                                      f"(supported: {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, 1..64 channels)")
        total = int(f.frames) if 0 <= f.frames < 2**62 else None
        s0, s1 = _crop_frames(name, sr, total, start, end, max_seconds)
        limit = int(max_seconds * sr) + 1  # also when the header's frame count is unknown or wrong
        intake = _Intake(name, sr, channels, sample_rate, max_channels, dtype)
        if s0:
            f.seek(s0)
        left = (s1 - s0) if s1 is not None else None
        read = 0
        while left is None or left > 0:
            n = _BLOCK_FRAMES if left is None else min(_BLOCK_FRAMES, left)
            block = f.read(frames=n, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            read += block.shape[0]
            if read > limit:
                raise MediaError("audio", f"{name} is longer than {max_seconds:g} s (crop it with start/end)")
            if left is not None:
                left -= block.shape[0]
            intake.push(block)
        intake.push(np.zeros((0, channels), np.float32), last=True)
        return intake.result()


def _decode_with_av(source: Any, name: str, start, end, max_seconds, sample_rate, max_channels, dtype):
    """First audio stream of any ffmpeg-readable container, decoded and converted in blocks."""
    import av

    try:
        container = av.open(source)
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
        raise MediaError("audio", f"{name} cannot be decoded as audio: {e}") from None
    with container:
        if not container.streams.audio:
            raise MediaError("audio", f"{name} has no audio stream")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE or not 1 <= channels <= 64:
            raise MediaError("audio", f"{name} has an unusable header: {sr} Hz, {channels} channel(s)")
        keep = channels if max_channels is None or channels <= max_channels else 1
        rate = sr if sample_rate is None else int(min(sample_rate, sr))
        s0, s1 = _crop_frames(name, rate, None, start, end, max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono" if keep == 1 else "stereo" if keep == 2
                                      else None, rate=rate)
        intake = _Intake(name, rate, keep, None, None, dtype)
        limit = s0 + int(max_seconds * rate) + 1
        pos = 0

        def take(frames) -> bool:
            nonlocal pos
            for out in frames:
                block = out.to_ndarray().reshape(-1, keep)  # packed float: [frames, channels]
                a, b = pos, pos + block.shape[0]
                pos = b
                if b > limit:
                    raise MediaError("audio", f"{name} is longer than {max_seconds:g} s (crop it with start/end)")
                lo, hi = max(a, s0), b if s1 is None else min(b, s1)
                if hi > lo:
                    intake.push(block[lo - a:hi - a])
                if s1 is not None and pos >= s1:
                    return False
            return True

        try:
            for frame in container.decode(stream):
                if not take(resampler.resample(frame)):
                    break
            else:
                take(resampler.resample(None))
        except av.FFmpegError as e:
            if intake.frames == 0:
                raise MediaError("audio", f"{name} cannot be decoded as audio: {e}") from None
        if start is not None and pos <= s0:
            raise MediaError("audio", f"{name}: start {start:g} s is past the end of the audio ({pos / rate:.3f} s)")
        return intake.result()


def decode_audio(source: bytes | str | os.PathLike | BinaryIO, *, name: str = "audio", start: float | None = None,
                 end: float | None = None, max_seconds: float = MAX_AUDIO_S, max_bytes: int = MAX_AUDIO_BYTES,
                 sample_rate: int | None = None, max_channels: int | None = None,
                 dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Bytes, a path or an open binary file -> (wave [channels, samples], rate), cropped to [start, end) s.

    The one audio decoder of the project (the model and the server both use it). soundfile reads
    WAV/FLAC/OGG/MP3/AIFF; anything else ffmpeg reads (m4a, mp4 soundtracks...) goes through PyAV.
    Limits are checked before decoding where the header allows (size, rate, channels, duration) and
    while decoding otherwise, and the audio is converted block by block: with ``sample_rate`` (only
    ever down), ``max_channels`` (more channels are averaged to mono) and ``dtype`` ("float32" or
    "int16") the memory held is that of the output, whatever the source (a small FLAC can declare
    hours of 8-channel audio). Raises ``MediaError`` (a ValueError) naming the input.
    """
    import soundfile as sf

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
        open_sf: Any = lambda: io.BytesIO(data)
        open_av: Any = lambda: io.BytesIO(data)
    elif hasattr(source, "read") and hasattr(source, "seek"):  # an open binary file (read where it was checked)
        f = source
        size = f.seek(0, os.SEEK_END)

        def open_sf():
            f.seek(0)
            return f
        open_av = open_sf
    else:
        p = Path(source)
        if not p.is_file():
            raise MediaError("audio", f"{name} does not exist or is not a file")
        size = p.stat().st_size
        open_sf = open_av = lambda: str(p)
    if size == 0:
        raise MediaError("audio", f"{name} is empty (0 bytes)")
    if size > max_bytes:
        raise MediaError("audio", f"{name} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    if start is not None and end is not None and end <= start:
        raise MediaError("audio", f"{name}: end ({end:g} s) must be greater than start ({start:g} s)")
    args = (name, start, end, max_seconds, sample_rate, max_channels, dtype)
    try:
        wave, sr = _decode_with_soundfile(open_sf(), *args)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as sf_error:
        try:  # libsndfile cannot read it: try ffmpeg through PyAV
            wave, sr = _decode_with_av(open_av(), *args)
        except MediaError as av_error:
            if "cannot be decoded" in str(av_error) or "no audio stream" in str(av_error):
                raise MediaError("audio", f"{name} cannot be decoded as audio (WAV/FLAC/OGG/MP3/AIFF, or any "
                                          f"format ffmpeg reads): {sf_error}") from None
            raise
    if wave.shape[1] == 0:
        raise MediaError("audio", f"{name} has no samples (0 samples" + (")" if start is None and end is None
                                                                         else " in the crop range)"))
    return wave, sr


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
        wave, sr = decode_audio(p, name=name, max_seconds=MAX_AUDIO_S if max_seconds is None else max_seconds,
                                sample_rate=target_sr, max_channels=2 if channels == 2 else 1)
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


MAX_IMAGE_PIXELS = 50_000_000  # a decoded RGB image of this size holds 150 MB


def _open_image(p: Path, name: str) -> Image.Image:
    """Open lazily (the header only) and refuse images over MAX_IMAGE_PIXELS before decoding."""
    try:
        img = Image.open(p)
    except UnidentifiedImageError:
        raise MediaError("image", f"{name} is not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise MediaError("image", f"{name} is too large to decode ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError("image", f"{name} could not be decoded ({e})") from None
    pixels = img.width * img.height
    if pixels > MAX_IMAGE_PIXELS:
        img.close()
        raise MediaError("image", f"{name} is {img.width}x{img.height} pixels ({pixels / 1e6:.0f} MP); the limit "
                                  f"is {MAX_IMAGE_PIXELS / 1e6:.0f} MP")
    return img


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """Check that an image file can be used (readable, within the pixel limit, not truncated) without
    keeping it decoded; -> (width, height). Raises MediaError."""
    p = _check_file(path, "image")
    name = f"image {p.name!r}"
    img = _open_image(p, name)
    try:
        img.verify()
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError("image", f"{name} cannot be decoded: {e}") from None
    finally:
        img.close()
    return img.width, img.height


def load_image(image: Any) -> Image.Image:
    """A path, PIL image or HWC array (uint8, or float in [0, 1]) -> an RGB ``PIL.Image``."""
    if isinstance(image, (str, os.PathLike)):
        p = _check_file(image, "image")
        name = f"image file {str(p)!r}"
        try:
            with _open_image(p, name) as img:
                img = ImageOps.exif_transpose(img)
                img.load()
        except MediaError:
            raise
        except Image.DecompressionBombError as e:
            raise MediaError("image", f"{name} is too large to decode ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise MediaError("image", f"{name} could not be decoded ({e})") from None
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


def check_video(path: str | os.PathLike, min_frames: int = 2) -> int:
    """Check that a video file can be used: it opens, has a video stream and at least ``min_frames``
    decodable frames (only those are decoded); -> frames decoded. Raises MediaError."""
    import av

    p = _check_file(path, "video")
    name = f"video {p.name!r}"
    try:
        container = _open_video(p, name)
    except ValueError as e:
        raise MediaError("video", str(e)) from None
    n = 0
    try:
        for _ in container.decode(container.streams.video[0]):
            n += 1
            if n >= min_frames:
                break
    except (av.FFmpegError, ValueError) as e:
        if n == 0:
            raise MediaError("video", f"{name} cannot be decoded: {e}") from None
    finally:
        container.close()
    if n < min_frames:
        raise MediaError("video", f"{name} has {n} decodable frame(s); at least {min_frames} are needed")
    return n


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
    try:
        wave, sr = _decode_with_av(str(p), f"video {str(p)!r}", None, None, MAX_AUDIO_S, None, 1, "float32")
    except MediaError:
        return None
    return (wave[0], sr) if wave.shape[1] else None
