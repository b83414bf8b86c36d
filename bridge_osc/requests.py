"""Parse the arguments of incoming `/m2u/*` messages into `Request`s (see bridge_osc/README.md).

Every argument is first classed as `s` (string) or `n` (number: i/h/f/d, interchangeable); the class
string is then split at each address's last string (the audio / media path) and trailing numbers.
Free text that Pure Data and Max split into atoms is joined again with spaces, numbers inside it
included ("lofi beat at 90 bpm"). Anything that does not fit raises `ArgError` with a code and a
message that names the argument and the expected type tags.

`/m2u/submit` is different: name/value pairs from the one option table `OPTIONS` (text values are one
atom each), so a request carries all its options and the order does not matter.

Input files named by path (a device's sample, a clip, a MIDI file, an image) are read HERE, by the
bridge, which runs as the user, and sent to the server as bytes (`upload_inputs`): the server never
opens a client path, so a sample on a second drive works as one in the home folder.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from bridge_osc import osc
from bridge_osc.osc import Message
from server import protocol
from server.protocol import KINDS

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}

# The one table of request options: name -> (where it goes, value classes). `request`: a field of
# the Request itself; `params` / `context`: the submit's params / params.context (docs/protocol.md
# §2). Classes: i whole number, f number, s one string (a number atom is read as its text), b 0/1.
# `/m2u/submit` takes any of them; `/m2u/set` the params/context ones in SETTINGS.
_CLASS_OF = {"int": "i", "float": "f", "str": "s", "bool": "b"}
_REQUEST_OPTIONS: dict[str, tuple[str, str]] = {
    "prompt": ("request", "s"),
    "audio": ("request", "s"),
    "start": ("request", "f"),
    "end": ("request", "f"),
    "image": ("request", "s"),
    "video": ("request", "s"),
    "midi": ("request", "s"),
    "midi_notes": ("request", "s"),
    "duration": ("request", "f"),
    "results_dir": ("request", "s"),
    "reply_port": ("request", "i"),
    "clip": ("request", "s"),  # finetune: one training clip's path; repeat the option for each clip
    "upload": ("request", "s"),  # options sent before in pieces (/m2u/upload; bridge_osc/uploads.py)
    "tag": ("request", "s"),  # the client's name for this request, echoed in /m2u/accepted
}
REPEATABLE = ("clip",)
# the submit's params and params.context: server/protocol.py's one parameter table
_SPECS = {p.name: p for p in (*protocol.PARAMS, *protocol.CONTEXT) if p.name not in _REQUEST_OPTIONS}
OPTIONS: dict[str, tuple[str, str]] = {
    **_REQUEST_OPTIONS,
    **{name: (spec.where, _CLASS_OF[spec.type]) for name, spec in _SPECS.items()},
    "time_signature": ("context", "ii"),
}
# values that mean "not set" (a device sends every option, always): seed -1 = random, bars 0, sample_rate 0
_UNSET = {"seed": lambda v: v < 0, "bars": lambda v: v == 0, "sample_rate": lambda v: v == 0}

# name -> (where, classes) of the per-client `/m2u/set` settings; see README `/m2u/set`.
SETTINGS: dict[str, tuple[str, str]] = {name: OPTIONS[name] for name in (
    "seed", "temperature", "top_p", "max_new_tokens", "conditioning", "sample_rate", "channels",
    "bpm", "time_signature", "key", "adapter")}

USAGE = {
    "/m2u/hello": ",[i:reply_port]",
    "/m2u/ping": ",[i:reply_port]",
    "/m2u/generate": ",s:prompt… [f:duration] [s:image_or_video_path] [i:reply_port]",
    "/m2u/edit": ",s:prompt… s:audio [f:start f:end] [f:duration] [i:reply_port]",
    "/m2u/ask": ",s:question… s:audio [f:start f:end] [i:reply_port]",
    "/m2u/cancel": ",s:job [i:reply_port]",
    "/m2u/status": ",s:job [i:reply_port]",
    "/m2u/set": ",s:name value… [i:reply_port]",
    "/m2u/submit": ",s:kind (s:option value…)…",
    "/m2u/jobs": ",[i:limit] [i:reply_port]",
    "/m2u/result": ",s:job [s:results_dir] [i:reply_port]",
    "/m2u/learn": ",s:adapter_name s:clip_path… [i:reply_port]",
    "/m2u/upload": ",s:upload_id i:index i:count s:chunk [i:reply_port]",
}


class ArgError(ValueError):
    """A request that cannot be understood; `code` is an OSC error code (README, error codes)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Request:
    op: str  # hello | ping | generate | edit | ask | submit | cancel | status | result | jobs | set
    reply_port: int | None = None  # trailing reply_port (hello: the declared port), None = not given
    prompt: str = ""
    audio: str = ""  # edit/ask: absolute path, "last" or a job id
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    image: str | None = None
    video: str | None = None
    midi: str | None = None
    midi_notes: list | None = None  # notes a device read from a MIDI clip: [[start_s, end_s, pitch, velocity]]
    job: str = ""  # cancel/status/result: job id or "last"
    name: str = ""  # set
    value: Any = None  # set: the parsed value, None = clear
    kind: str = ""  # generate/edit/ask (the op itself for /m2u/generate, /m2u/edit, /m2u/ask)
    params: dict[str, Any] = field(default_factory=dict)  # submit: params of this request only
    context: dict[str, Any] = field(default_factory=dict)  # submit: params.context of this request only
    results_dir: str | None = None  # write the result here (fetched as bytes), not the server's jobs folder
    limit: int = 20  # jobs
    clips: list[str] = field(default_factory=list)  # finetune (/m2u/learn, submit option clip): training clips
    upload: str = ""  # submit: the id of an /m2u/upload holding more options; upload: the upload's id
    tag: str = ""  # submit: the client's name for the request (echoed in /m2u/accepted)
    chunk: tuple[int, int, str] | None = None  # upload: (index, count, text)

    def __post_init__(self) -> None:
        if not self.kind and self.op in KINDS:
            self.kind = self.op


def classify(message: Message) -> str:
    """Argument classes, one letter per argument: 's' string, 'n' number, or the raw tag otherwise."""
    classes = []
    for tag in message.tags:
        if tag == "s":
            classes.append("s")
        elif tag in "ihfd":
            classes.append("n")
        else:
            classes.append(tag)
    return "".join(classes)


def parse(message: Message) -> Request:
    """Message -> Request, or raise ArgError (`unknown_address` / `bad_args`)."""
    address = message.address
    if address not in USAGE:
        raise ArgError("unknown_address", f"unknown address {address!r}; known: {', '.join(sorted(USAGE))}")
    classes = classify(message)
    for position, c in enumerate(classes):
        if c not in "sn":
            raise ArgError(
                "bad_args",
                f"{address}: argument {position + 1} has type tag {message.tags[position]!r}; "
                f"only strings (s) and numbers (i, f) are accepted; expected {USAGE[address]}",
            )
    op = address.rsplit("/", 1)[1]
    parser = {
        "hello": _parse_hello,
        "ping": _parse_ping,
        "generate": _parse_generate,
        "edit": _parse_edit,
        "ask": _parse_ask,
        "cancel": _parse_job,
        "status": _parse_job,
        "set": _parse_set,
        "submit": _parse_submit,
        "jobs": _parse_jobs,
        "result": _parse_result,
        "learn": _parse_learn,
        "upload": _parse_upload,
    }[op]
    return parser(op, classes, list(message.args), message.tags)


def _bad(op: str, tags: str, why: str) -> ArgError:
    return ArgError("bad_args", f"/m2u/{op}: {why}; got ',{tags}', expected {USAGE['/m2u/' + op]}")


def _number(value: Any, what: str, op: str, tags: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise _bad(op, tags, f"{what} must be finite, got {value}")
    return value


def _whole(value: Any, what: str, op: str, tags: str) -> int:
    number = _number(value, what, op, tags)
    if number != int(number):
        raise _bad(op, tags, f"{what} must be a whole number, got {number}")
    return int(number)


def _port(value: Any, op: str, tags: str) -> int:
    port = _whole(value, "reply_port", op, tags)
    if not 0 <= port <= 65535:
        raise _bad(op, tags, f"reply_port must be 0..65535, got {port}")
    return port


def _text(atoms: list, what: str, op: str, tags: str) -> str:
    """Atoms split by Pd/Max -> one text: words joined by single spaces, numbers written back
    as Pd prints them (90.0 -> "90")."""
    words = []
    for atom in atoms:
        if isinstance(atom, str):
            word = atom.strip()
        elif float(atom).is_integer() and abs(atom) < 1e15:
            word = str(int(atom))
        else:
            word = repr(float(atom))
        if word:
            words.append(word)
    text = " ".join(words)
    if not text:
        raise _bad(op, tags, f"{what} is empty")
    return text


def _parse_hello(op: str, classes: str, args: list, tags: str) -> Request:
    if not re.fullmatch(r"n?", classes):
        raise _bad(op, tags, "takes at most one number")
    return Request(op, reply_port=_port(args[0], op, tags) if args else None)


_parse_ping = _parse_hello


def _parse_generate(op: str, classes: str, args: list, tags: str) -> Request:
    last_string = classes.rfind("s")
    if last_string < 0:
        raise _bad(op, tags, "needs a prompt (one or more strings)")
    media_at = last_string if _media_kind(args[last_string]) else None
    if media_at is None and _is_absolute(args[last_string]):
        raise _bad(op, tags, f"media path {args[last_string].strip()!r} has extension "
                             f"{os.path.splitext(args[last_string].strip())[1].lower()!r}; "
                             f"image: {' '.join(sorted(IMAGE_EXTENSIONS))}; video: {' '.join(sorted(VIDEO_EXTENSIONS))}")
    if media_at is not None:
        prompt_end = classes.rfind("s", 0, media_at) + 1
        if prompt_end == 0:
            raise _bad(op, tags, "needs a prompt before the media path")
        before, after = args[prompt_end:media_at], args[media_at + 1 :]
        if len(before) > 1 or len(after) > 1:
            raise _bad(op, tags, "with a media path: at most one number before it (duration) and one after (reply_port)")
        duration, port = (before[0] if before else None), (after[0] if after else None)
    else:
        prompt_end = last_string + 1
        numbers = args[prompt_end:]
        if len(numbers) > 2:
            raise _bad(op, tags, "at most two numbers after the prompt (duration, reply_port)")
        duration, port = (numbers[0] if numbers else None), (numbers[1] if len(numbers) == 2 else None)
    request = Request(op, prompt=_text(args[:prompt_end], "prompt", op, tags))
    if duration is not None:
        duration = _number(duration, "duration", op, tags)
        request.duration = duration if duration > 0 else None
    if port is not None:
        request.reply_port = _port(port, op, tags)
    if media_at is not None:
        path = args[media_at].strip()
        if _media_kind(path) == "image":
            request.image = path
        else:
            request.video = path
    return request


def _media_kind(word: str) -> str | None:
    extension = os.path.splitext(word.strip())[1].lower()
    return "image" if extension in IMAGE_EXTENSIONS else "video" if extension in VIDEO_EXTENSIONS else None


def _is_absolute(word: str) -> bool:
    word = word.strip()
    return word.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", word) is not None


def _crop(request: Request, start: Any, end: Any, op: str, tags: str) -> None:
    start = _number(start, "start", op, tags)
    end = _number(end, "end", op, tags)
    if start < 0 or end < 0:
        raise _bad(op, tags, f"start and end must be >= 0 seconds, got {start}, {end}")
    if end > 0 and end <= start:
        raise _bad(op, tags, f"end ({end}) must be after start ({start}); 0 means the end of the file")
    request.start = start if start > 0 else None
    request.end = end if end > 0 else None


def _audio_request(op: str, classes: str, args: list, tags: str, max_numbers: int) -> tuple[Request, list]:
    audio_at = classes.rfind("s")
    if audio_at < 1:
        raise _bad(op, tags, "needs the prompt (one or more words) then the audio path or job handle")
    numbers = args[audio_at + 1 :]
    if len(numbers) > max_numbers:
        raise _bad(op, tags, f"at most {max_numbers} numbers after the audio")
    audio = args[audio_at].strip()
    if not audio:
        raise _bad(op, tags, "the audio argument is empty")
    request = Request(op, prompt=_text(args[:audio_at], "prompt", op, tags), audio=audio)
    return request, numbers


def _parse_edit(op: str, classes: str, args: list, tags: str) -> Request:
    request, numbers = _audio_request(op, classes, args, tags, max_numbers=4)
    duration = None
    if len(numbers) == 1:
        duration = numbers[0]
    elif len(numbers) >= 2:
        _crop(request, numbers[0], numbers[1], op, tags)
        duration = numbers[2] if len(numbers) >= 3 else None
    if duration is not None:
        duration = _number(duration, "duration", op, tags)
        request.duration = duration if duration > 0 else None
    if len(numbers) == 4:
        request.reply_port = _port(numbers[3], op, tags)
    return request


def _parse_ask(op: str, classes: str, args: list, tags: str) -> Request:
    request, numbers = _audio_request(op, classes, args, tags, max_numbers=3)
    if len(numbers) == 1:
        request.reply_port = _port(numbers[0], op, tags)
    if len(numbers) >= 2:
        _crop(request, numbers[0], numbers[1], op, tags)
    if len(numbers) == 3:
        request.reply_port = _port(numbers[2], op, tags)
    return request


def _parse_job(op: str, classes: str, args: list, tags: str) -> Request:
    if not re.fullmatch(r"sn?", classes):
        raise _bad(op, tags, "needs one job id (or 'last')")
    job = args[0].strip()
    if not job:
        raise _bad(op, tags, "the job id is empty")
    return Request(op, job=job, reply_port=_port(args[1], op, tags) if len(args) > 1 else None)


def _parse_set(op: str, classes: str, args: list, tags: str) -> Request:
    if not classes.startswith("s"):
        raise _bad(op, tags, "the first argument is the setting's name")
    name = args[0].strip()
    if name not in SETTINGS:
        raise _bad(op, tags, f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    rest_classes, rest = classes[1:], args[1:]
    want = SETTINGS[name][1]
    request = Request(op, name=name)
    # Clearing: nothing, or one empty string, then an optional reply_port.
    clear = re.fullmatch(r"(s?)(n?)", rest_classes)
    if clear and (rest_classes == "" or rest_classes.startswith("s") and rest[0].strip() == ""):
        if clear.group(2):
            request.reply_port = _port(rest[-1], op, tags)
        return request
    if want == "s":  # one or more words, then an optional reply_port
        match = re.fullmatch(r"(s+)(n?)", rest_classes)
        if not match:
            raise _bad(op, tags, f"{name} takes text")
        request.value = _text(rest[: match.end(1)], name, op, tags)
        if match.group(2):
            request.reply_port = _port(rest[-1], op, tags)
        return request
    count = len(want)  # "i", "f" or "ii"
    if not re.fullmatch("n" * count + "n?", rest_classes):
        raise _bad(op, tags, f"{name} takes {count} number(s)")
    values = []
    for i, kind in enumerate(want):
        values.append(_whole(rest[i], name, op, tags) if kind == "i" else _number(rest[i], name, op, tags))
    request.value = values[0] if count == 1 else values
    if len(rest) > count:
        request.reply_port = _port(rest[-1], op, tags)
    return request


def _parse_jobs(op: str, classes: str, args: list, tags: str) -> Request:
    if not re.fullmatch(r"n{0,2}", classes):
        raise _bad(op, tags, "takes at most two numbers (limit, reply_port)")
    request = Request(op)
    if args:
        limit = _whole(args[0], "limit", op, tags)
        if not 0 <= limit <= 1000:
            raise _bad(op, tags, f"limit must be 1..1000 (0 = the default, 20), got {limit}")
        request.limit = limit or 20
    if len(args) == 2:
        request.reply_port = _port(args[1], op, tags)
    return request


def _parse_result(op: str, classes: str, args: list, tags: str) -> Request:
    if not re.fullmatch(r"ss?n?", classes):
        raise _bad(op, tags, "needs the job id (or 'last'), then optionally the results folder and reply_port")
    job = args[0].strip()
    if not job:
        raise _bad(op, tags, "the job id is empty")
    request = Request(op, job=job)
    if classes[1:2] == "s" and args[1].strip():
        request.results_dir = args[1].strip()
    if classes.endswith("n"):
        request.reply_port = _port(args[-1], op, tags)
    return request


def _parse_learn(op: str, classes: str, args: list, tags: str) -> Request:
    """`/m2u/learn name path…`: a fine-tune job (kind finetune) with its options from `/m2u/set` and the
    protocol's defaults (`/m2u/submit finetune …` takes all of them)."""
    if not re.fullmatch(r"ss+n?", classes):
        raise _bad(op, tags, "needs the adapter's name, then one or more clip paths")
    request = Request(op, kind="finetune")
    strings = [a.strip() for a in args if isinstance(a, str)]
    _apply_option(request, "adapter_name", "params", strings[0], op, tags)
    if "adapter_name" not in request.params:
        raise _bad(op, tags, "the adapter's name is empty")
    request.clips = [p for p in strings[1:] if p]
    if not request.clips:
        raise _bad(op, tags, "no clip paths")
    if classes.endswith("n"):
        request.reply_port = _port(args[-1], op, tags)
    return request


def _parse_upload(op: str, classes: str, args: list, tags: str) -> Request:
    """`/m2u/upload upload_id index count chunk [reply_port]`: one piece of an upload (bridge_osc/uploads.py)."""
    if not re.fullmatch(r"snns?n?", classes) or classes == "snnn":
        raise _bad(op, tags, "needs the upload's id, the piece's index and count, then its text")
    request = Request(op, upload=args[0].strip())
    text = args[3] if len(args) > 3 and isinstance(args[3], str) else ""
    request.chunk = (_whole(args[1], "index", op, tags), _whole(args[2], "count", op, tags), text)
    if classes.endswith("n") and len(classes) > 3:
        request.reply_port = _port(args[-1], op, tags)
    return request


def _option_value(name: str, kind: str, atom: Any, op: str, tags: str) -> Any:
    if kind == "s":
        if isinstance(atom, str) and not atom.strip():
            return ""
        return _text([atom], name, op, tags)
    if isinstance(atom, str):
        raise _bad(op, tags, f"option {name} takes a number, got the string {atom[:40]!r}")
    if kind == "i":
        return _whole(atom, name, op, tags)
    if kind == "b":
        value = _whole(atom, name, op, tags)
        if value not in (0, 1):
            raise _bad(op, tags, f"option {name} is 0 or 1, got {value}")
        return bool(value)
    return _number(atom, name, op, tags)


def _parse_submit(op: str, classes: str, args: list, tags: str) -> Request:
    """`/m2u/submit kind (name value…)…`: every option of the request in one message, in any order.
    A text value is one string atom; an empty string (or, for seed, a negative number) = not set."""
    if not classes.startswith("s"):
        raise _bad(op, tags, f"the first argument is the kind ({', '.join(KINDS)})")
    kind = args[0].strip()
    if kind not in KINDS:
        raise _bad(op, tags, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    request = Request(op, kind=kind)
    i = 1
    seen = set()
    while i < len(args):
        name = args[i].strip() if isinstance(args[i], str) else None
        if name not in OPTIONS:
            shown = repr(args[i])[:40]
            raise _bad(op, tags, f"argument {i + 1} ({shown}) is not an option name; known: {', '.join(OPTIONS)}")
        if name in seen and name not in REPEATABLE:
            raise _bad(op, tags, f"option {name} is given twice")
        seen.add(name)
        where, kinds = OPTIONS[name]
        values = args[i + 1 : i + 1 + len(kinds)]
        if len(values) < len(kinds):
            raise _bad(op, tags, f"option {name} needs {len(kinds)} value(s)")
        parsed = [_option_value(name, k, v, op, tags) for k, v in zip(kinds, values)]
        i += 1 + len(kinds)
        value = parsed[0] if len(parsed) == 1 else parsed
        _apply_option(request, name, where, value, op, tags)
    check_submit(request, op, tags)
    return request


def apply_upload(request: Request, options: dict[str, Any]) -> None:
    """The options of a request's upload (bridge_osc/uploads.py: `midi_notes` JSON text, `clip` paths),
    applied and checked as if the submit had carried them; raises ArgError."""
    op, tags = request.op, "s…"
    if "midi_notes" in options:
        if request.midi_notes is not None:
            raise _bad(op, tags, "midi_notes is both in the submit and in its upload")
        _apply_option(request, "midi_notes", "request", options["midi_notes"], op, tags)
    for clip in options.get("clip", []):
        _apply_option(request, "clip", "request", clip, op, tags)
    request.upload = ""
    check_submit(request, op, tags)


def check_submit(request: Request, op: str, tags: str) -> None:
    """What a submit's options must satisfy together (inputs its kind needs and accepts). While the
    request still waits for its upload, the inputs the upload may carry are not required yet."""
    kind = request.kind
    spec = protocol.KIND_SPECS[kind]
    if not request.prompt and spec.needs_prompt:
        raise _bad(op, tags, "option prompt is required")
    if "audio_set" in spec.requires and not request.clips and not request.upload:
        raise _bad(op, tags, f"kind {kind} needs one or more clip options (clip PATH clip PATH …)")
    if request.clips and "audio_set" not in spec.accepts:
        raise _bad(op, tags, "clip is an input of finetune only")
    if "audio" in spec.requires and not request.audio:
        raise _bad(op, tags, f"kind {kind} needs the option audio (a path, 'last' or a job id)")
    if kind != "generate" and (request.image or request.video):
        raise _bad(op, tags, "image and video are inputs of generate only")
    if (request.midi or request.midi_notes) and "midi" not in spec.accepts:
        raise _bad(op, tags, f"kind {kind} takes no midi")
    if request.midi and request.midi_notes:
        raise _bad(op, tags, "give midi (a .mid file) or midi_notes, not both")
    if request.image and request.video:
        raise _bad(op, tags, "give image or video, not both")
    if request.start is not None or request.end is not None:
        _crop(request, request.start or 0.0, request.end or 0.0, op, tags)


def _apply_option(request: Request, name: str, where: str, value: Any, op: str, tags: str) -> None:
    if value == "":
        return  # an empty text = not set: a client may always send every option
    if where in ("params", "context"):
        if name in _UNSET and _UNSET[name](value):
            return
        if name in _SPECS:  # checked here with the server's own rule, so the device hears at once
            try:
                value = _SPECS[name].check({name: value}, where + ".")
            except protocol.ProtocolError as e:
                raise _bad(op, tags, e.message) from None
        (request.context if where == "context" else request.params)[name] = value
        return
    if name == "reply_port":
        request.reply_port = _port(value, op, tags)
    elif name == "duration":
        request.duration = value if value > 0 else None
    elif name in ("image", "video"):
        extension = os.path.splitext(value)[1].lower()
        wanted = IMAGE_EXTENSIONS if name == "image" else VIDEO_EXTENSIONS
        if extension not in wanted:
            raise _bad(op, tags, f"{name} {value!r} has extension {extension!r}; {name}: {' '.join(sorted(wanted))}")
        setattr(request, name, value)
    elif name == "midi" and os.path.splitext(value)[1].lower() not in (".mid", ".midi"):
        raise _bad(op, tags, f"midi {value!r} is not a .mid file")
    elif name == "midi_notes":
        request.midi_notes = _notes(value, op, tags)
    elif name == "clip":
        request.clips.append(value)
    elif name in ("upload", "tag") and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise _bad(op, tags, f"{name} {value[:70]!r}: 1 to 64 letters, digits, '_', '-' or '.'")
    else:  # prompt, audio, start, end, results_dir, midi
        setattr(request, name, value)


def _notes(text: str, op: str, tags: str) -> list:
    """``midi_notes``: JSON text ``[[start_s, end_s, pitch, velocity], ...]`` (one string atom, as a Max
    device sends it), checked with the server's own rule (docs/protocol.md, inputs.midi)."""
    why = osc.json_text_problem(text)
    if why is not None:
        raise _bad(op, tags, f"midi_notes: {why}")
    try:
        notes = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _bad(op, tags, f"midi_notes is not JSON: {e}") from None
    try:
        return protocol.check_notes({"notes": notes}, "midi_notes")["notes"]
    except protocol.ProtocolError as e:
        raise _bad(op, tags, e.message) from None


def server_params(request: Request, sticky_params: dict[str, Any], sticky_context: dict[str, Any]) -> dict[str, Any]:
    """The submit's `params`: /m2u/set settings below this request's own options; a value equal to the
    protocol's default is left out (a device sends every option, always: the submit stays minimal)."""
    params: dict[str, Any] = {**sticky_params, **request.params}
    if request.prompt:  # a transcribe has none
        params["prompt"] = request.prompt
    params = {k: v for k, v in params.items() if not (k in _SPECS and _SPECS[k].where == "params"
                                                      and _SPECS[k].default is not ... and v == _SPECS[k].default)}
    if request.duration is not None:
        params["duration"] = request.duration
    context = {**sticky_context, **request.context}
    if context:
        params["context"] = context
    return params


class InputUnreadable(ValueError):
    """An input file the bridge cannot read or send; `code` as the server would answer."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def upload_inputs(inputs: dict[str, Any], upload) -> dict[str, Any]:
    """The submit's inputs with each local `path` replaced by its upload reference: `upload(path) ->
    {"blob", "proof", "name"}` (server.client.Client.upload: sent only if the server lacks those bytes)."""
    from server.client import RequestRefused, ServerUnavailable

    out: dict[str, Any] = {}
    for name, ref in inputs.items():
        if isinstance(ref, list):  # audio_set: each clip as an audio input
            out[name] = [upload_inputs({"audio": one}, upload)["audio"] for one in ref]
            continue
        ref = dict(ref)
        path = ref.pop("path", None)
        if path is not None:
            what = "audio" if name == "audio_set" else name
            local = os.path.expanduser(path)
            if not os.path.isabs(local):
                raise InputUnreadable(f"bad_{what}", f"{what} path {path!r} must be absolute")
            try:
                ref = {**upload(local), **ref}
            except OSError as e:
                raise InputUnreadable(f"bad_{what}", f"cannot read the {what} file {path!r} to send it to the "
                                                     f"server: {e.strerror or e}") from None
            except RequestRefused as e:
                raise InputUnreadable(str(e.code or "internal"), f"{what} file {path!r}: {e.header.get('message')}") from None
            except ServerUnavailable as e:
                raise InputUnreadable("server_unavailable", f"{what} file {path!r} could not be sent: {e}") from None
        out[name] = ref
    return out
