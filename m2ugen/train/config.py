"""``TrainConfig``: the one configuration dataclass of ``m2ugen train``, and its named presets.

Stages, datasets, trainable tensors, losses and hyper-parameters follow the official trainer
(``M2UGen/main_train.py``, ``engine_train.py``, ``train_musicgen.sh``; reference doc §5). Every
defect of the official trainer that we fix is one field whose ``reference`` value reproduces it;
``TrainConfig.reference()`` sets them all (see docs/training.md for the list and why):

==================  ===============================  =========================================
field               fixed (default)                  reference
==================  ===============================  =========================================
train_gates         True: attention gates trained    False: gates never in the trainable set
aud_search          "per_row"                        "reference": enumeration index as batch row
bad_samples         "fatal" (or "skip", reported)    "reference": bare try/except around a step
weight_decay_on     "matrices": trained 2-D weights  "reference": every >= 2-D tensor (embeddings)
                    of linear layers only
penalty_100         False                            True: +100 constants in the logged CE
save_at_end         True                             False: only every 5,000 steps / 5 epochs
loss_norm           "global": CE over the tokens of  "reference": per-process batch mean
                    the whole (multi-process) batch
==================  ===============================  =========================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STAGES = (1, 2, 3)

# datasets of each stage (official FinetuneDataset / ConcatDataset), by reader name (m2ugen.train.data)
STAGE_DATASETS: dict[int, tuple[str, ...]] = {
    1: ("mucaps", "coco", "muvideo-captions"),
    2: ("mucaps-decoder",),
    3: ("musicqa", "alpaca", "muimage", "muvideo", "muedit"),
}

# official get_trainable_params: besides llama norm/bias/lora and tok_embeddings (all stages)
STAGE_MODULES: dict[int, tuple[str, ...]] = {
    1: ("mu_mert", "iu_vit", "iu_vivit", "prefix_query", "output_projector"),
    2: ("output_projector", "prefix_query"),
    3: ("prefix_query",),
}


@dataclass
class TrainConfig:
    name: str = "stage3"
    stage: int = 3
    datasets: tuple[str, ...] = STAGE_DATASETS[3]

    # --- optimisation (train_musicgen.sh: lr 1e-4 -> 1e-6, wd 0.05, warmup 0, batch 1, accum 1) ---
    epochs: float = 2.0
    max_steps: int | None = None  # optimizer steps; None: epochs * steps per epoch
    batch_size: int = 1  # per process
    accum_steps: int = 1
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    max_grad_norm: float | None = None  # official: no clipping
    max_words: int = 1024
    mse_weight: float = 1.0  # total = CE + mse_weight * MSE (official 1:1)
    target_scale: float = 10.0  # MSE target = 10 x the decoder's text embedding of the caption
    seed: int = 420

    # --- fixes, each with its reference setting (module docstring) ---
    train_gates: bool = True
    aud_search: str = "per_row"  # "per_row" | "reference"
    bad_samples: str = "fatal"  # "fatal" | "skip" | "reference"
    weight_decay_on: str = "matrices"  # "matrices" | "reference"
    penalty_100: bool = False
    save_at_end: bool = True
    loss_norm: str = "global"  # "global" | "reference"

    # --- data ---
    num_workers: int = 0
    # "header": open every media file's header up front (audio: its length too); "decode": also decode
    # every audio file (its decoded length must agree with the header); "exists": existence only
    validate: str = "header"
    feature_cache: str | None = None  # directory for precomputed MERT/ViT/ViViT features (None: off)

    # --- scale ---
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate)
    grad_checkpointing: bool = False

    # --- checkpoints and logs ---
    save_every: int = 5000  # optimizer steps between resumable states (official: 5,000 iterations)
    keep_states: int = 2  # resumable states kept on disk (older ones deleted)
    log_every: int = 1
    log_with: str = "auto"  # "auto" (tensorboard if installed, else jsonl) | "tensorboard" | "jsonl" | "none"
    progress_bar: bool = True

    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def reference(self) -> "TrainConfig":
        """The official trainer's behaviour: every fix switched off."""
        return self.replace(train_gates=False, aud_search="reference", bad_samples="reference",
                            weight_decay_on="reference", penalty_100=True, save_at_end=False,
                            loss_norm="reference")

    def check(self) -> "TrainConfig":
        """ValueError naming every bad field."""
        errors = []
        if self.stage not in STAGES:
            errors.append(f"stage must be 1, 2 or 3, got {self.stage!r}")
        choices = dict(aud_search=("per_row", "reference"), bad_samples=("fatal", "skip", "reference"),
                       weight_decay_on=("matrices", "reference"), loss_norm=("global", "reference"),
                       mixed_precision=("no", "bf16", "fp16"), validate=("header", "decode", "exists"),
                       log_with=("auto", "tensorboard", "jsonl", "none"))
        for k, allowed in choices.items():
            if getattr(self, k) not in allowed:
                errors.append(f"{k} must be one of {', '.join(allowed)}, got {getattr(self, k)!r}")
        for k in ("batch_size", "accum_steps", "max_words", "save_every", "log_every", "keep_states"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errors.append(f"{k} must be a positive integer, got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            errors.append(f"max_steps must be a positive integer or None, got {self.max_steps!r}")
        if not self.epochs > 0:
            errors.append(f"epochs must be positive, got {self.epochs!r}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            errors.append(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr} min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.num_workers < 0:
            errors.append("warmup_steps, weight_decay and num_workers must be >= 0")
        unknown = [d for d in self.datasets if d not in _ALL_DATASETS]
        if unknown:
            errors.append(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(_ALL_DATASETS))}")
        if errors:
            raise ValueError("bad training config " + repr(self.name) + ":\n  " + "\n  ".join(errors))
        return self

    @classmethod
    def preset(cls, name: str) -> "TrainConfig":
        """``stage1``/``stage2``/``stage3`` (paper scripts), ``tiny-stage{1,2,3}`` (tests); a
        ``-reference`` suffix gives the same preset with the official trainer's behaviour."""
        base, ref = (name[: -len("-reference")], True) if name.endswith("-reference") else (name, False)
        if base not in _PRESETS:
            names = ", ".join(sorted(_PRESETS) + [f"{n}-reference" for n in sorted(_PRESETS)])
            raise ValueError(f"unknown training preset {name!r}; choose one of {names}")
        cfg = _PRESETS[base]()
        return (cfg.reference() if ref else cfg).replace(name=name)

    @classmethod
    def for_stage(cls, stage: int, tiny: bool = False) -> "TrainConfig":
        return cls.preset(f"{'tiny-' if tiny else ''}stage{stage}")


_ALL_DATASETS = {d for ds in STAGE_DATASETS.values() for d in ds}


def _paper(stage: int) -> TrainConfig:
    # train_musicgen.sh: 5 / 5 / 2 epochs, lr 1e-4 -> 1e-6, no warmup, wd 0.05, batch 1, accum 1
    return TrainConfig(name=f"stage{stage}", stage=stage, datasets=STAGE_DATASETS[stage],
                       epochs={1: 5.0, 2: 5.0, 3: 2.0}[stage])


def _tiny(stage: int) -> TrainConfig:
    """For the tiny model: a few fast steps, a high learning rate, frequent saves, no progress bar."""
    return _paper(stage).replace(name=f"tiny-stage{stage}", epochs=1.0, batch_size=2, lr=3e-3, min_lr=3e-4,
                                 max_words=256, save_every=2, progress_bar=False, log_with="jsonl")


_PRESETS = {
    **{f"stage{s}": (lambda s=s: _paper(s)) for s in STAGES},
    **{f"tiny-stage{s}": (lambda s=s: _tiny(s)) for s in STAGES},
}
