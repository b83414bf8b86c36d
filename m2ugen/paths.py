"""Where m2ugen keeps its files (light: no torch import, so the CLI and the server share it).

config dir: ``$M2UGEN_CONFIG_DIR``, else the platform's user config dir (weights.json, server.json, keys/)
data dir:   ``$M2UGEN_DATA_DIR``, else the platform's user data dir (jobs, journal)
tokenizer cache: ``<data dir>/tokenizers`` when ``$M2UGEN_DATA_DIR`` is set, else the system temp dir
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import platformdirs


def _from_env(var: str) -> Path | None:
    env = os.environ.get(var)
    return Path(env).expanduser().resolve() if env else None


def config_dir() -> Path:
    return _from_env("M2UGEN_CONFIG_DIR") or Path(platformdirs.user_config_dir("m2ugen"))


def data_dir() -> Path:
    return _from_env("M2UGEN_DATA_DIR") or Path(platformdirs.user_data_dir("m2ugen"))


def tokenizer_cache_dir() -> Path:
    """Where the tiny presets cache the SentencePiece tokenizers they train: ``<data dir>/tokenizers``
    when ``$M2UGEN_DATA_DIR`` is set, else ``<temp dir>/m2ugen/tokenizers`` (a throw-away cache, so
    one-off runs and tests leave nothing in the user's data dir)."""
    return (_from_env("M2UGEN_DATA_DIR") or Path(tempfile.gettempdir()) / "m2ugen") / "tokenizers"
