"""CLI: ``m2ugen train`` (the paper's three stages) and ``m2ugen finetune`` (a personal LoRA).

``register(subparsers)`` adds both commands to the main parser; the work is in ``m2ugen.train``.
Multi-process / multi-GPU: ``accelerate launch -m server.cli train ...`` (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from server.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

_TRAIN_EPILOG = """\
Datasets are read from DATA_ROOT in their published layouts (DATA_ROOT/MUCaps/MUCapsCaptions.json +
audios/, COCO/, MUVideo/, MusicQA/, Alpaca/, MUImage/, MUEdit/; docs/training.md) and validated before
step 1: every missing or unreadable file is listed. Output: OUT/m2ugen.safetensors + OUT/weights.json
(serve it with `m2ugen serve --weights OUT`; the next stage trains from it with --weights OUT), the
resumable state under OUT/state/, metrics.jsonl and TensorBoard logs. Several processes / GPUs:
`accelerate launch [--config_file ddp.yaml] -m server.cli train ...`.
"""


def _model_args(p: argparse.ArgumentParser) -> None:
    m = p.add_mutually_exclusive_group(required=True)
    m.add_argument("--weights", metavar="PATH", help="the model to start from: weights.json, a directory (e.g. the "
                                                     "previous stage's OUT) or a checkpoint, as for serve")
    m.add_argument("--preset", help="a random model of this preset (tiny presets only: tiny, tiny-audioldm2)")
    p.add_argument("--dtype", help="LLaMA dtype (float32, bfloat16, float16; default: the weights')")
    p.add_argument("--seed", type=int, default=None, help="random seed (model init for --preset, data order)")
    p.add_argument("--zero-gates", action="store_true",
                   help="set every attention gate to 0 after loading (the official initialisation)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train stage 1, 2 or 3 of M2UGen (gates trained; --reference for the official trainer)",
        description="Train one M2UGen stage: 1 encoder alignment (MUCaps, COCO, MUVideo captions; CE), "
                    "2 decoder alignment (MUCaps; CE + MSE to 10x the decoder's caption embedding), 3 instruction "
                    "tuning (MusicQA, Alpaca, MUImage, MUVideo, MUEdit; CE + MSE).",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2, 3), required=True)
    p.add_argument("--data", required=True, metavar="DATA_ROOT", help="folder holding the dataset folders")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (weights, states, logs)")
    _model_args(p)
    p.add_argument("--config", metavar="NAME", help="training preset (default stageN; tiny-stageN for tests; "
                                                    "a -reference suffix gives the official behaviour)")
    p.add_argument("--reference", action="store_true",
                   help="reproduce the official trainer: gates frozen, [AUD0] search by enumeration, bare "
                        "try/except around steps, decay on every matrix, +100 constants, no end-of-run save")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state (exactly where it stopped)")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--datasets", help="comma-separated dataset names (default: the stage's)")
    g.add_argument("--epochs", type=float)
    g.add_argument("--max-steps", type=int, help="optimizer steps (default: epochs x steps per epoch)")
    g.add_argument("--batch-size", type=int, help="rows per process")
    g.add_argument("--accum", type=int, dest="accum_steps", help="gradient accumulation steps")
    g.add_argument("--lr", type=float)
    g.add_argument("--min-lr", type=float)
    g.add_argument("--warmup", type=int, dest="warmup_steps", help="warmup steps")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--max-words", type=int, help="token limit per sample (default 1024)")
    g.add_argument("--save-every", type=int, help="optimizer steps between resumable states")
    g.add_argument("--num-workers", type=int, help="DataLoader workers decoding media")
    g.add_argument("--bad-samples", choices=("fatal", "skip"), help="a sample that fails to load: stop (default) "
                                                                    "or report it and skip it")
    g.add_argument("--no-train-gates", action="store_true", help="keep the attention gates frozen")
    g.add_argument("--cache-features", metavar="DIR", dest="feature_cache",
                   help="precompute MERT/ViT/ViViT features once into DIR (keyed by file hash + encoder)")
    g.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"))
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute LLaMA activations in backward")
    g.add_argument("--validate", choices=("header", "decode", "exists"),
                   help="media check before step 1: header (default; audio length from the header), decode "
                        "(also decode every audio file), exists")
    g.add_argument("--log-with", choices=("auto", "tensorboard", "jsonl", "none"))
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "finetune", help="learn a personal LoRA for the music decoder from a folder of audio",
        description="Teacher-force MusicGen on the EnCodec codes of your clips with their captions (sidecar "
                    "<clip>.txt, else the model's own description) and save a PEFT LoRA adapter directory.")
    p.add_argument("--audio-dir", required=True, metavar="DIR", help="folder of audio files (+ optional .txt captions)")
    p.add_argument("--out", required=True, metavar="DIR", help="adapter directory to write")
    _model_args(p)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--clip-s", type=float, default=10.0, help="seconds cropped from each clip per step")
    p.add_argument("--name", default="personal", help="adapter name (for per-request selection)")
    p.add_argument("--llm", action="store_true", help="also train a LoRA on the LLM (to describe the clips)")
    p.set_defaults(func=cmd_finetune)


def _setup_logging(args) -> None:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _fail(message: str) -> int:
    print(f"m2ugen: {message}", file=sys.stderr)
    return EXIT_FAILED


def train_config_from_args(args):
    from m2ugen.train.config import TrainConfig

    tiny = args.weights is None and (args.preset or "").startswith("tiny")
    name = args.config or f"{'tiny-' if tiny else ''}stage{args.stage}"
    tcfg = TrainConfig.preset(name)
    if tcfg.stage != args.stage:
        tcfg = tcfg.replace(stage=args.stage, datasets=TrainConfig.for_stage(args.stage).datasets)
    if args.reference:
        tcfg = tcfg.reference()
    changes = {k: getattr(args, k) for k in ("epochs", "max_steps", "batch_size", "accum_steps", "lr", "min_lr",
                                            "warmup_steps", "weight_decay", "max_words", "save_every", "num_workers",
                                            "bad_samples", "feature_cache", "mixed_precision", "validate", "log_with",
                                            "seed") if getattr(args, k, None) is not None}
    if args.datasets:
        changes["datasets"] = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    if args.no_train_gates:
        changes["train_gates"] = False
    if args.grad_checkpointing:
        changes["grad_checkpointing"] = True
    if args.no_progress:
        changes["progress_bar"] = False
    return tcfg.replace(**changes).check()


def cmd_train(args) -> int:
    _setup_logging(args)
    try:
        from m2ugen.train.data import DatasetError
        from m2ugen.train.run import load_model
        from m2ugen.train.trainer import train

        tcfg = train_config_from_args(args)
        model, base = load_model(args.weights, preset=args.preset, seed=tcfg.seed, dtype=args.dtype,
                                 zero_gates=args.zero_gates)
        with StopOnInterrupt() as stop:
            summary = train(model, tcfg, args.data, args.out, base_spec=base, resume=args.resume,
                            should_stop=stop.requested)
    except DatasetError as e:
        return _fail(f"train: {e}")
    except (ValueError, OSError, ImportError, FloatingPointError) as e:
        return _fail(f"train failed: {type(e).__name__}: {e}")
    print(json.dumps(summary))
    if stop.requested():
        print(f"m2ugen: train interrupted at step {summary.get('step')}; the state is saved in "
              f"{summary.get('out')}/state: continue with the same command and --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


class StopOnInterrupt:
    """Ctrl-C (SIGINT) or SIGTERM during training asks the trainer to stop after the current step, save
    its state and weights, and return (``should_stop``); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.flag = threading.Event()
        self.previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return self.flag.is_set()

    def _handle(self, signum, frame) -> None:
        if self.flag.is_set():
            raise KeyboardInterrupt
        self.flag.set()
        print("\nm2ugen: stopping after this step and saving the state (Ctrl-C again to quit without saving)",
              file=sys.stderr)

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def cmd_finetune(args) -> int:
    _setup_logging(args)
    try:
        from m2ugen.train.data import DatasetError
        from m2ugen.train.finetune import FinetuneConfig, finetune
        from m2ugen.train.run import load_model

        seed = 0 if args.seed is None else args.seed
        model, _ = load_model(args.weights, preset=args.preset, seed=seed, dtype=args.dtype, zero_gates=args.zero_gates)
        fcfg = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, rank=args.rank,
                              alpha=2 * args.rank, clip_s=args.clip_s, name=args.name, llm=args.llm, seed=seed)
        info = finetune(model, args.audio_dir, args.out, fcfg)
    except DatasetError as e:
        return _fail(f"finetune: {e}")
    except (ValueError, OSError, ImportError) as e:
        return _fail(f"finetune failed: {type(e).__name__}: {e}")
    print(json.dumps({k: info[k] for k in ("status", "steps", "first_loss", "last_loss", "seconds")}
                     | {"out": args.out, "clips": len(info["clips"])}))
    return EXIT_OK
