"""OSC datagrams in and out: decoding (with bundles), typed encoding, UTF-8 chunking.

python-osc does the parsing and building. Two things are added around it:
- the type tag string is read first, so a caller can name the tags it got, and tags python-osc does
  not know (it logs and skips them without consuming their bytes, misreading what follows) are
  rejected up front, except `S` (symbol), which has the layout of `s` and is read as a string;
- bundles are walked here so every contained message goes through the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

# Tags python-osc 1.10 decodes. `S` is rewritten to `s` before decoding.
KNOWN_TAGS = set("ihfdsbrmtTFN[]")
BUNDLE_HEAD = b"#bundle\x00"
MAX_BUNDLE_DEPTH = 8


class OscDecodeError(ValueError):
    """The datagram is not a valid OSC packet (code `bad_osc`)."""


@dataclass
class Message:
    address: str
    tags: str  # without the leading comma, e.g. "sfi"
    args: list[Any]


def decode(dgram: bytes) -> list[Message]:
    """One datagram -> its messages (one, or all messages of a possibly nested bundle)."""
    if dgram.startswith(BUNDLE_HEAD):
        return _decode_bundle(dgram, depth=0)
    if dgram.startswith(b"/"):
        return [_decode_message(dgram)]
    raise OscDecodeError(f"not an OSC message or bundle ({len(dgram)} bytes, starts with {dgram[:8]!r})")


def _decode_bundle(dgram: bytes, depth: int) -> list[Message]:
    # "#bundle\0" | 8-byte time tag | (int32 size | element)*
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscDecodeError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    if len(dgram) < 16:
        raise OscDecodeError("bundle shorter than its 16-byte header")
    messages: list[Message] = []
    index = 16
    while index < len(dgram):
        try:
            size, index = osc_types.get_int(dgram, index)
        except osc_types.ParseError as e:
            raise OscDecodeError(f"bundle element size unreadable: {e}") from None
        if size <= 0 or size % 4 or index + size > len(dgram):
            raise OscDecodeError(f"bundle element size {size} does not fit the datagram")
        element = dgram[index : index + size]
        index += size
        if element.startswith(BUNDLE_HEAD):
            messages.extend(_decode_bundle(element, depth + 1))
        elif element.startswith(b"/"):
            messages.append(_decode_message(element))
        else:
            raise OscDecodeError("bundle element is neither a message nor a bundle")
    return messages


def _decode_message(dgram: bytes) -> Message:
    try:
        address, index = osc_types.get_string(dgram, 0)
    except (osc_types.ParseError, UnicodeDecodeError) as e:
        raise OscDecodeError(f"address unreadable: {e}") from None
    if index >= len(dgram):  # no type tag string: a message without arguments (OSC 1.0 allows it)
        return Message(address, "", [])
    try:
        tag_string, tags_start = osc_types.get_string(dgram, index)
    except (osc_types.ParseError, UnicodeDecodeError) as e:
        raise OscDecodeError(f"{address}: type tag string unreadable: {e}") from None
    if not tag_string.startswith(","):
        raise OscDecodeError(f"{address}: type tag string must start with ',', got {tag_string!r}")
    tags = tag_string[1:]
    unknown = sorted(set(tags) - KNOWN_TAGS - {"S"})
    if unknown:
        raise OscDecodeError(f"{address}: unsupported type tags {''.join(unknown)!r} in ',{tags}'")
    # python-osc pads missing number bytes with zeros; a truncated message must be an error instead
    end = _arguments_end(dgram, tags_start, tags)
    if end != len(dgram):
        raise OscDecodeError(
            f"{address}: ',{tags}' needs {end} bytes, the datagram has {len(dgram)} (truncated or trailing bytes)"
        )
    if "S" in tags:  # same bytes as 's'; patch the tag so python-osc reads it as a string
        patched = tag_string.replace("S", "s").encode("ascii")
        dgram = dgram[:index] + patched + dgram[index + len(patched) :]
        tags = tags.replace("S", "s")
    try:
        parsed = OscMessage(dgram)
    except Exception as e:  # python-osc raises ParseError, or struct/Unicode errors on truncated data
        raise OscDecodeError(f"{address}: arguments do not match ',{tags}': {e}") from None
    return Message(address, tags, parsed.params)


def _arguments_end(dgram: bytes, index: int, tags: str) -> int:
    """Offset just past the arguments the tags describe (may exceed len(dgram) when truncated)."""
    for tag in tags:
        if tag in "ifrmc":
            index += 4
        elif tag in "hdt":
            index += 8
        elif tag in "sS":
            nul = dgram.find(b"\x00", index)
            if nul < 0:
                return len(dgram) + 1
            index = nul + 4 - nul % 4  # the NUL and the padding to a multiple of 4
        elif tag == "b":
            if index + 4 > len(dgram):
                return len(dgram) + 1
            size = int.from_bytes(dgram[index : index + 4], "big")
            index += 4 + size + (-size) % 4
        # T F N [ ] carry no bytes
    return index


def encode(address: str, *args: tuple[str, Any]) -> bytes:
    """Build one message from (tag, value) pairs with explicit tags: encode("/m2u/pong", ("s", "0.1")).
    NUL characters are dropped from strings (OSC strings are NUL-terminated)."""
    builder = OscMessageBuilder(address=address)
    for tag, value in args:
        if tag == "i":
            value = int(value)
        elif tag == "f":
            value = float(value)
        elif tag == "s":
            value = str(value).replace("\x00", "")  # a NUL would end the OSC string early
        builder.add_arg(value, tag)
    return builder.build().dgram


def utf8_chunks(text: str, limit: int = 1000) -> list[str]:
    """Split text into pieces of at most `limit` UTF-8 bytes, never inside a character."""
    if limit < 4:
        raise ValueError(f"limit must be >= 4 bytes (one UTF-8 character), got {limit}")
    data = text.encode("utf-8")
    chunks: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        # step back while data[end] is a continuation byte (0b10xxxxxx): the cut would split a character
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunks.append(data[start:end].decode("utf-8"))
        start = end
    return chunks


MAX_JSON_TEXT = 1 << 20  # bytes of JSON text one request may carry (midi_notes)
MAX_JSON_NESTING = 8  # arrays/objects inside each other (midi_notes needs 2)


def json_text_problem(text: str, max_depth: int = MAX_JSON_NESTING, max_bytes: int = MAX_JSON_TEXT) -> str | None:
    """Why JSON text from a datagram must not be parsed, or None: its size and its nesting are checked
    by a linear scan before ``json.loads`` sees it (a deep nesting would exhaust the parser's recursion)."""
    if len(text) > max_bytes:
        return f"{len(text)} characters; the limit is {max_bytes}"
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
        elif ch in "]}":
            depth -= 1
    return None
