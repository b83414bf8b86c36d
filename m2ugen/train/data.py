"""Training data: readers for the official datasets in their published layouts, up-front validation,
the ``Dataset`` whose workers decode and resample the media, and the padding collate.

Layouts under one data root (the official ``../Datasets/<name>/``; reference doc §5.1-5.2):

===================  ===========================================  ===================================
reader               file                                         inputs
===================  ===========================================  ===================================
mucaps               MUCaps/MUCapsCaptions.json {file: caption}   MUCaps/audios/<file>
mucaps-decoder       the same file (stage 2: text -> caption+AUD)  none
coco                 COCO/COCOCaptions.json {file: caption}       COCO/train2014/<file>
muvideo-captions     MUVideo/MUVideoCaptions.json {file: caption} MUVideo/audioset_video/<file>
musicqa              MusicQA/MusicQA.json [{image_name, conv.}]   MusicQA/audios/<image_name>
alpaca               Alpaca/alpaca_data.json [{conversation}]     none
muimage              MUImage/MUImageInstructions.json             MUImage/audioset_images/<input_file>
muvideo              MUVideo/MUVideoInstructions.json             MUVideo/audioset_video/<input_file>
muedit               MUEdit/MUEditInstructions.json               MUEdit/audioset/<input_file>
===================  ===========================================  ===================================

``read_datasets`` lists every entry and every problem (missing or unreadable JSON or media file,
malformed entry, an answer whose ``[AUD]`` span does not fit in ``max_words``) with its file name;
``DatasetError`` carries all of them, so nothing is found missing mid-epoch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from m2ugen.config import AUDIO_TOKENS, PROMPT_TEMPLATE

AUD_SUFFIX = "".join(AUDIO_TOKENS)


class DatasetError(ValueError):
    """Problems found in the training data; ``problems`` lists them all (each names its file)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the training data:\n  {shown}{more}")


@dataclass
class Entry:
    """One training example: template(instruction) + answer, with an optional input file."""

    dataset: str
    source: str  # the JSON file it comes from
    index: int  # position in that file
    instruction: str
    answer: str
    modality: str = "text"  # "audio" | "image" | "video" | "text"
    media: str | None = None
    music_caption: str = ""  # non-empty: an MSE target (generation sample)

    @property
    def where(self) -> str:
        return f"{self.source} entry {self.index}"


@dataclass
class _Layout:
    folder: str
    json_name: str
    media_dir: str | None
    modality: str
    kind: str  # "captions" | "captions-decoder" | "qa" | "alpaca" | "instructions"


LAYOUTS: dict[str, _Layout] = {
    "mucaps": _Layout("MUCaps", "MUCapsCaptions.json", "audios", "audio", "captions"),
    "mucaps-decoder": _Layout("MUCaps", "MUCapsCaptions.json", None, "text", "captions-decoder"),
    "coco": _Layout("COCO", "COCOCaptions.json", "train2014", "image", "captions"),
    "muvideo-captions": _Layout("MUVideo", "MUVideoCaptions.json", "audioset_video", "video", "captions"),
    "musicqa": _Layout("MusicQA", "MusicQA.json", "audios", "audio", "qa"),
    "alpaca": _Layout("Alpaca", "alpaca_data.json", None, "text", "alpaca"),
    "muimage": _Layout("MUImage", "MUImageInstructions.json", "audioset_images", "image", "instructions"),
    "muvideo": _Layout("MUVideo", "MUVideoInstructions.json", "audioset_video", "video", "instructions"),
    "muedit": _Layout("MUEdit", "MUEditInstructions.json", "audioset", "audio", "instructions"),
}


# ----------------------------------------------------------------------------------------------
# reading


def _load_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: unreadable JSON ({e})")
        return None


def _conversation(item: Any, where: str, problems: list[str]) -> tuple[dict, dict] | None:
    conv = item.get("conversation") if isinstance(item, dict) else None
    if not isinstance(conv, list) or not conv or not all(isinstance(c, dict) for c in conv):
        problems.append(f"{where}: no 'conversation' list of turns")
        return None
    first, last = conv[0], conv[-1]
    if not isinstance(first.get("value"), str):
        problems.append(f"{where}: conversation[0].value is not a string")
        return None
    return first, last


def read_dataset(name: str, root: str | os.PathLike) -> tuple[list[Entry], list[str], int]:
    """(entries, problems, skipped) of one dataset under ``root``; ``skipped`` counts the entries the
    official reader skips too (instructions whose answer is null)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(LAYOUTS)}")
    lay = LAYOUTS[name]
    base = Path(root) / lay.folder
    jpath = base / lay.json_name
    problems: list[str] = []
    data = _load_json(jpath, problems)
    entries: list[Entry] = []
    skipped = 0
    if data is None:
        return entries, problems, skipped
    media_dir = base / lay.media_dir if lay.media_dir else None
    src = str(jpath)

    if lay.kind in ("captions", "captions-decoder"):
        if not isinstance(data, dict):
            return entries, [f"{jpath}: expected an object {{file name: caption}}"], 0
        for i, (fname, caption) in enumerate(data.items()):
            if not isinstance(caption, str) or not caption.strip():
                problems.append(f"{src} entry {i} ({fname!r}): caption is not a non-empty string")
                continue
            if lay.kind == "captions-decoder":
                # stage 2: instruction = caption, answer = caption + [AUD0..7] (no space), MSE on the caption
                entries.append(Entry(name, src, i, caption, caption + AUD_SUFFIX, "text", None, caption))
            else:
                entries.append(Entry(name, src, i, "", caption, lay.modality, str(media_dir / fname)))
        return entries, problems, skipped

    if not isinstance(data, list):
        return entries, [f"{jpath}: expected a list of entries"], 0
    for i, item in enumerate(data):
        where = f"{src} entry {i}"
        turns = _conversation(item, where, problems)
        if turns is None:
            continue
        first, last = turns
        if lay.kind == "instructions" and last.get("value") is None:
            skipped += 1  # official: entries without an answer are skipped
            continue
        if not isinstance(last.get("value"), str):
            problems.append(f"{where}: conversation[-1].value is not a string")
            continue
        if lay.kind == "alpaca":
            entries.append(Entry(name, src, i, first["value"], last["value"]))
            continue
        key = "image_name" if lay.kind == "qa" else "input_file"
        fname = item.get(key)
        if not isinstance(fname, str) or not fname:
            problems.append(f"{where}: no {key!r}")
            continue
        if lay.kind == "qa":
            entries.append(Entry(name, src, i, first["value"], last["value"], lay.modality, str(media_dir / fname)))
            continue
        caption = last.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            problems.append(f"{where}: conversation[-1].caption (the target music caption) is missing")
            continue
        entries.append(Entry(name, src, i, first["value"], last["value"] + " " + AUD_SUFFIX, lay.modality,
                             str(media_dir / fname), caption))
    return entries, problems, skipped


# ----------------------------------------------------------------------------------------------
# validation


def check_media(path: str, modality: str, mode: str = "header") -> str | None:
    """None when ``path`` is a readable file of that modality, else what is wrong (no file name)."""
    p = Path(path)
    if not p.exists():
        return "missing"
    if not p.is_file():
        return "not a file"
    try:
        if p.stat().st_size == 0:
            return "empty (0 bytes)"
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if mode == "exists":
        return None
    try:
        if modality == "image":
            from PIL import Image

            with Image.open(p) as im:
                im.verify()
        elif modality == "audio":
            return _check_audio_length(p, mode)
        elif modality == "video":
            _probe_av(p, "video")
    except Exception as e:  # any decoder complaint is a bad file: say which decoder said what
        return f"not a readable {modality} file ({type(e).__name__}: {e})"
    return None


MIN_AUDIO_S = 0.25  # a training clip shorter than this is a cut or broken file, not music


def _check_audio_length(p: Path, mode: str) -> str | None:
    """Header mode: the duration the header gives must reach ``MIN_AUDIO_S`` (libsndfile counts the frames
    actually present: a WAV cut after its header says so). Decode mode: decode it all, and the decoded
    length must reach the minimum and agree with the header (an mp3 whose header promises more)."""
    frames, sr = _audio_header(p)
    if mode == "decode":
        decoded = _decoded_frames(p)
        if frames and decoded < 0.9 * frames:
            return f"decodes to {decoded} samples although its header says {frames}: a cut or broken file"
        frames = decoded
    if sr and frames / sr < MIN_AUDIO_S:
        return (f"too short: {frames} samples ({1e3 * frames / sr:.0f} ms at {sr} Hz, under the {MIN_AUDIO_S:g} s "
                "minimum): a cut or broken file")
    return None


def _audio_header(p: Path) -> tuple[int, int]:
    """(frames, sample rate) from the file's header (soundfile, else PyAV's stream duration)."""
    import soundfile as sf

    try:
        info = sf.info(str(p))
        return int(info.frames), int(info.samplerate)
    except Exception:
        import av

        with av.open(str(p)) as c:
            if not c.streams.audio:
                raise ValueError("no audio stream") from None
            st = c.streams.audio[0]
            sr = int(st.rate or st.codec_context.sample_rate or 0)
            seconds = float(st.duration * st.time_base) if st.duration else (c.duration or 0) / 1e6
            return int(round(seconds * sr)), sr


def _decoded_frames(p: Path) -> int:
    import soundfile as sf

    try:
        with sf.SoundFile(str(p)) as f:
            n = 0
            while True:
                block = f.read(1 << 16, dtype="float32")
                if len(block) == 0:
                    return n
                n += len(block)
    except sf.LibsndfileError:
        import av

        with av.open(str(p)) as c:
            return sum(fr.samples for fr in c.decode(audio=0))


def _probe_av(p: Path, kind: str) -> None:
    import av

    with av.open(str(p)) as c:
        streams = c.streams.audio if kind == "audio" else c.streams.video
        if not streams:
            raise ValueError(f"no {kind} stream")


def check_text(entry: Entry, tokenizer, max_words: int) -> str | None:
    """The [AUD] span of a generation answer must survive truncation to ``max_words`` tokens."""
    if not entry.music_caption:
        return None
    ids = tokenize(entry, tokenizer, max_words)[0]
    aud = tokenizer.convert_tokens_to_ids(AUDIO_TOKENS[0])
    if aud not in ids.tolist() or len(ids) - ids.tolist().index(aud) < len(AUDIO_TOKENS):
        return f"the [AUD0..7] span does not fit in max_words={max_words} tokens"
    return None


def read_datasets(
    names: list[str] | tuple[str, ...],
    root: str | os.PathLike,
    *,
    tokenizer=None,
    max_words: int = 1024,
    validate: str = "header",
    on_progress: Callable[[float], None] | None = None,
) -> list[Entry]:
    """Every entry of the named datasets; DatasetError listing every problem (with file names) if any."""
    entries: list[Entry] = []
    problems: list[str] = []
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: data root is not a directory"])
    for name in names:
        e, p, _ = read_dataset(name, root)
        entries += e
        problems += p
    checked: dict[tuple[str, str], str | None] = {}
    for i, e in enumerate(entries):
        if e.media is not None:
            key = (e.media, e.modality)
            if key not in checked:
                checked[key] = check_media(e.media, e.modality, validate)
            if checked[key] is not None:
                problems.append(f"{e.media}: {checked[key]} ({e.modality} input of {e.where})")
        if tokenizer is not None:
            bad = check_text(e, tokenizer, max_words)
            if bad:
                problems.append(f"{e.where}: {bad}")
        if on_progress is not None and (i % 256 == 0 or i == len(entries) - 1):
            on_progress((i + 1) / max(1, len(entries)))
    if not entries and not problems:
        problems.append(f"{root}: no training entries in {', '.join(names)}")
    if problems:
        raise DatasetError(problems)
    return entries


# ----------------------------------------------------------------------------------------------
# tokens and the Dataset


def tokenize(entry: Entry, tokenizer, max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) as official: BOS + template(instruction) + answer, no EOS; the prompt's
    labels are 0 (ignored); truncated to ``max_words``, never padded here."""
    prompt = PROMPT_TEMPLATE.format(instruction=entry.instruction)
    ids = tokenizer(prompt + entry.answer).input_ids[:max_words]
    n_prompt = len(tokenizer(prompt).input_ids)
    input_ids = torch.tensor(ids, dtype=torch.long)
    labels = input_ids.clone()
    labels[:n_prompt] = 0
    return input_ids, labels


@dataclass
class BadSample:
    """A sample whose input could not be loaded in a worker; reported by the trainer with its file."""

    file: str
    where: str
    error: str


class TrainDataset(torch.utils.data.Dataset):
    """Entries -> dicts of tokens and decoded media. Media are decoded (audio resampled to the MERT
    rate) here, i.e. in the DataLoader workers; with a feature cache the cached encoder output is
    read instead."""

    def __init__(self, entries: list[Entry], tokenizer, model_cfg, max_words: int, cache=None, seed: int = 0):
        self.entries = entries
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.max_words = max_words
        self.cache = cache
        self.seed = seed

    def __len__(self) -> int:
        return len(self.entries)

    def load_media(self, e: Entry) -> Any:
        from m2ugen import media

        c = self.model_cfg
        if e.modality == "audio":
            return media.load_audio(e.media, c.audio_sample_rate, c.max_audio_s)
        if e.modality == "image":
            return np.asarray(media.load_image(e.media), dtype=np.uint8)
        if e.modality == "video":
            rng = np.random.default_rng([self.seed, e.index, len(e.media)])
            return np.stack(media.load_video_frames(e.media, c.video_frames, c.video_sampling, rng))
        return None

    def __getitem__(self, i: int) -> dict[str, Any] | BadSample:
        e = self.entries[i]
        try:
            input_ids, labels = tokenize(e, self.tokenizer, self.max_words)
            item: dict[str, Any] = dict(input_ids=input_ids, labels=labels, modality=e.modality,
                                        music_caption=e.music_caption, file=e.media or e.source, where=e.where)
            if e.media is not None:
                if self.cache is not None:
                    item["feats"] = self.cache.get(e.media, e.modality)
                else:
                    item["media"] = self.load_media(e)
            return item
        except Exception as err:  # reported (never swallowed) by the trainer, per its bad_samples policy
            return BadSample(e.media or e.source, e.where, f"{type(err).__name__}: {err}")


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] long, right-padded with 0
    labels: torch.Tensor  # [B, L] long, 0 = ignored
    modality: list[str]
    music_caption: list[str]
    files: list[str]
    media: list[Any]  # decoded input per row (None when absent or cached)
    feats: list[torch.Tensor | None]  # cached encoder output per row
    bad: list[BadSample] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def collate(items: list[dict[str, Any] | BadSample]) -> Batch:
    """Right padding with id 0 (labels 0 are ignored by the loss; causal attention never looks right)."""
    bad = [x for x in items if isinstance(x, BadSample)]
    good = [x for x in items if not isinstance(x, BadSample)]
    length = max((len(x["input_ids"]) for x in good), default=0)
    ids = torch.zeros(len(good), length, dtype=torch.long)
    labels = torch.zeros(len(good), length, dtype=torch.long)
    for r, x in enumerate(good):
        n = len(x["input_ids"])
        ids[r, :n] = x["input_ids"]
        labels[r, :n] = x["labels"]
    return Batch(ids, labels, [x["modality"] for x in good], [x["music_caption"] for x in good],
                 [x["file"] for x in good], [x.get("media") for x in good], [x.get("feats") for x in good], bad)
