"""The job protocol (docs/protocol.md): version, names, error codes, framing and request validation.

A message is a list of frames: frame 0 is a UTF-8 JSON object (the header), frames 1..n are raw
bytes referenced from the header as ``{"frame": n}``. Everything here is pure (no sockets).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
from dataclasses import dataclass
from typing import Any

import blake3

RESULT_CHUNK_BYTES = 8 * 2**20  # a result fetched with `offset` comes back in chunks of at most this
PROTOCOL_VERSION = 3  # 2: files cross the wire as bytes (op upload), no client path is ever opened; 3: uploads
# are named by BLAKE3, not sha256 (2.5x faster here: a 200 MB upload is bound by its hash)
CONTENT_HASH = "blake3"  # the field that names an upload: BLAKE3-256 of its bytes, 64 lower-case hex digits
try:
    from importlib.metadata import version as _pkg_version

    SERVER_VERSION = _pkg_version("m2ugen")
except Exception:  # not installed (running from a plain checkout)
    SERVER_VERSION = "0.1.0"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5557
DEFAULT_ENDPOINT = f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}"
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # objects/arrays nested deeper than this are refused (no request needs more than 4)
CONTENT_HASH_RE = re.compile(r"[0-9a-f]{64}")


def content_hasher(prefix: bytes = b""):
    """A new hasher of what names an upload (``CONTENT_HASH``), fed ``prefix`` first (a proof's challenge).
    BLAKE3: 4.2 GB/s on one core of the 2-core test box against sha256's 1.7 (SHA-NI), and a copy runs at
    3.8, so a sha256 alone would hold an upload under half the copy rate (benchmarks/bench_upload.py)."""
    return blake3.blake3(prefix)


def content_digest(f, prefix: bytes = b"", block: int = 4 * 2**20) -> str:
    """The content hash of ``prefix`` + the rest of the binary file ``f`` (read once), hex: an upload's
    name (no prefix) or its proof (the connection's challenge first)."""
    h = content_hasher(prefix)
    while chunk := f.read(block):
        h.update(chunk)
    return h.hexdigest()


REQUEST_OPS = ("hello", "ping", "upload", "submit", "status", "cancel", "result", "jobs", "subscribe")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
CONDITIONING = ("text", "embedding")
INPUTS = ("audio", "image", "video", "midi", "audio_set")
REF_INPUTS = ("audio", "image", "video", "midi")  # one reference each; audio_set is a list of them
MAX_AUDIO_SET = 64  # clips in one fine-tune's inputs.audio_set
ADAPTER_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
EDIT_MODES = ("text", "continue", "melody")
VOCODERS = ("encodec", "mbd")
MAX_TAKES = 8
STEM_OPS = ("auto", "remove", "keep", "replace", "add")
STEMS = ("drums", "bass", "other", "vocals", "guitar", "piano")  # m2ugen.stem_ops.STEMS_6
STEM_MODELS = {"htdemucs": STEMS[:4], "htdemucs_6s": STEMS}  # m2ugen.stems.MODELS
MAX_NOTES = 100_000  # notes in one ``inputs.midi.notes`` list (the 64 KiB header holds ~2,500 of them)

ERROR_CODES = {
    "bad_json": "frame 0 is not a JSON object",
    "bad_version": "unsupported protocol version",
    "bad_request": "a field is missing or has the wrong type/range",
    "unknown_op": "unknown operation",
    "unknown_kind": "submit kind is not one of KINDS",
    "bad_audio": "the audio input cannot be used",
    "bad_image": "the image input cannot be used",
    "bad_video": "the video input cannot be used",
    "bad_midi": "the MIDI input cannot be used",
    "bad_upload": "an upload's chunk or bytes do not fit its offer (offset, size or blake3)",
    "blob_unknown": "an input names an upload this server does not hold (expired or never finished): upload again",
    "missing_frame": "a frame reference with no such frame",
    "busy": "the queue is full",
    "local_refused": "the local upload socket did not take a descriptor (another user, too many at once): send bytes",
    "not_found": "unknown job id",
    "not_ready": "the job has not finished",
    "job_failed": "the model raised",
    "interrupted": "the server stopped while the job ran",
    "internal": "a server bug",
}


class ProtocolError(Exception):
    """A request the server refuses; becomes an ``error`` reply with ``code`` and ``message``."""

    def __init__(self, code: str, message: str, field: str | None = None):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.req: Any = None  # set by decode() when the request could not be parsed whole


def is_loopback(host: str) -> bool:
    """True for a host that only this machine can reach: localhost names, 127.0.0.0/8, ::1, or a name
    whose every address is loopback. The one definition every adapter uses for the bind rule."""
    if host in ("localhost", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is loopback
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


# ---------------------------------------------------------------------------------------------
# framing


def encode(header: dict[str, Any], frames: list[bytes] | tuple = ()) -> list[bytes]:
    """header + binary frames -> multipart message (header frame first)."""
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), *frames]


_REQ_RE = re.compile(rb'"req"\s*:\s*("(?:[^"\\\\]|\\\\.){0,200}"|-?[0-9]{1,18})')


def _req_of(raw: bytes) -> Any:
    """The ``req`` of a header that cannot be parsed whole (too large), so the refusal still reaches
    the caller that waits for it; None when it is not found."""
    m = _REQ_RE.search(raw)
    if m is None:
        return None
    try:
        req = json.loads(m.group(1))
    except ValueError:
        return None
    return req if isinstance(req, (str, int)) and check_text(req) is None else None


def check_text(value: Any, depth: int = 0) -> str | None:
    """Why a decoded JSON value cannot be used, or None: strings must be valid Unicode (JSON's
    ``\\ud800`` escapes decode to lone surrogates, which no client can print or encode) and nesting
    is bounded."""
    if depth > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string holds a lone surrogate (invalid Unicode)"
        return None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        why = check_text(item, depth + 1)
        if why is not None:
            return why
    return None


def decode(frames: list) -> tuple[dict[str, Any], list]:
    """multipart message -> (header, binary frames). Raises ProtocolError(bad_json / bad_request); the
    error's ``req`` is the request's when it can be read."""
    if not frames:
        raise ProtocolError("bad_json", "empty message: frame 0 must be a JSON object")
    raw = frames[0]
    raw = raw.bytes if hasattr(raw, "bytes") else raw
    if len(raw) > MAX_HEADER_BYTES:
        err = ProtocolError("bad_request", f"header frame is {len(raw)} bytes; the limit is {MAX_HEADER_BYTES} "
                                           f"(send large data as binary frames)", "header")
        err.req = _req_of(bytes(raw[:MAX_HEADER_BYTES * 4]))
        raise err
    try:
        try:
            header = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ProtocolError("bad_json", f"frame 0 is not UTF-8 text (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ProtocolError("bad_json", f"frame 0 is not valid JSON: {e.msg} at position {e.pos}") from None
        except RecursionError:
            raise ProtocolError("bad_json", f"frame 0 is nested too deeply (the limit is {MAX_JSON_DEPTH})") from None
    except ProtocolError as err:
        err.req = _req_of(bytes(raw))
        raise
    if not isinstance(header, dict):
        raise ProtocolError("bad_json", f"frame 0 must be a JSON object, got {type(header).__name__}")
    why = check_text(header)
    if why is not None:
        err = ProtocolError("bad_request", f"frame 0: {why}", "header")
        err.req = header.get("req") if check_text(header.get("req")) is None else None
        raise err
    return header, list(frames[1:])


def event(op: str, job: str, **fields: Any) -> dict[str, Any]:
    """A server -> client event header (§3): ``event("progress", job_id, stage=..., fraction=...)``."""
    return {"v": PROTOCOL_VERSION, "op": op, "job": job, **fields}


def error_header(code: str, message: str, *, req: Any = None, job: str | None = None,
                 field: str | None = None) -> dict[str, Any]:
    h: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": "error", "code": code, "message": message}
    if req is not None:
        h["req"] = req
    if job is not None:
        h["job"] = job
    if field is not None:
        h["field"] = field
    return h


# ---------------------------------------------------------------------------------------------
# field checks: each raises ProtocolError(bad_request) naming the field


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _absent(d: dict, key: str, name: str, default: Any) -> bool:
    """True when the field is missing or null and has a default; raises when it is required."""
    if key in d and d[key] is not None:
        return False
    if default is ...:
        raise ProtocolError("bad_request", f"field '{name}' is required", name)
    return True


def req_str(d: dict, key: str, *, where: str = "", min_len: int = 0, max_len: int | None = None,
            default: Any = ..., choices: tuple | None = None) -> Any:
    name = where + key
    if _absent(d, key, name, default):
        return default
    v = d[key]
    if not isinstance(v, str):
        raise ProtocolError("bad_request", f"field '{name}' must be a string, got {_type_name(v)}", name)
    if len(v) < min_len:
        raise ProtocolError("bad_request", f"field '{name}' must have at least {min_len} character(s)", name)
    if max_len is not None and len(v) > max_len:
        raise ProtocolError("bad_request", f"field '{name}' is {len(v)} characters; the limit is {max_len}", name)
    if choices is not None and v not in choices:
        raise ProtocolError("bad_request", f"field '{name}' must be one of {', '.join(choices)}; got {v!r}", name)
    return v


def req_int(d: dict, key: str, *, where: str = "", lo: int | None = None, hi: int | None = None,
            default: Any = ...) -> Any:
    name = where + key
    if _absent(d, key, name, default):
        return default
    v = d[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("bad_request", f"field '{name}' must be an integer, got {_type_name(v)}", name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ProtocolError("bad_request", f"field '{name}' must be in {lo}..{hi}, got {v}", name)
    return v


def req_float(d: dict, key: str, *, where: str = "", lo: float | None = None, hi: float | None = None,
              lo_open: bool = False, default: Any = ...) -> Any:
    name = where + key
    if _absent(d, key, name, default):
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError("bad_request", f"field '{name}' must be a number, got {_type_name(v)}", name)
    v = float(v)
    if not math.isfinite(v):
        raise ProtocolError("bad_request", f"field '{name}' must be finite", name)
    too_low = lo is not None and (v <= lo if lo_open else v < lo)
    if too_low or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ProtocolError("bad_request", f"field '{name}' must be in {rng}, got {v}", name)
    return v


def _req_of_type(d: dict, key: str, where: str, default: Any, kind: type, what: str) -> Any:
    name = where + key
    if _absent(d, key, name, default):
        return default
    v = d[key]
    if not isinstance(v, kind):
        raise ProtocolError("bad_request", f"field '{name}' must be {what}, got {_type_name(v)}", name)
    return v


def req_bool(d: dict, key: str, *, where: str = "", default: Any = ...) -> Any:
    return _req_of_type(d, key, where, default, bool, "true or false")


def req_obj(d: dict, key: str, *, where: str = "", default: Any = ...) -> Any:
    return _req_of_type(d, key, where, default, dict, "an object")


def check_envelope(header: dict[str, Any]) -> str:
    """Checks ``v``, ``op`` and ``req`` of a request; returns the op."""
    if "v" not in header:
        raise ProtocolError("bad_request", "field 'v' (protocol version) is required", "v")
    v = header["v"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("bad_request", f"field 'v' must be an integer, got {_type_name(v)}", "v")
    if v != PROTOCOL_VERSION:
        hint = (" (since version 2 the server opens no client path: a client reads its files and uploads their "
                "bytes; since 3 uploads are named by BLAKE3; update the m2ugen package on this machine, see "
                "docs/protocol.md)" if v < PROTOCOL_VERSION else "")
        raise ProtocolError("bad_version", f"protocol version {v} is not supported; this server speaks "
                                           f"{PROTOCOL_VERSION}{hint}")
    req = header.get("req")
    if req is not None and not isinstance(req, (str, int)):
        raise ProtocolError("bad_request", f"field 'req' must be a string, got {_type_name(req)}", "req")
    op = req_str(header, "op", min_len=1)
    if op not in REQUEST_OPS:
        raise ProtocolError("unknown_op", f"unknown op {op!r}; expected one of {', '.join(REQUEST_OPS)}")
    return op


@dataclass(frozen=True)
class Kind:
    """One job kind: what it needs and makes. Submit validation, the worker's dispatch (server/kinds/)
    and every client derive from this table; a new kind is one row here and one module there."""
    name: str
    requires: tuple[str, ...] = ()  # inputs it cannot run without
    accepts: tuple[str, ...] = ()  # inputs it may take (requires included)
    output_ext: str | None = ".wav"  # the file ``output.path`` must name (None: no client output file)
    makes_audio: bool = True
    needs_prompt: bool = True
    help: str = ""


KIND_TABLE: tuple[Kind, ...] = (
    Kind("ask", requires=("audio",), accepts=("audio", "image", "video"), makes_audio=False,
         help="a question about the audio (and an image or video): a text answer"),
    Kind("edit", requires=("audio",), accepts=("audio", "image", "video", "midi"),
         help="new music from the source audio and an instruction"),
    Kind("generate", accepts=("audio", "image", "video", "midi"),
         help="new music from text, an image, a video or a MIDI sketch"),
    Kind("transcribe", requires=("audio",), accepts=("audio",), output_ext=".mid", makes_audio=False,
         needs_prompt=False, help="audio -> a .mid: a monophonic melody track and a chord track (no model)"),
    Kind("stems", requires=("audio",), accepts=("audio",), makes_audio=False, needs_prompt=False,
         help="audio -> one WAV per stem (Demucs: drums, bass, other, vocals; htdemucs_6s adds guitar, piano)"),
    Kind("finetune", requires=("audio_set",), accepts=("audio_set",), output_ext=None, makes_audio=False,
         needs_prompt=False, help="learn a personal LoRA adapter from a set of clips (one at a time; yields to "
                                  "the other kinds)"),
)
KIND_SPECS: dict[str, Kind] = {k.name: k for k in KIND_TABLE}
KINDS = tuple(KIND_SPECS)
CHAT_KINDS = ("ask", "edit", "generate")  # the kinds the model's chat() serves
LONG_KINDS = ("finetune",)  # one at a time; it lends the model to the other kinds between its steps


@dataclass(frozen=True)
class Param:
    """One submit parameter: the single description every adapter derives from (the validator below,
    the CLI's options, the OSC bridge's ``/m2u/set`` names, the tests that hold the REAPER and Live
    clients to the same names)."""
    name: str
    type: str  # "str" | "int" | "float" | "bool"
    default: Any = None  # ... = required
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] | None = None
    max_len: int | None = None
    kinds: tuple[str, ...] = CHAT_KINDS  # kinds it means something for
    where: str = "params"  # "params" or "context" (musical context of the DAW project)
    help: str = ""

    @property
    def option(self) -> str:
        """The CLI option: ``--top-p``; a flag that is on by default is turned off: ``--no-normalize``."""
        flag = self.name.replace("_", "-")
        return f"--no-{flag}" if self.type == "bool" and self.default is True else f"--{flag}"

    def check(self, d: dict[str, Any], where: str) -> Any:
        if self.type == "str":
            return req_str(d, self.name, where=where, min_len=1 if self.default is ... else 0,
                           max_len=self.max_len, default=self.default, choices=self.choices)
        if self.type == "int":
            return req_int(d, self.name, where=where, lo=self.lo, hi=self.hi, default=self.default)
        if self.type == "float":
            return req_float(d, self.name, where=where, lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                             default=self.default)
        if self.type == "bool":
            return req_bool(d, self.name, where=where, default=self.default)
        raise AssertionError(self.type)


_AUDIO_OUT = ("edit", "generate")
PARAMS: tuple[Param, ...] = (
    Param("prompt", "str", ..., max_len=4000, help="the question / instruction / description"),
    Param("duration", "float", None, lo=0.5, hi=300.0, kinds=_AUDIO_OUT,
          help="output length in seconds (default: the input's or the selection's, else 10 s)"),
    Param("seed", "int", None, lo=0, hi=2**63 - 1, kinds=CHAT_KINDS + ("finetune",),
          help="random seed (default: random; the one used is recorded in the result)"),
    Param("conditioning", "str", "text", choices=CONDITIONING, kinds=_AUDIO_OUT,
          help="text: the official behaviour (the decoder is prompted with the reply text); embedding: the "
               "decoder is conditioned on the LLM's projected [AUD] states, as the paper trains"),
    Param("temperature", "float", 0.6, lo=0.0, hi=10.0, help="LLM sampling temperature (0 = greedy)"),
    Param("top_p", "float", 0.8, lo=0.0, hi=1.0, lo_open=True, help="LLM nucleus sampling"),
    Param("max_new_tokens", "int", None, lo=1, hi=1024, help="longest reply in tokens"),
    Param("sample_rate", "int", None, lo=8000, hi=192000, kinds=_AUDIO_OUT,
          help="output sample rate (default: the project's when the client sends it, else the model's)"),
    Param("channels", "int", 1, lo=1, hi=8, kinds=_AUDIO_OUT, help="output channels"),
    Param("mode", "str", "text", choices=EDIT_MODES, kinds=_AUDIO_OUT,
          help="what the music decoder hears of the source: text = the official behaviour (only the reply); "
               "continue = MusicGen continues the source; melody = MusicGen-Melody follows its chroma"),
    Param("continuation", "str", "new", choices=("new", "with_source"), kinds=("edit",),
          help="mode continue: the new material only, or the source followed by it"),
    Param("takes", "int", 1, lo=1, hi=MAX_TAKES, kinds=_AUDIO_OUT,
          help="variations in one request, seeds seed, seed+1, ... (each recorded)"),
    Param("bars", "int", None, lo=1, hi=512, kinds=_AUDIO_OUT,
          help="output length in bars (needs the tempo: context bpm, or the measured source's for edits)"),
    Param("loop", "bool", False, kinds=_AUDIO_OUT,
          help="a seamless loop of exact length (tail crossfaded into the head at a bar boundary)"),
    Param("fit_tempo", "bool", False, kinds=_AUDIO_OUT,
          help="time-stretch the result to the project tempo (Rubber Band) when its measured tempo is off"),
    Param("normalize", "bool", True, kinds=_AUDIO_OUT,
          help="loudness: edits matched to the source, generated music to target_lufs, true peak under -1 dBTP"),
    Param("target_lufs", "float", -14.0, lo=-40.0, hi=-6.0, kinds=_AUDIO_OUT,
          help="integrated loudness of generated results (LUFS)"),
    Param("vocoder", "str", "encodec", choices=VOCODERS, kinds=_AUDIO_OUT,
          help="how MusicGen's codes become audio: encodec (its own decoder) or mbd (multi-band diffusion, cleaner, slower)"),
    Param("reference_prompt", "bool", False,
          help="send the prompt exactly as the official model gets it (no measured analysis, no project context)"),
    Param("chords", "bool", True, kinds=("transcribe",),
          help="a chord track beside the melody (major/minor triads, at most one per beat)"),
    Param("beats_per_chord", "int", 1, lo=1, hi=16, kinds=("transcribe",),
          help="the chord grid: one chord window every N beats of the tempo"),
    Param("dereverb", "bool", True, kinds=("transcribe",),
          help="subtract a room's late reverberation before the melody's notes are found (more notes found in "
               "a reverberant track; a dry struck instrument such as a DI piano may gain a few extra notes: "
               "false for those)"),
    Param("op", "str", None, choices=STEM_OPS, kinds=("edit",),
          help="a stem-aware edit: remove / keep / replace one stem or add a part (the other stems stay as they "
               "are); auto = read from the prompt ('remove the drums', 'replace the piano with strings'); "
               "default: read from the prompt when it clearly names a stem, else an ordinary edit"),
    Param("stem", "str", None, choices=STEMS, kinds=("edit",), help="the stem the edit acts on (with op)"),
    Param("instrument", "str", None, max_len=200, kinds=("edit",),
          help="op replace / add: what the new part is, e.g. 'strings' (default: read from the prompt)"),
    Param("stem_model", "str", None, choices=tuple(STEM_MODELS), kinds=("edit", "stems"),
          help="the separation model: htdemucs (drums, bass, other, vocals) or htdemucs_6s (+ guitar, piano); "
               "default: htdemucs_6s when the stem is guitar or piano, else htdemucs"),
    Param("adapter", "str", None, max_len=64,
          help="the server's LoRA adapter to use (a personal fine-tune; the welcome's model.adapters lists them; "
               "default: the base model)"),
    Param("adapter_name", "str", ..., max_len=64, kinds=("finetune",),
          help="the name of the adapter to train ([A-Za-z0-9_-], 1 to 64 characters)"),
    Param("replace", "bool", False, kinds=("finetune",),
          help="train over an existing adapter of that name (it is replaced when the new one is done)"),
    Param("steps", "int", 200, lo=1, hi=20000, kinds=("finetune",), help="optimizer steps"),
    Param("rank", "int", 8, lo=1, hi=128, kinds=("finetune",), help="LoRA rank (alpha = 2 x rank)"),
    Param("learning_rate", "float", 1e-4, lo=0.0, hi=0.1, lo_open=True, kinds=("finetune",),
          help="AdamW learning rate"),
    Param("batch_size", "int", 2, lo=1, hi=32, kinds=("finetune",), help="clips per step"),
    Param("clip_s", "float", 10.0, lo=0.5, hi=30.0, kinds=("finetune",),
          help="seconds of each clip per step (a random crop)"),
    Param("train_llm", "bool", False, kinds=("finetune",),
          help="also train a LoRA on the LLM to describe the clips with their captions"),
    Param("save_every", "int", 25, lo=1, hi=20000, kinds=("finetune",),
          help="steps between saves of the resumable state (a restarted server continues from the last)"),
)
CONTEXT: tuple[Param, ...] = (
    Param("bpm", "float", None, lo=1.0, hi=1000.0, where="context", kinds=(*CHAT_KINDS, "transcribe"),
          help="the project's tempo (transcribe: the written file's and the chord grid's; default: measured)"),
    Param("key", "str", None, max_len=40, where="context", help="the project's key, e.g. 'A minor'"),
    Param("project_sample_rate", "int", None, lo=1000, hi=768000, where="context",
          help="the DAW project's sample rate: the default output rate"),
)  # plus time_signature [n, d] and selection {start, end} (structured; checked in check_context)
PARAM_NAMES = tuple(p.name for p in PARAMS)
CONTEXT_NAMES = tuple(p.name for p in CONTEXT) + ("time_signature", "selection")


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validates submit ``params`` (docs/protocol.md §2) for ``kind`` and returns them normalised
    (defaults filled where they do not depend on the inputs or the model). A parameter that means
    nothing for the kind (an output length for ``ask``) is still validated, then recorded as its default
    (clients that send one set of options with every kind keep working; the CLI does not offer it)."""
    w = "params."
    unknown = sorted(set(params) - set(PARAM_NAMES) - {"context"})
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in params: {', '.join(unknown)}", w + unknown[0])
    p: dict[str, Any] = {}
    for spec in PARAMS:
        if spec.default is ... and kind not in spec.kinds and params.get(spec.name) in (None, ""):
            p[spec.name] = ""  # required only by the kinds it means something for ("": as a record holds it)
            continue
        value = spec.check(params, w)
        p[spec.name] = value if kind in spec.kinds else (spec.default if spec.default is not ... else value)
    p["context"] = check_context(req_obj(params, "context", where=w, default={}))
    if KIND_SPECS[kind].needs_prompt and p["prompt"].strip() == "":
        raise ProtocolError("bad_request", "field 'params.prompt' must not be blank", "params.prompt")
    if p["sample_rate"] is None and KIND_SPECS[kind].makes_audio:
        p["sample_rate"] = p["context"].get("project_sample_rate")
    return p


def params_of_kind(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The normalised ``params`` a job of ``kind`` shows in its record and events: only the parameters of
    its own kind (a generate's record does not echo the fine-tune defaults), and its context if any."""
    own = {spec.name for spec in PARAMS if kind in spec.kinds}
    out = {k: v for k, v in params.items() if k in own}
    if params.get("context"):
        out["context"] = params["context"]
    return out


def check_context(ctx: dict[str, Any]) -> dict[str, Any]:
    w = "params.context."
    unknown = sorted(set(ctx) - set(CONTEXT_NAMES))
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in params.context: {', '.join(unknown)}",
                            w + unknown[0])
    out: dict[str, Any] = {}
    for spec in CONTEXT:
        if ctx.get(spec.name) is not None:
            out[spec.name] = spec.check(ctx, w)
    if ctx.get("time_signature") is not None:
        ts = ctx["time_signature"]
        ok = (isinstance(ts, list) and len(ts) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64 for x in ts))
        if not ok:
            raise ProtocolError("bad_request", f"field '{w}time_signature' must be [numerator, denominator] "
                                               f"integers in 1..64, got {ts!r}", w + "time_signature")
        out["time_signature"] = ts
    if ctx.get("selection") is not None:
        sel = req_obj(ctx, "selection", where=w)
        start = req_float(sel, "start", where=w + "selection.", lo=0.0)
        end = req_float(sel, "end", where=w + "selection.", lo=0.0)
        if end <= start:
            raise ProtocolError("bad_request", f"field '{w}selection.end' must be greater than start", w + "selection")
        out["selection"] = {"start": start, "end": end}
    return out


def check_combination(kind: str, p: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Parameters that need each other or a source, refused at submit with what is missing."""
    def bad(field: str, message: str):
        raise ProtocolError("bad_request", message, "params." + field)

    has_source = inputs.get("audio") is not None
    if p["mode"] == "continue" and not has_source:
        bad("mode", "mode 'continue' needs a source: 'inputs.audio' (kind edit)")
    if p["mode"] == "melody" and not has_source and inputs.get("midi") is None:
        bad("mode", "mode 'melody' needs a source: 'inputs.audio' (kind edit) or 'inputs.midi'")
    if p["continuation"] != "new" and p["mode"] != "continue":
        bad("continuation", "continuation 'with_source' needs mode 'continue'")
    tempo_known = p["context"].get("bpm") is not None or (kind == "edit" and has_source)  # edits: the measured
    for field in ("bars", "loop", "fit_tempo"):
        if p.get(field) and not tempo_known:
            bad(field, f"'{field}' needs a tempo: params.context.bpm (the project's)"
                       + ("" if kind == "generate" else ", or an audio source to measure"))
    if p.get("bars") and p.get("duration") is not None:
        bad("bars", "give either 'duration' or 'bars', not both")


def stems_of(kind: str, p: dict[str, Any]) -> tuple[str, ...]:
    """The stems a ``stems`` job writes, in order (one WAV each); () for the other kinds."""
    return STEM_MODELS[p.get("stem_model") or "htdemucs"] if kind == "stems" else ()


def check_stem_edit(p: dict[str, Any]) -> None:
    """An edit's stem operation (m2ugen/stem_ops.py), resolved at submit: ``op`` / ``stem`` /
    ``instrument`` explicit or read from the prompt, refused with the reason when it cannot be served;
    the params then hold the resolved operation (``op`` None: an ordinary edit)."""
    from m2ugen import stem_ops

    try:
        op = stem_ops.resolve(p["prompt"], p.get("op"), p.get("stem"), p.get("instrument"))
    except stem_ops.StemOpError as e:
        field = "params.stem" if p.get("stem") or (p.get("op") not in (None, "auto")) else "params.prompt"
        raise ProtocolError("bad_request", str(e), field) from None
    if op is None:
        return
    model = p.get("stem_model") or op.model
    if op.stem is not None and op.stem not in STEM_MODELS[model]:
        raise ProtocolError("bad_request", f"stem_model {model} separates {', '.join(STEM_MODELS[model])}, not the "
                                           f"{op.stem}; use htdemucs_6s", "params.stem_model")
    for field in ("loop", "bars"):
        if p.get(field):
            raise ProtocolError("bad_request", f"'{field}' does not apply to a stem edit ({op.op} {op.stem or ''}): "
                                               "its result has the source's length", "params." + field)
    if p.get("continuation") != "new":
        raise ProtocolError("bad_request", "continuation 'with_source' does not apply to a stem edit",
                            "params.continuation")
    p.update(op=op.op, stem=op.stem, instrument=op.instrument, stem_model=model)
    if op.op in ("remove", "keep"):
        p["takes"] = 1  # a remix: every take would be the same


_PATH_GONE = ("the server opens no client path (protocol 2): read the file and upload its bytes (op 'upload'), "
              "then name it as {\"blob\": blake3, \"proof\": ...}; the m2ugen CLI, the OSC bridge and "
              "server.client.Client.upload do this")
_REF_KEYS = {"audio": ("start", "end"), "image": (), "video": (), "midi": ()}


def check_input_ref(inputs: dict[str, Any], name: str, n_frames: int, w: str | None = None,
                    extra_keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """One of ``inputs.audio|image|video|midi``: exactly one source — ``{"blob", "proof"}`` (an upload),
    ``{"frame"}`` (bytes in this message), ``{"job", "take"?}`` (audio: a finished job's result on this
    server) or ``{"notes"}`` (midi) — plus ``name`` and, for audio, ``start``/``end``. Unknown fields are
    refused by name (a typo must not silently use the whole file); ``w``: the field's name in messages."""
    w = w or f"inputs.{name}"
    ref = req_obj(inputs, name, where="inputs.", default=None)
    if ref is None:
        return None
    if "path" in ref:
        raise ProtocolError("bad_request", f"field '{w}.path': {_PATH_GONE}", w + ".path")
    if name == "midi" and ref.get("notes") is not None:
        return check_notes(ref, w)
    sources = [k for k in ("blob", "frame", "job") if ref.get(k) is not None]
    allowed = {"blob", "proof", "frame", "name", *_REF_KEYS[name], *extra_keys} | ({"job", "take"} if name == "audio" else set())
    unknown = sorted(set(ref) - allowed)
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in {w}: {', '.join(unknown)}; it takes "
                                           f"{', '.join(sorted(allowed))}", f"{w}.{unknown[0]}")
    if len(sources) != 1:
        what = "'blob', 'frame' or 'job'" if name == "audio" else "'blob' or 'frame'" + (" (or 'notes')" if name == "midi" else "")
        raise ProtocolError("bad_request", f"field '{w}' needs exactly one of {what}", w)
    out: dict[str, Any] = {}
    if "blob" in sources:
        out["blob"] = req_str(ref, "blob", where=w + ".", min_len=64, max_len=64)
        out["proof"] = req_str(ref, "proof", where=w + ".", min_len=64, max_len=64, default=None)
        out["name"] = req_str(ref, "name", where=w + ".", max_len=255, default="")
    elif "frame" in sources:
        idx = req_int(ref, "frame", where=w + ".", lo=1)
        if idx > n_frames:
            raise ProtocolError("missing_frame", f"'{w}.frame' refers to frame {idx} but the message has "
                                                 f"{n_frames} binary frame(s)", w + ".frame")
        out["frame"] = idx
        out["name"] = req_str(ref, "name", where=w + ".", max_len=255, default="")
    else:
        out["job"] = req_str(ref, "job", where=w + ".", min_len=1, max_len=64)
        out["take"] = req_int(ref, "take", where=w + ".", lo=1, hi=MAX_TAKES, default=1)
    for key in ("proof", "take"):
        if key in ref and key not in out:
            raise ProtocolError("bad_request", f"field '{w}.{key}' goes with '{'blob' if key == 'proof' else 'job'}'",
                                f"{w}.{key}")
    if name == "audio":
        start = req_float(ref, "start", where=w + ".", lo=0.0, default=None)
        end = req_float(ref, "end", where=w + ".", lo=0.0, default=None)
        if start is not None and end is not None and end <= start:
            raise ProtocolError("bad_request", f"field '{w}.end' ({end}) must be greater than start ({start})",
                                w + ".end")
        out["start"], out["end"] = start, end
    return out


def check_notes(ref: dict[str, Any], w: str = "inputs.midi") -> dict[str, Any]:
    """``inputs.midi`` as notes a DAW read from its MIDI item or clip: ``{"notes": [[start_s, end_s,
    pitch, velocity?], ...]}`` in seconds from the start of the material (0 = the selection's start);
    -> ``{"notes": [[start, end, pitch, velocity], ...]}`` (velocity defaults to 100)."""
    extra = sorted(set(ref) - {"notes"})
    if extra:
        raise ProtocolError("bad_request", f"field '{w}' with 'notes' takes no other field ({', '.join(extra)})",
                            f"{w}.{extra[0]}")
    notes = ref["notes"]
    name = w + ".notes"
    if not isinstance(notes, list):
        raise ProtocolError("bad_request", f"field '{name}' must be a list of [start, end, pitch, velocity?], got "
                                           f"{_type_name(notes)}", name)
    if not notes:
        raise ProtocolError("bad_request", f"field '{name}' has no notes", name)
    if len(notes) > MAX_NOTES:
        raise ProtocolError("bad_request", f"field '{name}' has {len(notes)} notes; the limit is {MAX_NOTES}", name)
    out = []
    for i, note in enumerate(notes):
        where = f"{name}[{i}]"
        if not isinstance(note, list) or not 3 <= len(note) <= 4:
            raise ProtocolError("bad_request", f"field '{where}' must be [start, end, pitch, velocity?], got "
                                               f"{note!r:.80}", where)
        row = dict(zip(("start", "end", "pitch", "velocity"), note))
        start = req_float(row, "start", where=where + ".", lo=0.0, hi=86400.0)
        end = req_float(row, "end", where=where + ".", lo=0.0, hi=86400.0)
        pitch = req_int(row, "pitch", where=where + ".", lo=0, hi=127)
        velocity = req_int(row, "velocity", where=where + ".", lo=1, hi=127, default=100)
        if end <= start:
            raise ProtocolError("bad_request", f"field '{where}': end ({end}) must be greater than start ({start})",
                                where)
        out.append([start, end, pitch, velocity])
    return {"notes": out}


def check_audio_set(inputs: dict[str, Any], n_frames: int) -> list[dict[str, Any]] | None:
    """``inputs.audio_set``: a list of 1..MAX_AUDIO_SET audio references (as ``inputs.audio``, each with
    an optional ``caption``)."""
    w = "inputs.audio_set"
    refs = inputs.get("audio_set")
    if refs is None:
        return None
    if not isinstance(refs, list) or not refs:
        raise ProtocolError("bad_request", f"field '{w}' must be a non-empty list of audio references", w)
    if len(refs) > MAX_AUDIO_SET:
        raise ProtocolError("bad_request", f"field '{w}' has {len(refs)} clips; the limit is {MAX_AUDIO_SET}", w)
    out = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ProtocolError("bad_request", f"field '{w}[{i}]' must be an object, got {_type_name(ref)}", f"{w}[{i}]")
        caption = req_str(ref, "caption", where=f"{w}[{i}].", max_len=2000, default=None)
        one = check_input_ref({"audio": {k: v for k, v in ref.items() if k != "caption"}}, "audio", n_frames,
                              f"{w}[{i}]")
        if one.get("job") is not None:
            raise ProtocolError("bad_request", f"field '{w}[{i}].job': a fine-tune's clips are uploads "
                                               f"('blob') or frames", f"{w}[{i}].job")
        out.append({**one, "caption": caption.strip() if caption else None})
    return out


def check_submit(header: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """Validates a ``submit`` header. Returns {kind, params, inputs, output}; file contents are not read."""
    kind = req_str(header, "kind", min_len=1)
    if kind not in KINDS:
        raise ProtocolError("unknown_kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    params = check_params(kind, req_obj(header, "params"))
    inputs_raw = req_obj(header, "inputs", default={})
    unknown = sorted(set(inputs_raw) - set(INPUTS))
    if unknown:
        raise ProtocolError("bad_request", f"unknown input(s): {', '.join(unknown)}; expected {', '.join(INPUTS)}",
                            "inputs." + unknown[0])
    spec = KIND_SPECS[kind]
    for name in INPUTS:
        if inputs_raw.get(name) is not None and name not in spec.accepts:
            raise ProtocolError("bad_request", f"kind '{kind}' takes no 'inputs.{name}' (it takes "
                                               f"{', '.join(spec.accepts) or 'no inputs'})", f"inputs.{name}")
    inputs = {k: check_input_ref(inputs_raw, k, n_frames) for k in REF_INPUTS}
    inputs["audio_set"] = check_audio_set(inputs_raw, n_frames)
    for name in spec.requires:
        if inputs[name] is None:
            raise ProtocolError("bad_request", f"kind '{kind}' requires 'inputs.{name}'", f"inputs.{name}")
    if inputs["midi"] is not None and params["mode"] == "text":
        params["mode"] = "melody"  # a MIDI sketch is the melody to follow
    if kind == "generate" and inputs["image"] is not None and inputs["video"] is not None:
        raise ProtocolError("bad_request", "generate accepts at most one of 'inputs.image' / 'inputs.video'",
                            "inputs.video")
    if kind in CHAT_KINDS:
        check_combination(kind, params, inputs)
    if kind == "edit":
        check_stem_edit(params)
    if params["adapter"] == "":
        params["adapter"] = None  # a DAW's empty setting: the base model
    for name in ("adapter", "adapter_name"):
        if params[name] and not ADAPTER_NAME_RE.fullmatch(params[name]):
            raise ProtocolError("bad_request", f"field 'params.{name}' must be 1 to 64 letters, digits, '_' or "
                                               f"'-', got {params[name]!r}", "params." + name)
    output_raw = req_obj(header, "output", default={})
    for gone in ("path", "overwrite"):
        if gone in output_raw:
            raise ProtocolError("bad_request", f"field 'output.{gone}': the server writes results only into its own "
                                               f"folder (protocol 2); fetch them as bytes (want 'bytes', or op "
                                               f"'result') and write them where the user asked (the m2ugen CLI's "
                                               f"--out does)", "output." + gone)
    unknown = sorted(set(output_raw) - {"want"})
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in output: {', '.join(unknown)}", "output." + unknown[0])
    output = {"want": req_str(output_raw, "want", where="output.", choices=("path", "bytes"), default="path")}
    return {"kind": kind, "params": params, "inputs": inputs, "output": output}


def check_upload(header: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """Validates an ``upload`` header (§2.1): an offer (``blake3`` and ``size``), a begin (``size`` only)
    or one chunk (``upload``, ``offset`` and one frame); -> {form, blake3, size, upload, offset}."""
    unknown = sorted(k for k in set(header) - {"v", "op", "req", "token", CONTENT_HASH, "size", "upload", "offset", "local"}
                     if not k.startswith("\x00"))  # "\x00...": the server's own marks (server/owners.py)
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in upload: {', '.join(unknown)}", unknown[0])
    if n_frames == 0:
        if header.get("offset") is not None or header.get("upload") is not None:
            raise ProtocolError("bad_request", "a chunk of an upload ('upload' and 'offset') needs exactly one "
                                               "frame", "offset")
        sha = req_str(header, CONTENT_HASH, min_len=64, max_len=64, default=None)
        if sha is not None and not CONTENT_HASH_RE.fullmatch(sha):
            raise ProtocolError("bad_request", f"field '{CONTENT_HASH}' must be 64 lower-case hex digits", CONTENT_HASH)
        size = req_int(header, "size", lo=1, hi=2**50)
        local = header.get("local", False)
        if not isinstance(local, bool):
            raise ProtocolError("bad_request", f"field 'local' must be a boolean, got {_type_name(local)}", "local")
        return {"form": "offer" if sha is not None else "begin", CONTENT_HASH: sha, "size": size, "upload": None,
                "offset": None, "local": local}
    if n_frames > 1 or header.get("offset") is None or header.get("upload") is None:
        raise ProtocolError("bad_request", f"an upload is an offer ('{CONTENT_HASH}', 'size'), a begin ('size') or one chunk "
                                           "('upload', 'offset' and exactly one frame)", "offset")
    extra = [k for k in (CONTENT_HASH, "size", "local") if k in header]
    if extra:
        raise ProtocolError("bad_request", f"a chunk names its upload, not '{extra[0]}'", extra[0])
    upload = req_str(header, "upload", min_len=1, max_len=64)
    offset = req_int(header, "offset", lo=0, hi=2**50)
    return {"form": "chunk", CONTENT_HASH: None, "size": None, "upload": upload, "offset": offset, "local": False}
