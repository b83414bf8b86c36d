"""Build the Max for Live device M2UGen.amxd from the readable patcher M2UGen.maxpat.

An .amxd is a row of chunks, each `[4-byte tag][uint32 little-endian size][data]`:

    ampf  4 bytes  device type: b"aaaa" audio effect (b"mmmm" MIDI effect, b"iiii" instrument)
    meta  4 bytes  uint32 LE, 1 (the value unfrozen devices saved by Max carry)
    ptch  n bytes  the patcher JSON (UTF-8), NUL-terminated

The device is unfrozen: m2ugen_device.js and the files it include()s are copied next to the .amxd,
where Max finds them (the search path starts with the device's folder). The output
depends only on the two source files (no time stamps), so two builds are byte-identical.

    python max_device/build_amxd.py [--out max_device/build/M2UGen.amxd]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATCHER = HERE / "M2UGen.maxpat"
DEVICE_JS = HERE / "m2ugen_device.js"
DEFAULT_OUT = HERE / "build" / "M2UGen.amxd"

DEVICE_TYPES = {"audio_effect": b"aaaa", "midi_effect": b"mmmm", "instrument": b"iiii"}


def chunk(tag: bytes, data: bytes) -> bytes:
    assert len(tag) == 4
    return tag + struct.pack("<I", len(data)) + data


def load_patcher(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    patcher = doc.get("patcher") if isinstance(doc, dict) else None
    if not isinstance(patcher, dict) or not isinstance(patcher.get("boxes"), list):
        raise ValueError(f"{path} has no patcher.boxes list: not a Max patcher")
    return doc


def referenced_js(doc: dict) -> list[str]:
    """File names of every [js file.js] box in the patcher."""
    out = []
    for entry in doc["patcher"]["boxes"]:
        words = entry["box"].get("text", "").split()
        if entry["box"].get("maxclass") == "newobj" and len(words) >= 2 and words[0] == "js":
            out.append(words[1])
    return out


INCLUDE = re.compile(r'^include\("([^"]+)"\);', re.M)


def js_files(doc: dict, folder: Path) -> list[str]:
    """Every JS file the device needs: each [js file.js] and, recursively, what it include()s."""
    out: list[str] = []
    todo = referenced_js(doc)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        path = folder / name
        if not path.is_file():
            raise ValueError(f"the patcher uses [js {name}] but {path} does not exist" if not out
                             else f"a device file includes {name} but {path} does not exist")
        out.append(name)
        todo += INCLUDE.findall(path.read_text(encoding="utf-8"))
    return out


def amxd_bytes(doc: dict, device_type: str = "audio_effect") -> bytes:
    ptch = json.dumps(doc, indent="\t", ensure_ascii=False).encode("utf-8") + b"\x00"
    return (chunk(b"ampf", DEVICE_TYPES[device_type])
            + chunk(b"meta", struct.pack("<I", 1))
            + chunk(b"ptch", ptch))


def build(out: Path, patcher: Path = PATCHER) -> Path:
    doc = load_patcher(patcher)
    files = js_files(doc, patcher.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(amxd_bytes(doc))
    for name in files:
        shutil.copyfile(patcher.parent / name, out.parent / name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .amxd (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        out = build(args.out)
    except ValueError as e:
        print(f"build_amxd: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
