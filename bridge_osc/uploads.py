"""Chunked uploads: request options too big for one UDP datagram (bridge_osc/README.md, "Uploads").

A client sends the text of the options in pieces, each in its own datagram:

    /m2u/upload s:upload_id i:index i:count s:chunk [i:reply_port]

and the bridge answers `/m2u/uploaded s:upload_id i:bytes` once every piece is there (again for a
repeated piece, so a client that lost the answer can send one piece again). The text is one JSON object
of options (`UPLOADABLE`); `/m2u/submit … upload <upload_id> …` then uses them as if they were given in
the submit itself. An upload is used once; an unused or unfinished one expires after `EXPIRY_S`.
macOS drops UDP datagrams over 9,216 bytes by default, so a client keeps each piece (with its OSC
framing) under that; the Live device sends pieces of at most 2,000 characters.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_CHUNKS = 64
MAX_UPLOAD_BYTES = 48 * 1024  # the job server's request header is 64 KiB (server/protocol.py)
MAX_UPLOADS_PER_CLIENT = 8
MAX_UPLOADS = 256
EXPIRY_S = 120.0
UPLOAD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
UPLOADABLE = ("midi_notes", "clip")  # the submit options an upload may carry


class UploadError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Upload:
    count: int
    created: float
    parts: dict[int, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(p.encode("utf-8")) for p in self.parts.values())

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.count

    def text(self) -> str:
        return "".join(self.parts[i] for i in range(self.count))


Key = tuple[Any, str]  # (the client's reply address, upload id)


class Uploads:
    """The uploads of every client; a client only ever sees its own (keyed by its reply address)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.uploads: OrderedDict[Key, Upload] = OrderedDict()

    def expire(self) -> None:
        now = self.clock()
        for key in [k for k, u in self.uploads.items() if now - u.created > EXPIRY_S]:
            del self.uploads[key]

    def add(self, target: Any, upload_id: str, index: int, count: int, chunk: str) -> int | None:
        """Store one piece; -> the upload's size in bytes once it is complete, else None."""
        self.expire()
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadError("bad_upload", f"upload id {upload_id[:70]!r}: 1 to 64 letters, digits, '_', '-' or '.'")
        if not 1 <= count <= MAX_CHUNKS or not 0 <= index < count:
            raise UploadError("bad_upload", f"upload {upload_id}: piece {index} of {count}; count must be 1..{MAX_CHUNKS} "
                                            f"and index 0..count-1")
        key = (target, upload_id)
        upload = self.uploads.get(key)
        if upload is not None and upload.count != count:
            raise UploadError("bad_upload", f"upload {upload_id} was begun with {upload.count} pieces, not {count}")
        if upload is None:
            if sum(1 for t, _ in self.uploads if t == target) >= MAX_UPLOADS_PER_CLIENT:
                raise UploadError("too_many_uploads", f"this client has {MAX_UPLOADS_PER_CLIENT} unfinished or unused "
                                                      f"uploads; they expire after {EXPIRY_S:g} s")
            while len(self.uploads) >= MAX_UPLOADS:
                self.uploads.popitem(last=False)
            upload = self.uploads[key] = Upload(count, self.clock())
        upload.parts[index] = chunk
        if upload.size > MAX_UPLOAD_BYTES:
            del self.uploads[key]
            raise UploadError("upload_too_large", f"upload {upload_id} is over {MAX_UPLOAD_BYTES} bytes (the server "
                                                  f"takes a request of up to 64 KiB); it was dropped")
        return upload.size if upload.complete else None

    def take(self, target: Any, upload_id: str) -> dict[str, Any]:
        """The options of a complete upload (then forgotten): {"midi_notes": JSON text, "clip": [paths]}."""
        self.expire()
        upload = self.uploads.get((target, upload_id))
        if upload is None:
            raise UploadError("bad_upload", f"no upload {upload_id!r} from this client (never sent, used already, or "
                                            f"expired after {EXPIRY_S:g} s)")
        if not upload.complete:
            missing = [i for i in range(upload.count) if i not in upload.parts]
            raise UploadError("upload_incomplete", f"upload {upload_id}: pieces {missing[:10]} of {upload.count} did not "
                                                   "arrive; send them again (or the whole upload)")
        del self.uploads[(target, upload_id)]
        try:
            options = json.loads(upload.text())
        except ValueError as e:
            raise UploadError("bad_upload", f"upload {upload_id} is not JSON: {e}") from None
        if not isinstance(options, dict) or not options or set(options) - set(UPLOADABLE):
            raise UploadError("bad_upload", f"upload {upload_id} must be a JSON object of the options "
                                            f"{', '.join(UPLOADABLE)}")
        out: dict[str, Any] = {}
        if "midi_notes" in options:
            out["midi_notes"] = json.dumps(options["midi_notes"])  # checked like the submit option itself
        if "clip" in options:
            clips = options["clip"]
            if not isinstance(clips, list) or not clips or not all(isinstance(c, str) and c for c in clips):
                raise UploadError("bad_upload", f"upload {upload_id}: clip must be a list of paths")
            out["clip"] = clips
        return out
