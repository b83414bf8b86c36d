"""The LoRA adapters a server holds (personal fine-tunes, docs/training.md): loaded at start from the
server's own ``<data dir>/adapters/<name>/`` and from ``serve --adapter [NAME=]DIR`` / weights.json
``adapters``, added by finished ``finetune`` jobs, selected per request (``params.adapter``).

The names are listed in the model info (``welcome`` / ``pong`` / ``accepted``: ``model.adapters``).
Everything that touches the model runs on the worker thread; the transport thread only reads names.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from server.protocol import ADAPTER_NAME_RE

log = logging.getLogger("m2ugen.server")

ADAPTERS_DIR = "adapters"
INFO_FILE = "m2ugen_adapter.json"  # m2ugen.train.finetune.INFO_FILE (not imported: that module needs torch)


def parse_adapter_arg(text: str) -> tuple[str | None, str]:
    """``serve --adapter [NAME=]DIR`` -> (name or None = the adapter's own, dir)."""
    name, sep, path = text.partition("=")
    if sep and ADAPTER_NAME_RE.fullmatch(name):
        return name, path
    return None, text


class Adapters:
    def __init__(self, model, model_info: dict[str, Any], data_dir: Path):
        self.model = model
        self.model_info = model_info
        self.dir = Path(data_dir) / ADAPTERS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._dirs: dict[str, Path] = {}
        self._publish()

    # --- names (any thread) ---------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._dirs)

    def stored(self, name: str) -> Path:
        """Where a fine-tune job writes adapter ``name`` (a validated name: never a client path)."""
        if not ADAPTER_NAME_RE.fullmatch(name):
            raise ValueError(f"bad adapter name {name!r}")
        return self.dir / name

    def taken(self, name: str) -> bool:
        """An adapter of that name is loaded or stored in the data dir."""
        return name in self.names() or self.stored(name).exists()

    def _publish(self) -> None:
        self.model_info["adapters"] = self.names()

    # --- the model (worker thread, or before it starts) -----------------------------------
    def load(self, directory: str | Path, name: str | None = None) -> str:
        from m2ugen.train.finetune import apply_adapter, select_adapter

        name = apply_adapter(self.model, directory, name)
        select_adapter(self.model, None)  # loading selects it; requests choose their own
        with self._lock:
            self._dirs[name] = Path(directory)
        self._publish()
        return name

    def load_all(self, extra: list[tuple[str | None, str]] = ()) -> list[str]:
        """The data dir's adapters (one that cannot be loaded is logged and skipped), then ``extra``
        ([name or None, dir], from serve's options: one that cannot be loaded stops the start)."""
        names = []
        for d in sorted(self.dir.iterdir()):
            if d.is_dir() and ADAPTER_NAME_RE.fullmatch(d.name):
                try:
                    names.append(self.load(d, d.name))
                except Exception as e:
                    log.error("adapter %s cannot be loaded, skipped: %s: %s", d, type(e).__name__, e)
        for name, directory in extra:
            names.append(self.load(directory, name))
        if names:
            log.info("adapters loaded: %s", ", ".join(names))
        return names

    def install(self, name: str, built: Path, replace: bool) -> Path:
        """Move a finished fine-tune's adapter dir into the data dir under ``name`` and load it."""
        from m2ugen.train.finetune import unload_adapter

        dest = self.stored(name)
        if self.taken(name):
            if not replace:
                raise ValueError(f"an adapter named {name!r} exists")
            unload_adapter(self.model, name)
            with self._lock:
                self._dirs.pop(name, None)
            if dest.exists():
                shutil.rmtree(dest)
        info_path = built / INFO_FILE  # it trained under a job-local name: its own name is `name`
        info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "name": name}, indent=1) + "\n")
        shutil.move(str(built), str(dest))
        self.load(dest, name)
        return dest

    def select(self, name: str | None) -> None:
        """Make ``name`` (None: the base model) the adapter of the next model call."""
        if name is None and not self._dirs:
            return  # nothing loaded: nothing to switch (and no peft needed)
        from m2ugen.train.finetune import select_adapter

        select_adapter(self.model, name)


def select_for(worker, job) -> None:
    """The request's adapter (``params.adapter``), before its model call; for the chat kinds."""
    adapters = getattr(worker, "adapters", None)
    if adapters is not None:
        adapters.select(job.params.get("adapter"))
