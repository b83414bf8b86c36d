"""Where m2ugen keeps its files (light: no torch import, so the CLI and the server share it).

config dir: ``$M2UGEN_CONFIG_DIR``, else the platform's user config dir (weights.json, server.json, keys/)
data dir:   ``$M2UGEN_DATA_DIR``, else the platform's user data dir (jobs, journal)
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def config_dir() -> Path:
    env = os.environ.get("M2UGEN_CONFIG_DIR")
    return Path(env).expanduser().resolve() if env else Path(platformdirs.user_config_dir("m2ugen"))


def data_dir() -> Path:
    env = os.environ.get("M2UGEN_DATA_DIR")
    return Path(env).expanduser().resolve() if env else Path(platformdirs.user_data_dir("m2ugen"))
