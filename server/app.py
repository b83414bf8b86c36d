"""Assembles ``m2ugen serve``: model, journal, queue, worker thread, transport thread, discovery file."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2ugen import paths
from server import discovery, owners, protocol, security
from server import inputs as inputs_mod
from server.adapters import Adapters
from server.blobs import BlobStore
from server.localfd import LocalIntake
from server.handlers import Handlers, Limits
from server.jobs import Job, JobQueue, JobStore
from server.journal import Journal
from server.transport import Transport
from server.worker import Worker

log = logging.getLogger("m2ugen.server")

TINY_BANNER = ("*** NO WEIGHTS FOUND: serving the TINY preset (random weights, for trying the integration; "
               "its music is noise and its text is gibberish). Configure weights with M2UGEN_WEIGHTS or "
               "<config dir>/weights.json, or pass --weights PATH. ***")


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """``--device`` / ``--dtype`` -> (torch device, dtype name). auto: CUDA when there is one, bf16 there
    and float32 on CPU (bf16 matmuls on CPU are slower than fp32 here)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device")
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return str(dev), dtype


def load_model(preset: str | None = None, weights: str | None = None, device: str = "cpu",
               dtype: str | None = None, compile: bool = False, int8: bool = False):
    """-> (model, info dict for replies). No preset and no weights: the configured weights, else tiny.
    ``device`` / ``dtype``: where the model serves and its parameters' dtype (the LLaMA and the sub-models;
    bridges and projector stay float32 as official; None: the weights' own). ``compile``: the decode steps
    of the LLaMA and of MusicGen are compiled (CUDA graphs on GPU). ``int8``: the LLaMA's projections
    int8 weight-only (torchao; LoRA, adapters and gates stay as they are)."""
    import torch

    from m2ugen.config import M2UGenConfig  # submodules: also work when the editable install is stale
    from m2ugen.model import M2UGen
    from m2ugen.quant import defer_torchao

    if not int8:
        defer_torchao()  # transformers would import it (and print its kernel warnings) at the first build

    if weights is not None and preset is not None:
        raise ValueError("give either --preset or --weights, not both")
    if weights is None and preset is None:
        from m2ugen import checkpoint

        weights = checkpoint.find_weights()
        if weights is None:
            preset = "tiny"
            log.warning(TINY_BANNER)
    if weights is not None:
        log.info("loading weights from %s", weights)
        model = M2UGen.from_pretrained(weights, device=device, dtype=dtype)
    else:
        cfg = M2UGenConfig.preset(preset)
        model = M2UGen.from_config(cfg.replace(dtype=dtype) if dtype else cfg, device=device)
    if dtype is not None:
        model.set_submodel_dtype(getattr(torch, dtype))
    if int8:
        from m2ugen.quant import quantize_llama_int8

        quantize_llama_int8(model.llama)
    if compile:
        model.compile_decode()
    info = model_info(model, preset=preset, weights=weights)
    info.update(device=str(device), dtype=dtype or str(model.cfg.dtype), compiled=bool(compile), int8=bool(int8))
    log.info("serving on %s in %s%s%s", device, info["dtype"], " with an int8 LLaMA" if int8 else "",
             " (compiled decode steps)" if compile else "")
    return model, info


def model_info(model, preset: str | None = None, weights: str | None = None) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    info = {"name": getattr(model, "name", getattr(cfg, "name", "unknown")), "preset": preset,
            "tiny": bool(getattr(cfg, "is_tiny", False)), "sample_rate": int(getattr(model, "sample_rate", 0)),
            "weights": str(weights) if weights else None}
    if callable(getattr(model, "decoder_info", None)):
        info["decoder"] = model.decoder_info()  # kind, channels, the edit modes it can do
    return info


def _separators(model, s: "ServerSettings"):
    """The stems / stem-edit separators (m2ugen/stems.py), loaded on first use on the model's device and
    dtype."""
    from m2ugen.stems import Separators

    first = next((p for p in getattr(model, "parameters", lambda: iter(()))() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else None
    return Separators(s.stems_dir, device=getattr(model, "device", "cpu"), injected=s.separators,
                      **({"dtype": dtype} if dtype is not None else {}))


@dataclass
class ServerSettings:
    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_PORT
    data_dir: Path | None = None  # default: paths.data_dir()
    limits: Limits = field(default_factory=Limits)
    curve: bool | None = None  # None: on when binding a non-loopback address
    keys_dir: Path | None = None  # default: <config dir>/keys
    write_discovery: bool = True
    keep_days: float = 30.0  # finished jobs older than this are forgotten at start (0 = keep forever)
    adapters: list[tuple[str | None, str]] = field(default_factory=list)  # serve --adapter [NAME=]DIR (+ weights.json)
    stems_dir: str | None = None  # serve --stems-dir: Demucs weights (default: the torch hub cache)
    separators: Any = None  # {model name: separator} used as they are (tests inject exact ones)
    shared_jobs: bool = False  # every client sees every job (serve --shared-jobs); else only its own
    batching: str = "continuous"  # chat jobs: "continuous" (join the running decode) or "static" (docs/protocol.md §6)
    local_uploads: bool = True  # local clients of this user may hand file descriptors (server/localfd.py)

    def uses_curve(self) -> bool:
        """CURVE is on when asked, and always for a non-loopback bind."""
        return self.curve if self.curve is not None else not protocol.is_loopback(self.host)

    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or security.default_keys_dir()

    def check_security(self, osc_client: bool = False) -> tuple[bytes, bytes] | None:
        """The bind rule and the keys it needs, before anything starts; -> the server's CURVE key pair
        (None without CURVE). ``osc_client``: the in-process OSC bridge will connect, so the client
        key pair must be there too. Raises SecurityError with the reason."""
        keys_dir = self.resolved_keys_dir()
        security.check_bind(self.host, keys_dir, self.uses_curve())
        if not self.uses_curve():
            return None
        keys = security.load_server_keys(keys_dir)
        if osc_client:
            try:
                security.load_client_keys(keys_dir)
            except security.SecurityError as e:
                raise security.SecurityError(f"{e} (the OSC bridge needs it to reach a CURVE server)") from None
        return keys


class ServerApp:
    def __init__(self, model, info: dict[str, Any], settings: ServerSettings):
        self.settings = s = settings
        self.model_info = info
        keys_dir = s.resolved_keys_dir()
        curve_keys = s.check_security()  # raises SecurityError with the reason

        self.data_dir = Path(os.path.realpath(s.data_dir or paths.data_dir()))  # resolved once: its files are
        # then opened from here without following links
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # the server's own state: jobs, uploads, the journal
        self.blobs = BlobStore(self.data_dir / "uploads", max_blob_bytes=s.limits.max_upload_mb * 2**20,
                               max_total_bytes=s.limits.upload_store_mb * 2**20, ttl_s=s.limits.upload_ttl_h * 3600)
        self.blobs.sweep()
        self.local_uploads = LocalIntake(self.blobs) if s.local_uploads else None

        self.journal = Journal(self.data_dir / "jobs.sqlite")
        interrupted = self.journal.recover(resume_kinds=protocol.LONG_KINDS)
        if interrupted:
            log.warning("%d job(s) were interrupted by the last stop and are now failed/interrupted: %s",
                        len(interrupted), ", ".join(r["job"] for r in interrupted))
        self._clean_temp_files(interrupted)
        if s.keep_days > 0:
            self._prune(time.time() - s.keep_days * 86400)
        self.store = JobStore()
        self.queue = JobQueue(s.limits.queue_size)
        self.adapters = Adapters(model, info, self.data_dir)
        self.adapters.load_all(s.adapters)
        self.handlers = Handlers(store=self.store, queue=self.queue, journal=self.journal, blobs=self.blobs,
                                 jobs_dir=self.jobs_dir, model_info=info, limits=s.limits, adapters=self.adapters,
                                 access=owners.Access(s.shared_jobs))
        self.server_public_key = curve_keys[0].decode("ascii") if curve_keys else None
        self.transport = Transport(self.handlers, self.store, host=s.host, port=s.port,
                                   max_message_bytes=s.limits.max_message_mb * 2**20, curve_keys=curve_keys,
                                   authorized_dir=keys_dir / "authorized")
        self.endpoint = self.transport.endpoint
        self.worker = Worker(model, info, self.queue, self.store, self.journal, self.transport.emitter,
                             max_batch=s.limits.max_batch, batching=s.batching)
        self.worker.adapters = self.adapters
        self.worker.stems = _separators(model, s)
        self._requeue_resumable()
        self._transport_thread = threading.Thread(target=self.transport.run, name="m2ugen-transport", daemon=True)
        self.stopped = threading.Event()

    def _requeue_resumable(self) -> None:
        """Fine-tunes the last stop left unfinished: queued again, they continue from their saved state
        (a job whose clips are gone fails with the reason)."""
        for rec in self.journal.resumable(protocol.LONG_KINDS):
            job = Job(id=rec["job"], kind=rec["kind"], params=rec["params"], model=self.model_info,
                      created=rec["created"], inputs_info=rec.get("inputs") or {}, owner=rec.get("owner"))
            job.job_dir = self.jobs_dir / job.id
            job.output = {"want": "path"}
            clips = job.job_dir / inputs_mod.AUDIO_SET_DIR
            if not clips.is_dir():
                job.state, job.finished = "failed", time.time()
                job.error = {"code": "interrupted", "message": "the server stopped while the fine-tune ran and its "
                                                              "clips are gone; submit it again"}
                self.store.persist(job, self.journal)
                continue
            job.inputs = {"audio_set": str(clips)}
            self.queue.put(job)
            self.store.add(job)
            self.store.persist(job, self.journal)
            log.info("fine-tune job %s queued again: it continues from its saved state", job.id)

    def _clean_temp_files(self, interrupted: list[dict[str, Any]]) -> None:
        """Half-written temp files of a killed server (it writes only in its jobs dir)."""
        n = security.clean_temp_files(self.jobs_dir, recursive=True)
        if n:
            log.info("removed %d temp file(s) left by an interrupted write", n)

    def _prune(self, before: float) -> None:
        """Forget old finished jobs and delete their folders in the jobs dir."""
        ids = self.journal.prune(before)
        for job_id in ids:
            d = self.jobs_dir / job_id
            if d.parent == self.jobs_dir and d.is_dir():  # ids are server-made; never leave the jobs dir
                shutil.rmtree(d, ignore_errors=True)
        if ids:
            log.info("forgot %d finished job(s) older than %g days (--keep-days) and removed their folders",
                     len(ids), self.settings.keep_days)

    def start(self, osc: dict[str, Any] | None = None) -> str:
        """Start the transport and worker threads, then publish the discovery file (``osc``: the
        address of an OSC bridge the caller runs beside the server, for DAW devices to find)."""
        self._transport_thread.start()
        self.worker.start()
        if self.local_uploads is not None:
            self.local_uploads.start()
        if self.settings.write_discovery:
            path = discovery.write({
                "version": protocol.SERVER_VERSION, "protocol": protocol.PROTOCOL_VERSION, "endpoint": self.endpoint,
                "osc": osc, "cli": discovery.cli_path(), "python": sys.executable, "pid": os.getpid(),
                "jobs_dir": str(self.jobs_dir), "data_dir": str(self.data_dir), "started": time.time(),
                "running": True, "curve": self.server_public_key is not None,
                "server_public_key": self.server_public_key, "model": self.model_info,
            })
            log.info("discovery file: %s", path)
        log.info("m2ugen server %s listening on %s (model %s%s), jobs in %s", protocol.SERVER_VERSION,
                 self.endpoint, self.model_info["name"], ", TINY" if self.model_info["tiny"] else "", self.jobs_dir)
        if self.model_info["tiny"]:
            log.warning("serving the TINY preset: random weights, every reply says model.tiny = true")
        return self.endpoint

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.worker.stop(timeout_s)
        if self.local_uploads is not None:
            self.local_uploads.stop()
        self.transport.stop()
        self._transport_thread.join(timeout_s)
        self.journal.close()
        if self.settings.write_discovery:
            discovery.mark_stopped(os.getpid())
        log.info("server stopped")
