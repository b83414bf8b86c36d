"""The training loop of ``m2ugen train``: accelerate (one process, DDP, FSDP or DeepSpeed through
``accelerate launch``), AdamW with warmup + cosine, gradient accumulation, bad-sample policy,
resumable states, TensorBoard / JSONL logs and a progress bar.

Data order: epoch e visits ``randperm(N, seed + e)``; global micro-batch j is positions
``[j*B*W, (j+1)*B*W)`` of it (B rows per process, W processes) and process r takes rows
``[r*B, (r+1)*B)`` of that, so one process with batch B*W sees the same global batches as W
processes with batch B, and the position (epoch, j) is all a resume needs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import DistributedType

from m2ugen.train import checkpoints
from m2ugen.train.config import TrainConfig
from m2ugen.train.data import Batch, DatasetError, TrainDataset, collate, read_datasets
from m2ugen.train.stages import StageModel, caption_targets, encode_rows, lr_factor, param_groups, set_trainable

log = logging.getLogger("m2ugen.train")

EventFn = Callable[[dict[str, Any]], None]


class _Logs:
    """metrics.jsonl always; TensorBoard event files too when the tensorboard package is installed."""

    def __init__(self, out: Path, how: str, enabled: bool):
        self.jsonl = None
        self.tb = None
        if not enabled or how == "none":
            return
        self.jsonl = open(out / "metrics.jsonl", "a", encoding="utf-8")
        if how in ("auto", "tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                if how == "tensorboard":
                    raise ValueError("log_with='tensorboard' needs the tensorboard package "
                                     "(pip install 'm2ugen[train]')") from None

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        for x in (self.jsonl, self.tb):
            if x is not None:
                x.close()


def _accelerator(tcfg: TrainConfig, cpu: bool | None):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if cpu is None:
        cpu = not torch.cuda.is_available()
    # parameters unused by a batch (a bridge whose modality is absent, the projector in stage 1) are normal
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=tcfg.mixed_precision, kwargs_handlers=[ddp])


def _check_dtypes(model, tcfg: TrainConfig) -> None:
    half = any(p.dtype in (torch.float16, torch.bfloat16) for p in model.llama.parameters())
    if half and tcfg.mixed_precision == "no":
        raise ValueError("the LLaMA base is in half precision while the trained tensors are fp32: "
                         "train with mixed_precision='bf16' (or 'fp16'), or load the model in float32")


def train(
    model,
    tcfg: TrainConfig,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    base_spec: dict[str, Any] | None = None,
    resume: bool = False,
    cpu: bool | None = None,
    on_event: EventFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (an M2UGen) in place; returns a summary. See the module docstring.

    ``base_spec``: the weights-spec entries of the frozen base (llama_dir, tokenizer_path, sub-model
    paths) for ``weights.json``. ``should_stop``: polled after every optimizer step; when it returns
    True the state is saved and the run returns with ``status='stopped'`` (resume continues it).
    """
    tcfg = tcfg.check()
    # absolute: the weights.json written here names paths inside it (the base LLaMA) that must still
    # resolve when the spec is read from another working directory (read_spec: relative to the file)
    out = Path(out_dir).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(tcfg, cpu)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    emit = on_event or (lambda e: None)
    _check_dtypes(model, tcfg)
    model.to(acc.device)  # before the feature pass: the frozen encoders run where the model is

    # 1. data: every problem listed before step 1
    t0 = time.perf_counter()
    emit({"kind": "validating", "fraction": 0.0})
    entries = read_datasets(tcfg.datasets, data_root, tokenizer=model.tokenizer, max_words=tcfg.max_words,
                            validate=tcfg.validate,
                            on_progress=lambda f: emit({"kind": "validating", "fraction": f}))
    log.info("%d training entries from %s (validated in %.1f s)", len(entries), ", ".join(tcfg.datasets),
             time.perf_counter() - t0)
    cache = None
    if tcfg.feature_cache:
        from m2ugen.train.features import FeatureCache, precompute

        cache = FeatureCache(tcfg.feature_cache, model.cfg)
        if main:
            n = precompute(model, entries, cache, num_workers=tcfg.num_workers,
                           on_progress=lambda f: emit({"kind": "caching", "fraction": f}))
            log.info("feature cache %s: %d new", tcfg.feature_cache, n)
        acc.wait_for_everyone()
        cache = FeatureCache(tcfg.feature_cache, model.cfg)  # re-read the hashes the main process wrote
    dataset = TrainDataset(entries, model.tokenizer, model.cfg, tcfg.max_words, cache, tcfg.seed)

    # 2. model, optimizer, schedule
    trained = set_trainable(model, tcfg)
    groups = param_groups(model, trained, tcfg)
    optimizer = torch.optim.AdamW(groups, lr=tcfg.lr, betas=tuple(tcfg.betas), eps=tcfg.eps)
    global_batch = tcfg.batch_size * world
    micro_per_epoch = len(entries) // global_batch
    if micro_per_epoch < 1:
        raise DatasetError([f"{len(entries)} entries are fewer than one global batch "
                            f"({tcfg.batch_size} per process x {world} processes)"])
    total = tcfg.max_steps or max(1, int(tcfg.epochs * micro_per_epoch) // tcfg.accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, tcfg))
    stage_model = StageModel(model, tcfg)
    stage_model, optimizer = acc.prepare(stage_model, optimizer)
    sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if acc.distributed_type == DistributedType.DEEPSPEED and tcfg.accum_steps > 1:
        raise ValueError("under DeepSpeed set gradient_accumulation_steps in its config and leave --accum at 1 "
                         "(the engine accumulates and steps itself)")

    step, micro = 0, 0
    if resume:
        st = checkpoints.latest_state(out)
        if st is None:
            raise ValueError(f"--resume: no saved state under {out / checkpoints.STATE_DIR}")
        if sharded:
            acc.load_state(str(st))
            prog = json.loads((st / "progress.json").read_text())
        else:
            prog = checkpoints.load_state(st, trained, optimizer, rank)
        if prog.get("world") not in (None, world) or prog.get("global_batch") not in (None, global_batch):
            log.warning("resuming with %d processes x batch %d; the state was saved with %s x %s: the data "
                        "order from here differs", world, tcfg.batch_size, prog.get("world"), prog.get("batch_size"))
        step, micro = prog["step"], prog["micro"]
        scheduler.last_epoch = step
        for g, f in zip(optimizer.param_groups, [lr_factor(step, total, tcfg)] * len(optimizer.param_groups)):
            g["lr"] = tcfg.lr * f
        log.info("resumed from %s (step %d of %d)", st, step, total)

    logs = _Logs(out, tcfg.log_with, main)
    bar = None
    if tcfg.progress_bar and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc=f"stage {tcfg.stage}", unit="step")
    counts = {"skipped_bad": 0, "skipped_silently": 0, "tokens": 0}
    status = "finished"

    def progress() -> dict[str, Any]:
        return {"step": step, "micro": micro, "total": total, "seed": tcfg.seed, "world": world,
                "batch_size": tcfg.batch_size, "global_batch": global_batch, "stage": tcfg.stage,
                "config": asdict(tcfg)}

    def save_state() -> None:
        acc.wait_for_everyone()
        if sharded:  # FSDP / ZeRO-3: the engine writes its own shards (untested on this CPU-only machine)
            d = Path(out) / checkpoints.STATE_DIR / f"step-{step:08d}"
            acc.save_state(str(d))
            if main:
                (d / "progress.json").write_text(json.dumps(progress(), indent=1))
            acc.wait_for_everyone()
            return
        d = checkpoints.save_state(out, trained, optimizer, progress(), rank, tcfg.keep_states)
        acc.wait_for_everyone()
        checkpoints.save_rank_rng(d, rank)
        acc.wait_for_everyone()

    def export() -> None:
        full = acc.get_state_dict(stage_model) if sharded else None  # gathered on the main process
        if full is not None:
            full = {k.removeprefix("m2ugen."): v for k, v in full.items()}
        if main:
            checkpoints.save_weights(model, out, base_spec or {}, {"train_stage": str(tcfg.stage),
                                                                   "train_step": str(step),
                                                                   "train_config": tcfg.name}, full)
        acc.wait_for_everyone()

    stage_model.train()
    optimizer.zero_grad(set_to_none=True)
    acc_loss = {"loss": 0.0, "ce": 0.0, "mse": 0.0}
    t_start = time.perf_counter()
    try:
        while step < total:
            epoch, j0 = divmod(micro, micro_per_epoch)
            loader = _epoch_loader(dataset, tcfg, epoch, j0, micro_per_epoch, rank, world)
            for batch in loader:
                boundary = (micro + 1) % tcfg.accum_steps == 0
                sync = contextlib.nullcontext() if boundary or world == 1 else acc.no_sync(stage_model)
                with sync:
                    losses = _micro_step(acc, model, stage_model, batch, tcfg, world, counts)
                micro += 1
                if losses is not None:
                    for k in acc_loss:
                        acc_loss[k] += float(losses[k].detach()) / tcfg.accum_steps
                if not boundary:
                    continue
                if tcfg.max_grad_norm:
                    acc.clip_grad_norm_(list(trained.values()), tcfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if world > 1:  # log the loss of the global batch (the mean of the processes' losses)
                    mean = acc.reduce(torch.tensor(list(acc_loss.values()), device=acc.device), reduction="mean")
                    acc_loss = dict(zip(acc_loss, (float(x) for x in mean)))
                values = {**acc_loss, "lr": scheduler.get_last_lr()[0]}
                acc_loss = {k: 0.0 for k in acc_loss}
                if step % tcfg.log_every == 0:
                    logs.write(step, values)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4f}")
                emit({"kind": "step", "step": step, "total": total, "fraction": step / total, **values})
                last = step >= total
                if step % tcfg.save_every == 0 and not (last and tcfg.save_at_end):
                    save_state()
                    export()
                if last:
                    break
                if should_stop is not None and should_stop():
                    status = "stopped"
                    break
            else:
                if tcfg.save_at_end is False and (epoch + 1) % 5 == 0:  # official epoch-end save
                    save_state()
            if status == "stopped":
                break
        if tcfg.save_at_end or status == "stopped":
            save_state()
            export()
    finally:
        if bar is not None:
            bar.close()
        logs.close()
    seconds = time.perf_counter() - t_start
    summary = {"status": status, "step": step, "total": total, "micro": micro, "entries": len(entries),
               "seconds": round(seconds, 3), "tokens": counts["tokens"], "skipped_bad": counts["skipped_bad"],
               "skipped_silently": counts["skipped_silently"], "out": str(out)}
    emit({"kind": "done", **summary})
    return summary


def _epoch_loader(dataset: TrainDataset, tcfg: TrainConfig, epoch: int, j0: int, micro_per_epoch: int,
                  rank: int, world: int):
    g = torch.Generator().manual_seed(tcfg.seed + epoch)
    perm = torch.randperm(len(dataset), generator=g).tolist()
    B = tcfg.batch_size
    idx = []
    for j in range(j0, micro_per_epoch):
        start = j * B * world + rank * B
        idx += perm[start:start + B]
    sub = torch.utils.data.Subset(dataset, idx)
    return torch.utils.data.DataLoader(sub, batch_size=B, shuffle=False, num_workers=tcfg.num_workers,
                                       collate_fn=collate, persistent_workers=False)


def _micro_step(acc, model, stage_model, batch: Batch, tcfg: TrainConfig, world: int,
                counts: dict[str, int]) -> dict[str, torch.Tensor] | None:
    """Forward + backward of one micro-batch, with the bad-sample policy."""
    if tcfg.bad_samples == "reference":
        try:
            if batch.bad:
                return None  # the official bare ``except: continue``
            return _forward_backward(acc, model, stage_model, batch, tcfg, world, counts)
        except Exception:  # noqa: BLE001 - reproducing the official trainer on purpose
            counts["skipped_silently"] += 1
            return None
    if batch.bad:
        lines = [f"{b.file} ({b.where}): {b.error}" for b in batch.bad]
        if tcfg.bad_samples == "fatal":
            raise DatasetError(lines)
        for line in lines:
            log.warning("skipping bad sample %s", line)
        counts["skipped_bad"] += len(batch.bad)
    return _forward_backward(acc, model, stage_model, batch, tcfg, world, counts)


def _forward_backward(acc, model, stage_model, batch: Batch, tcfg: TrainConfig, world: int,
                      counts: dict[str, int]) -> dict[str, torch.Tensor]:
    device = acc.device
    if len(batch) == 0:
        # every row of this process was skipped: still take part in the gradient all-reduce
        zero = sum(p.sum() * 0.0 for p in stage_model.parameters() if p.requires_grad)
        acc.backward(zero)
        return {"loss": zero.detach(), "ce": zero.detach(), "mse": zero.detach()}
    ids, labels = batch.input_ids.to(device), batch.labels.to(device)
    feats = encode_rows(model, batch, device)
    gen_rows = [r for r, c in enumerate(batch.music_caption) if c]
    targets = caption_targets(model, [batch.music_caption[r] for r in gen_rows], tcfg.target_scale) if gen_rows else None
    n_tok = torch.tensor([float((labels[:, 1:] != 0).sum()), float(len(gen_rows))], device=device)
    counts["tokens"] += int(n_tok[0])
    if tcfg.loss_norm == "global" and world > 1:
        n_tok = acc.reduce(n_tok, reduction="sum")
    with acc.autocast():
        losses = stage_model(ids, labels, feats, gen_rows, targets, batch.files, float(n_tok[0]), float(n_tok[1]),
                             world if tcfg.loss_norm == "global" else 1)
    value = float(losses["loss"].detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value} on {', '.join(batch.files)}")
    acc.backward(losses["loss"] / tcfg.accum_steps)
    return losses
