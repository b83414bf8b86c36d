"""Pure functions of the OSC bridge: datagram decoding, argument parsing, UTF-8 chunking."""

import struct

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge_osc import osc
from bridge_osc.requests import ArgError, parse


def build(address, *args):
    """args: (tag, value) pairs."""
    b = OscMessageBuilder(address=address)
    for tag, value in args:
        b.add_arg(value, tag)
    return b.build().dgram


def one(dgram):
    messages = osc.decode(dgram)
    assert len(messages) == 1
    return messages[0]


def req(address, *args):
    return parse(one(build(address, *args)))


# ---------------------------------------------------------------- decoding

def test_decode_message_and_tags():
    m = one(build("/m2u/generate", ("s", "lofi"), ("f", 8.0), ("i", 9102)))
    assert (m.address, m.tags, m.args) == ("/m2u/generate", "sfi", ["lofi", 8.0, 9102])


def test_decode_message_without_type_tag_string():
    m = one(b"/m2u/ping\x00\x00\x00")
    assert (m.address, m.tags, m.args) == ("/m2u/ping", "", [])


def test_decode_symbol_tag_is_read_as_string_and_following_args_stay_aligned():
    # ',Sf' : python-osc alone would skip 'S' without consuming it and misread the float
    dgram = b"/m2u/generate\x00\x00\x00" + b",Sf\x00" + b"drone\x00\x00\x00" + struct.pack(">f", 4.0)
    m = one(dgram)
    assert (m.tags, m.args) == ("sf", ["drone", 4.0])


def test_decode_nested_bundle():
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessageBuilder("/m2u/ping").build())
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(OscMessageBuilder("/m2u/hello").build())
    outer.add_content(inner.build())
    messages = osc.decode(outer.build().dgram)
    assert [m.address for m in messages] == ["/m2u/hello", "/m2u/ping"]


@pytest.mark.parametrize("dgram, words", [
    (b"", "not an OSC"),
    (b"hello world", "not an OSC"),
    (b"/m2u/ping\x00\x00\x00sf\x00\x00", "must start with ','"),
    (b"/m2u/ping\x00\x00\x00,i\x00\x00", "truncated"),             # int tag without its 4 bytes
    (b"/m2u/generate\x00\x00\x00,sf\x00ab\x00\x00", "truncated"),   # python-osc alone reads 0.0
    (b"/m2u/ping\x00\x00\x00,i\x00\x00" + b"\x00" * 8, "trailing"),  # 4 bytes too many
    (b"/m2u/ping\x00\x00\x00,s\x00\x00abc", "truncated"),          # string without its NUL
    (b"/m2u/ping\x00\x00\x00,b\x00\x00" + struct.pack(">i", 64) + b"RIFF", "truncated"),
    (b"/m2u/ping\x00\x00\x00,c\x00\x00\x00\x00\x00A", "unsupported type tags"),
    (b"#bundle\x00\x00\x00", "shorter"),
    (b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", 400) + b"/x\x00\x00", "does not fit"),
    (b"/m2u/\xff\xfe\x00\x00", "address unreadable"),
])
def test_decode_rejects_malformed(dgram, words):
    with pytest.raises(osc.OscDecodeError, match=words):
        osc.decode(dgram)


def test_encode_drops_nul_characters_from_strings():
    m = one(osc.encode("/m2u/text", ("s", "j"), ("i", 0), ("i", 1), ("s", "a\x00b\x00")))
    assert (m.tags, m.args) == ("siis", ["j", 0, 1, "ab"])


def test_encode_types_are_explicit():
    dgram = osc.encode("/m2u/done", ("s", "j1"), ("s", "/tmp/a.wav"), ("f", 2), ("i", 16000.0))
    m = one(dgram)
    assert (m.tags, m.args) == ("ssfi", ["j1", "/tmp/a.wav", 2.0, 16000])


# ---------------------------------------------------------------- chunking

def test_utf8_chunks_never_split_a_character_and_rejoin():
    text = "ab" + "é" * 700 + "🎵" * 300 + "end"
    chunks = osc.utf8_chunks(text, 1000)
    assert "".join(chunks) == text
    assert all(len(c.encode()) <= 1000 for c in chunks)
    assert len(chunks) == 3  # 2 + 1400 + 1200 + 3 bytes: cuts step back at most 3 bytes
    # every boundary is a whole character: re-encoding each chunk alone round-trips
    assert all(c.encode().decode() == c for c in chunks)


def test_utf8_chunks_edge_cases():
    assert osc.utf8_chunks("", 1000) == []
    assert osc.utf8_chunks("x" * 1000, 1000) == ["x" * 1000]
    assert osc.utf8_chunks("x" * 1001, 1000) == ["x" * 1000, "x"]
    assert osc.utf8_chunks("🎵🎵", 5) == ["🎵", "🎵"]  # 4-byte char, limit 5
    with pytest.raises(ValueError, match="limit"):
        osc.utf8_chunks("abc", 3)


# ---------------------------------------------------------------- requests

def test_generate_forms():
    r = req("/m2u/generate", ("s", "lofi piano"), ("f", 8.0))
    assert (r.op, r.prompt, r.duration, r.reply_port) == ("generate", "lofi piano", 8.0, None)
    r = req("/m2u/generate", ("s", "lofi piano"), ("i", 8), ("f", 9102.0))
    assert (r.duration, r.reply_port) == (8.0, 9102)
    r = req("/m2u/generate", ("s", "a cat"), ("f", 0.0), ("s", "/x/cat.PNG"), ("i", 9200))
    assert (r.prompt, r.duration, r.image, r.video, r.reply_port) == ("a cat", None, "/x/cat.PNG", None, 9200)
    r = req("/m2u/generate", ("s", "a"), ("s", "dance"), ("s", "/x/clip.mp4"))
    assert (r.prompt, r.video, r.duration) == ("a dance", "/x/clip.mp4", None)
    r = req("/m2u/generate", ("s", "a"), ("s", "dance"), ("s", "/x/clip.mp4"), ("i", 9300))
    assert (r.prompt, r.video, r.reply_port) == ("a dance", "/x/clip.mp4", 9300)


def test_pd_split_words_are_joined():
    r = req("/m2u/generate", ("s", "dark"), ("s", "ambient"), ("s", "drone"), ("f", 8.0))
    assert (r.prompt, r.duration) == ("dark ambient drone", 8.0)
    r = req("/m2u/edit", ("s", "more"), ("s", "drums"), ("s", "last"))
    assert (r.prompt, r.audio) == ("more drums", "last")


def test_numbers_inside_split_text_stay_in_the_prompt():
    # Pd: [list lofi beat at 90 bpm 8( sends 90 and 8 as floats; the prompt ends at its last word
    r = req("/m2u/generate", ("s", "lofi"), ("s", "beat"), ("s", "at"), ("f", 90.0), ("s", "bpm"), ("f", 8.0))
    assert (r.prompt, r.duration, r.image) == ("lofi beat at 90 bpm", 8.0, None)
    r = req("/m2u/generate", ("f", 808.0), ("s", "drums"), ("f", 0.5), ("s", "swing"), ("s", "/x/a.jpg"))
    assert (r.prompt, r.image, r.duration) == ("808 drums 0.5 swing", "/x/a.jpg", None)
    r = req("/m2u/edit", ("s", "add"), ("f", 808.0), ("s", "drums"), ("s", "/a.wav"), ("f", 1.0), ("f", 2.0))
    assert (r.prompt, r.audio, r.start, r.end) == ("add 808 drums", "/a.wav", 1.0, 2.0)


def test_edit_number_counts():
    base = [("s", "more drums"), ("s", "/a.wav")]
    r = req("/m2u/edit", *base, ("f", 12.0))
    assert (r.duration, r.start, r.end) == (12.0, None, None)
    r = req("/m2u/edit", *base, ("f", 1.5), ("f", 4.0))
    assert (r.start, r.end, r.duration) == (1.5, 4.0, None)
    r = req("/m2u/edit", *base, ("f", 0.0), ("f", 0.0), ("f", 6.0), ("f", 9105.0))
    assert (r.start, r.end, r.duration, r.reply_port) == (None, None, 6.0, 9105)


def test_ask_number_counts():
    base = [("s", "what"), ("s", "is this?"), ("s", "j-12")]
    r = req("/m2u/ask", *base)
    assert (r.prompt, r.audio, r.reply_port) == ("what is this?", "j-12", None)
    assert req("/m2u/ask", *base, ("i", 9200)).reply_port == 9200
    r = req("/m2u/ask", *base, ("f", 2.0), ("f", 3.0), ("i", 9200))
    assert (r.start, r.end, r.reply_port) == (2.0, 3.0, 9200)


def test_job_hello_ping_set():
    assert req("/m2u/cancel", ("s", "last")).job == "last"
    r = req("/m2u/status", ("s", "abc"), ("f", 9101.0))
    assert (r.job, r.reply_port) == ("abc", 9101)
    assert req("/m2u/hello", ("f", 9500.0)).reply_port == 9500
    assert req("/m2u/hello").reply_port is None
    assert req("/m2u/ping").op == "ping"
    r = req("/m2u/set", ("s", "time_signature"), ("f", 6.0), ("f", 8.0), ("i", 9101))
    assert (r.name, r.value, r.reply_port) == ("time_signature", [6, 8], 9101)
    r = req("/m2u/set", ("s", "key"), ("s", "A"), ("s", "minor"))
    assert (r.name, r.value) == ("key", "A minor")
    assert req("/m2u/set", ("s", "seed"), ("f", 7.0)).value == 7
    assert req("/m2u/set", ("s", "bpm")).value is None
    assert req("/m2u/set", ("s", "bpm"), ("s", "")).value is None


@pytest.mark.parametrize("address, args, code, words", [
    ("/m2u/nope", [], "unknown_address", "'/m2u/nope'"),
    ("/m2u/generate", [], "bad_args", "expected ,s:prompt"),
    ("/m2u/generate", [("i", 3)], "bad_args", "prompt"),
    ("/m2u/generate", [("s", "x"), ("T", True)], "bad_args", "type tag 'T'"),
    ("/m2u/generate", [("s", "x"), ("b", b"RIFF")], "bad_args", "type tag 'b'"),
    ("/m2u/generate", [("s", "x"), ("f", 1.0), ("f", 2.0), ("f", 3.0)], "bad_args", "at most two numbers"),
    ("/m2u/generate", [("s", "x"), ("f", 1.0), ("s", "/a/b.png"), ("f", 2.0), ("f", 3.0)], "bad_args", "at most one number"),
    ("/m2u/generate", [("s", "/a/b.png")], "bad_args", "prompt before the media path"),
    ("/m2u/generate", [("s", "x"), ("f", 1.0), ("s", "/a/b.txt")], "bad_args", "extension '.txt'"),
    ("/m2u/generate", [("s", "x"), ("f", 1.0), ("f", 9101.5)], "bad_args", "whole number"),
    ("/m2u/generate", [("s", "x"), ("f", 1.0), ("i", 70000)], "bad_args", "0..65535"),
    ("/m2u/generate", [("s", "x"), ("f", float("nan"))], "bad_args", "finite"),
    ("/m2u/generate", [("s", " ")], "bad_args", "prompt is empty"),
    ("/m2u/edit", [("s", "/a.wav")], "bad_args", "audio path"),
    ("/m2u/edit", [("s", "x"), ("s", "/a.wav"), ("f", 4.0), ("f", 2.0)], "bad_args", "must be after start"),
    ("/m2u/edit", [("s", "x"), ("s", "/a.wav"), ("f", -1.0), ("f", 2.0)], "bad_args", ">= 0"),
    ("/m2u/ask", [("s", "x"), ("s", "/a.wav")] + [("f", 1.0)] * 4, "bad_args", "at most 3 numbers"),
    ("/m2u/cancel", [], "bad_args", "job id"),
    ("/m2u/cancel", [("f", 3.0)], "bad_args", "job id"),
    ("/m2u/hello", [("s", "9101")], "bad_args", "at most one number"),
    ("/m2u/set", [("s", "volume"), ("f", 1.0)], "bad_args", "unknown setting 'volume'"),
    ("/m2u/set", [("s", "seed"), ("s", "x"), ("s", "y")], "bad_args", "seed takes 1 number"),
])
def test_bad_requests_name_what_is_wrong(address, args, code, words):
    with pytest.raises(ArgError) as info:
        req(address, *args)
    assert info.value.code == code
    assert words in info.value.message
