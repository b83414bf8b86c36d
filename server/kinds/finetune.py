"""finetune: a personal LoRA adapter learnt on the server from the clips of ``inputs.audio_set``.

The clips were decoded at submit into ``<job>/audio_set/`` (captions beside them); ``m2ugen.train.
finetune`` trains the adapter, and the finished adapter is moved into the server's own
``<data dir>/adapters/<name>/`` (never a client path) and loaded, so the next request can select it.

Scheduling (docs/protocol.md §2.5): one fine-tune at a time (a second is refused ``busy`` at submit);
before it starts and between its optimizer steps it lends the model to every waiting job of another
kind (``worker.run_waiting`` inside ``finetune.paused``: nothing is written to disk for that), so it
only trains while no interactive job waits. The resumable state is saved every ``save_every`` steps
and when the server stops (``<job>/state/``); a restarted server re-queues the job (server/app.py)
and it continues from there. Cancel stops it at the next step.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from server import audio_io, outputs, protocol
from server.jobs import Job

log = logging.getLogger("m2ugen.worker")

STAGES = {"finetune": {"captioning": (0.0, 0.0), "training": (0.0, 1.0), "writing": (1.0, 1.0)}}
STATE_DIR = "state"
BUILT_DIR = "adapter"  # the adapter as trained, in the job dir, before it is installed


def training_name(job: Job) -> str:
    """The name the adapter trains under inside the model (another adapter may hold the final name)."""
    return f"training-{job.id}"


def config(job: Job):
    from m2ugen.train.finetune import FinetuneConfig

    p = job.params
    return FinetuneConfig(steps=p["steps"], batch_size=p["batch_size"], lr=p["learning_rate"], rank=p["rank"],
                          alpha=2 * p["rank"], clip_s=p["clip_s"], llm=p["train_llm"], seed=job.seed,
                          name=training_name(job))


def run(worker, job: Job) -> None:
    from m2ugen.train import finetune as ft

    p = job.params
    worker.run_waiting()  # it starts only when no interactive job waits
    worker.progress(job, "captioning", 0.0)
    worker.adapters.select(None)  # the model's own captions come from the base model

    def on_event(ev: dict) -> None:
        if ev["kind"] == "captioning":
            worker.progress(job, "captioning", ev["fraction"])
        elif ev["kind"] == "step":
            worker.progress(job, "training", ev["fraction"], step=ev["step"], steps=ev["total"],
                            loss=round(ev["loss"], 6))

    def between_steps() -> None:
        if worker.interactive_waiting():
            with ft.paused(worker.model, training_name(job)):
                worker.run_waiting()

    def between_captions() -> None:  # the model is not training yet: the waiting jobs run as they are
        if worker.interactive_waiting():
            worker.run_waiting()
            worker.adapters.select(None)

    built = job.job_dir / BUILT_DIR
    t0 = time.perf_counter()
    try:
        info = ft.finetune(worker.model, job.inputs["audio_set"], built, config(job), on_event=on_event,
                           should_stop=lambda: job.cancel_requested.is_set() or worker.stopping,
                           state_dir=job.job_dir / STATE_DIR, save_every=p["save_every"],
                           between_steps=between_steps, between_captions=between_captions)
    except Exception as e:
        log.warning("job %s: fine-tune raised %s: %s", job.id, type(e).__name__, e)
        worker.finish(job, "failed", error={"code": "job_failed", "message": f"{type(e).__name__}: {e}"})
        return
    finally:
        ft.unload_adapter(worker.model, training_name(job))
        worker.adapters.select(None)
    if info["status"] == "stopped":
        shutil.rmtree(built, ignore_errors=True)
        if worker.stopping and not job.cancelled_by_client:  # left 'running': resumed at the next start
            log.info("job %s: fine-tune parked at step %d of %d; it continues when the server starts again",
                     job.id, info["steps"], p["steps"])
            return
        shutil.rmtree(job.job_dir, ignore_errors=True)  # a cancelled fine-tune keeps nothing, not even its folder
        worker.finish(job, "cancelled")
        return
    install(worker, job, built, info, time.perf_counter() - t0)


def install(worker, job: Job, built: Path, info: dict, train_s: float) -> None:
    """The trained adapter into the data dir under its name, loaded; the sidecar; done."""
    p = job.params
    name = p["adapter_name"]
    worker.progress(job, "writing", 0.0)
    try:
        dest = worker.adapters.install(name, built, replace=p["replace"])
    except Exception as e:
        log.warning("job %s: the adapter could not be installed: %s: %s", job.id, type(e).__name__, e)
        worker.finish(job, "failed", error={"code": "job_failed", "message": f"adapter {name!r}: {e}"})
        return
    shutil.rmtree(job.job_dir / STATE_DIR, ignore_errors=True)
    text = (f"adapter {name!r} learnt from {len(info['clips'])} clip(s): {info['steps']} steps, loss "
            f"{info['first_loss']:.3f} -> {info['last_loss']:.3f}")
    sidecar = job.job_dir / "result.json"
    outputs.write_own(sidecar, audio_io.sidecar_bytes({
        "job": job.id, "kind": job.kind, "adapter": name, "adapter_dir": str(dest), "seed": job.seed,
        "model": worker.model_info, "params": p, "inputs": job.inputs_info, "text": text,
        "steps": info["steps"], "first_loss": info["first_loss"], "last_loss": info["last_loss"],
        "clips": info["clips"], "timings": {"queue_wait": (job.started or 0) - job.created, "train": train_s},
        "created": job.created, "started": job.started, "server_version": protocol.SERVER_VERSION,
    }))
    worker.update(job, text=text, sidecar_path=str(sidecar))
    log.info("job %s: adapter %r installed in %s", job.id, name, dest)
    worker.finish(job, "done")
