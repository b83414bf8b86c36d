"""Per-user directories and the discovery file (``<config dir>/server.json``).

The directories themselves come from ``m2ugen.paths`` (``M2UGEN_CONFIG_DIR`` / ``M2UGEN_DATA_DIR``
override the platform's user dirs; tests use both to stay apart).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from m2ugen.paths import config_dir

DISCOVERY_NAME = "server.json"


def discovery_path() -> Path:
    return config_dir() / DISCOVERY_NAME


def cli_path() -> str:
    """Absolute path of the ``m2ugen`` executable next to this Python, else on PATH, else ``python -m``."""
    exe = "m2ugen.exe" if os.name == "nt" else "m2ugen"
    here = Path(sys.executable).parent / exe
    if here.exists():
        return str(here)
    found = shutil.which("m2ugen")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m server.cli"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temp file in the same directory, then rename over ``path`` (the project's one
    atomic write, ``security.write_atomic_confined``)."""
    from server.security import write_atomic_confined

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_confined(Path(os.path.realpath(path.parent)) / path.name,
                          (json.dumps(data, indent=2) + "\n").encode("utf-8"), "status file", lambda head: True)


def write(info: dict[str, Any]) -> Path:
    path = discovery_path()
    write_json_atomic(path, info)
    return path


def read() -> dict[str, Any] | None:
    """The discovery file's contents, or None when there is none (or it is unreadable)."""
    try:
        with open(discovery_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def mark_stopped(pid: int) -> None:
    """On a clean shutdown keep the file (the ``cli`` path stays useful) but say the server is gone."""
    info = read()
    if info is None or info.get("pid") != pid:
        return
    info["running"] = False
    info["stopped"] = time.time()
    write(info)
