"""The job protocol (docs/protocol.md): version, names, error codes, framing and request validation.

A message is a list of frames: frame 0 is a UTF-8 JSON object (the header), frames 1..n are raw
bytes referenced from the header as ``{"frame": n}``. Everything here is pure (no sockets).
"""

from __future__ import annotations

import json
import math
from typing import Any

PROTOCOL_VERSION = 1
try:
    from importlib.metadata import version as _pkg_version

    SERVER_VERSION = _pkg_version("m2ugen")
except Exception:  # not installed (running from a plain checkout)
    SERVER_VERSION = "0.1.0"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5557
DEFAULT_ENDPOINT = f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}"
MAX_HEADER_BYTES = 64 * 1024

REQUEST_OPS = ("hello", "ping", "submit", "status", "cancel", "result", "jobs", "subscribe")
KINDS = ("ask", "edit", "generate")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
CONDITIONING = ("text", "embedding")

ERROR_CODES = {
    "bad_json": "frame 0 is not a JSON object",
    "bad_version": "unsupported protocol version",
    "bad_request": "a field is missing or has the wrong type/range",
    "unknown_op": "unknown operation",
    "unknown_kind": "submit kind is not ask/edit/generate",
    "bad_audio": "the audio input cannot be used",
    "bad_image": "the image input cannot be used",
    "bad_video": "the video input cannot be used",
    "path_not_allowed": "a path outside the allowed roots",
    "missing_frame": "a frame reference with no such frame",
    "busy": "the queue is full",
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


# ---------------------------------------------------------------------------------------------
# framing


def encode(header: dict[str, Any], frames: list[bytes] | tuple = ()) -> list[bytes]:
    """header + binary frames -> multipart message (header frame first)."""
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), *frames]


def decode(frames: list) -> tuple[dict[str, Any], list]:
    """multipart message -> (header, binary frames). Raises ProtocolError(bad_json)."""
    if not frames:
        raise ProtocolError("bad_json", "empty message: frame 0 must be a JSON object")
    raw = frames[0]
    raw = raw.bytes if hasattr(raw, "bytes") else raw
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("bad_request", f"header frame is {len(raw)} bytes; the limit is {MAX_HEADER_BYTES}",
                            "header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("bad_json", "frame 0 is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_json", f"frame 0 is not valid JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_json", f"frame 0 must be a JSON object, got {type(header).__name__}")
    return header, list(frames[1:])


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


def req_obj(d: dict, key: str, *, where: str = "", default: Any = ...) -> Any:
    name = where + key
    if _absent(d, key, name, default):
        return default
    v = d[key]
    if not isinstance(v, dict):
        raise ProtocolError("bad_request", f"field '{name}' must be an object, got {_type_name(v)}", name)
    return v


def check_envelope(header: dict[str, Any]) -> str:
    """Checks ``v``, ``op`` and ``req`` of a request; returns the op."""
    if "v" not in header:
        raise ProtocolError("bad_request", "field 'v' (protocol version) is required", "v")
    v = header["v"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("bad_request", f"field 'v' must be an integer, got {_type_name(v)}", "v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {v} is not supported; this server speaks "
                                           f"{PROTOCOL_VERSION}")
    req = header.get("req")
    if req is not None and not isinstance(req, (str, int)):
        raise ProtocolError("bad_request", f"field 'req' must be a string, got {_type_name(req)}", "req")
    op = req_str(header, "op", min_len=1)
    if op not in REQUEST_OPS:
        raise ProtocolError("unknown_op", f"unknown op {op!r}; expected one of {', '.join(REQUEST_OPS)}")
    return op


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validates submit ``params`` (docs/protocol.md §2) and returns them normalised (defaults filled
    where the default does not depend on the inputs or the model)."""
    w = "params."
    known = {"prompt", "duration", "seed", "conditioning", "temperature", "top_p", "max_new_tokens",
             "sample_rate", "channels", "context"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in params: {', '.join(unknown)}", w + unknown[0])
    p: dict[str, Any] = {
        "prompt": req_str(params, "prompt", where=w, min_len=1, max_len=4000),
        "duration": req_float(params, "duration", where=w, lo=0.5, hi=300.0, default=None),
        "seed": req_int(params, "seed", where=w, lo=0, hi=2**63 - 1, default=None),
        "conditioning": req_str(params, "conditioning", where=w, choices=CONDITIONING, default="text"),
        "temperature": req_float(params, "temperature", where=w, lo=0.0, hi=10.0, default=0.6),
        "top_p": req_float(params, "top_p", where=w, lo=0.0, hi=1.0, lo_open=True, default=0.8),
        "max_new_tokens": req_int(params, "max_new_tokens", where=w, lo=1, hi=1024, default=None),
        "sample_rate": req_int(params, "sample_rate", where=w, lo=8000, hi=192000, default=None),
        "channels": req_int(params, "channels", where=w, lo=1, hi=8, default=1),
        "context": check_context(req_obj(params, "context", where=w, default={})),
    }
    if p["prompt"].strip() == "":
        raise ProtocolError("bad_request", "field 'params.prompt' must not be blank", "params.prompt")
    return p


def check_context(ctx: dict[str, Any]) -> dict[str, Any]:
    w = "params.context."
    out: dict[str, Any] = {}
    if ctx.get("bpm") is not None:
        out["bpm"] = req_float(ctx, "bpm", where=w, lo=1.0, hi=1000.0)
    if ctx.get("time_signature") is not None:
        ts = ctx["time_signature"]
        ok = (isinstance(ts, list) and len(ts) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64 for x in ts))
        if not ok:
            raise ProtocolError("bad_request", f"field '{w}time_signature' must be [numerator, denominator] "
                                               f"integers in 1..64, got {ts!r}", w + "time_signature")
        out["time_signature"] = ts
    if ctx.get("key") is not None:
        out["key"] = req_str(ctx, "key", where=w, min_len=1, max_len=40)
    if ctx.get("selection") is not None:
        sel = req_obj(ctx, "selection", where=w)
        start = req_float(sel, "start", where=w + "selection.", lo=0.0)
        end = req_float(sel, "end", where=w + "selection.", lo=0.0)
        if end <= start:
            raise ProtocolError("bad_request", f"field '{w}selection.end' must be greater than start", w + "selection")
        out["selection"] = {"start": start, "end": end}
    if ctx.get("project_sample_rate") is not None:
        out["project_sample_rate"] = req_int(ctx, "project_sample_rate", where=w, lo=1000, hi=768000)
    return out


def check_input_ref(inputs: dict[str, Any], name: str, n_frames: int) -> dict[str, Any] | None:
    """One of ``inputs.audio|image|video``: ``{"path"}`` or ``{"frame", "name"}`` (+ audio start/end)."""
    w = f"inputs.{name}"
    ref = req_obj(inputs, name, where="inputs.", default=None)
    if ref is None:
        return None
    has_path, has_frame = ref.get("path") is not None, ref.get("frame") is not None
    if has_path == has_frame:
        raise ProtocolError("bad_request", f"field '{w}' needs exactly one of 'path' or 'frame'", w)
    out: dict[str, Any] = {}
    if has_path:
        out["path"] = req_str(ref, "path", where=w + ".", min_len=1, max_len=4096)
    else:
        idx = req_int(ref, "frame", where=w + ".", lo=1)
        if idx > n_frames:
            raise ProtocolError("missing_frame", f"'{w}.frame' refers to frame {idx} but the message has "
                                                 f"{n_frames} binary frame(s)", w + ".frame")
        out["frame"] = idx
        out["name"] = req_str(ref, "name", where=w + ".", max_len=255, default="")
    if name == "audio":
        start = req_float(ref, "start", where=w + ".", lo=0.0, default=None)
        end = req_float(ref, "end", where=w + ".", lo=0.0, default=None)
        if start is not None and end is not None and end <= start:
            raise ProtocolError("bad_request", f"field '{w}.end' ({end}) must be greater than start ({start})",
                                w + ".end")
        out["start"], out["end"] = start, end
    else:
        extra = sorted(set(ref) - {"path", "frame", "name"})
        if extra:
            raise ProtocolError("bad_request", f"unknown field(s) in {w}: {', '.join(extra)}", f"{w}.{extra[0]}")
    return out


def check_submit(header: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """Validates a ``submit`` header. Returns {kind, params, inputs, output}; file contents are not read."""
    kind = req_str(header, "kind", min_len=1)
    if kind not in KINDS:
        raise ProtocolError("unknown_kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    params = check_params(kind, req_obj(header, "params"))
    inputs_raw = req_obj(header, "inputs", default={})
    unknown = sorted(set(inputs_raw) - {"audio", "image", "video"})
    if unknown:
        raise ProtocolError("bad_request", f"unknown input(s): {', '.join(unknown)}; expected audio, image, video",
                            "inputs." + unknown[0])
    inputs = {k: check_input_ref(inputs_raw, k, n_frames) for k in ("audio", "image", "video")}
    if kind in ("ask", "edit") and inputs["audio"] is None:
        raise ProtocolError("bad_request", f"kind '{kind}' requires 'inputs.audio'", "inputs.audio")
    if kind == "generate" and inputs["image"] is not None and inputs["video"] is not None:
        raise ProtocolError("bad_request", "generate accepts at most one of 'inputs.image' / 'inputs.video'",
                            "inputs.video")
    output_raw = req_obj(header, "output", default={})
    unknown = sorted(set(output_raw) - {"path", "want"})
    if unknown:
        raise ProtocolError("bad_request", f"unknown field(s) in output: {', '.join(unknown)}", "output." + unknown[0])
    output = {
        "path": req_str(output_raw, "path", where="output.", min_len=1, max_len=4096, default=None),
        "want": req_str(output_raw, "want", where="output.", choices=("path", "bytes"), default="path"),
    }
    return {"kind": kind, "params": params, "inputs": inputs, "output": output}
