"""Frozen sub-models (the encoders and the music decoders) built on first use: ``LazySubmodel``.

A holder is a plain Python object (not an ``nn.Module`` child of the top-level model): nothing is
built until ``.model`` is first used. Weights come from, in order of precedence: an official
sub-state-dict handed to ``load_state_dict`` (strictly checked, kept until the build, then assigned
without a random init or a second copy), ``_path()`` (a local directory or a Hugging Face repo id
in the local cache only), or a seeded random init from the subclass's config.

Also the helpers the holders and the checkpoint loader share: resolving a pretrained directory
offline, building a model into the tensors of a state dict, and the legacy weight-norm names.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m2ugen.config import M2UGenConfig
from m2ugen.lean import default_dtype


def resolve_pretrained_dir(path_or_repo: str, what: str) -> Path:
    """A local directory, or a Hugging Face repo id resolved in the local cache only (never downloads)."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        return p
    if p.exists() or path_or_repo.startswith((".", "/", "~")) or path_or_repo.count("/") != 1:
        raise FileNotFoundError(f"{what}: {path_or_repo!r} is not a directory (and not a Hugging Face repo id)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=path_or_repo, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, HFValidationError, ...
        raise FileNotFoundError(
            f"{what}: {path_or_repo!r} is neither a local directory nor a Hugging Face repo in the local cache "
            f"({type(e).__name__}). Download it on a connected machine (`hf download {path_or_repo}`) or set the "
            "path to a local copy."
        ) from None


def load_into_empty(new_model, sd: dict[str, torch.Tensor]) -> nn.Module:
    """Build ``new_model()`` with parameters on the meta device (buffers real, e.g. MusicGen's sinusoidal
    positions), then take the tensors of ``sd`` as the parameters (``assign``): no random init, no copy."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = new_model()
    model.load_state_dict(sd, strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # e.g. T5's shared / encoder.embed_tokens
    stray = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if stray:
        raise RuntimeError(f"tensors left uninitialised after loading: {_list(stray)}")
    return model


def legacy_weight_norm_name(key: str) -> str:
    """transformers 5.x parametrized weight norm -> the legacy names of the official checkpoints."""
    return key.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v"
    )


def _list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_and_rename_state_dict(
    sd: dict[str, torch.Tensor],
    expected: dict[str, torch.Size],
    official_to_ours: dict[str, str],
    ours_to_official: dict[str, str],
    what: str,
) -> dict[str, torch.Tensor]:
    """Strict key/shape check of ``sd`` (official or our names) against our model's ``expected`` shapes.

    Returns ``sd`` renamed to our names; raises ``ValueError`` naming every missing, unexpected or
    mis-shaped key (in official naming where we know it).
    """
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    misshaped: list[str] = []
    duplicated: list[str] = []
    seen: set[str] = set()
    for key, value in sd.items():
        ours = official_to_ours.get(key, key if key in expected else None)
        if ours is None:
            unexpected.append(key)
            continue
        if ours in seen:
            duplicated.append(key)
            continue
        seen.add(ours)
        shape = tuple(getattr(value, "shape", ()))
        if shape != tuple(expected[ours]):
            misshaped.append(f"{key} (checkpoint {list(shape)}, model {list(expected[ours])})")
            continue
        out[ours] = value
    missing = [ours_to_official.get(k, k) for k in expected if k not in seen]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped key(s): {_list(misshaped, 4)}")
    if duplicated:
        problems.append(f"{len(duplicated)} key(s) given twice (old and new name): {_list(duplicated)}")
    if problems:
        raise ValueError(f"{what} state dict does not match the model: " + "; ".join(problems))
    return out


class LazySubmodel:
    """A frozen sub-model (encoder or music decoder) built on first use, with strict loading of its
    official sub-state-dict. Subclasses define the model, its config, its source and its names."""

    kind = "sub-model"
    _seed = 0

    def __init__(self, cfg: M2UGenConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        self._model: nn.Module | None = None
        self._processor: Any = None
        self._pending: dict[str, torch.Tensor] | None = None
        self._dir: Path | None = None
        self._names: tuple[dict[str, torch.Size], dict[str, str], dict[str, str]] | None = None

    # --- to implement -----------------------------------------------------------------------
    def _path(self) -> str | None:
        raise NotImplementedError

    def _hf_config(self):
        raise NotImplementedError

    def _model_class(self) -> type:
        """The transformers model class (for the default ``_new_model`` / ``_from_pretrained``)."""
        raise NotImplementedError

    def _new_model(self, config) -> nn.Module:
        return self._model_class()(config)

    def _from_pretrained(self, directory: Path, config) -> nn.Module:
        return self._model_class().from_pretrained(directory, config=config, dtype=self.dtype)

    def _build_processor(self):
        raise NotImplementedError

    def _official_name(self, key: str) -> str:
        return legacy_weight_norm_name(key)

    # --- shared -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def random_build(self):
        """Where a random sub-model is built: seeded, on ``self.device`` and in ``self.dtype`` directly
        (each parameter made once, in its final dtype: no fp32 copy to cast)."""
        with torch.random.fork_rng(devices=[]), default_dtype(self.dtype), torch.device(self.device):
            torch.manual_seed(self._seed)
            yield

    def _pretrained_dir(self) -> Path | None:
        if self._path() is None:
            return None
        if self._dir is None:
            self._dir = resolve_pretrained_dir(self._path(), f"{self.kind} weights")
        return self._dir

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def to(self, device: str | torch.device) -> "LazySubmodel":
        """Run on ``device`` from now on (moves the model if it is built)."""
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)
        return self

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            # first use may happen inside encode()'s inference_mode: build normal tensors so that a
            # later load_state_dict can still copy into them
            with torch.inference_mode(False):
                self._model = self._build()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._processor = self._build_processor()
        return self._processor

    def load(self) -> None:
        """Build now (the model and, where the sub-model has one, its processor) instead of at first use."""
        self.model  # noqa: B018 - the property builds it
        if type(self)._build_processor is not LazySubmodel._build_processor:
            self.processor  # noqa: B018

    def _build(self) -> nn.Module:
        config = self._hf_config()
        if self._pending is not None:
            model = load_into_empty(lambda: self._new_model(config), self._pending)
            self._pending = None
        elif self._pretrained_dir() is not None:
            model = self._from_pretrained(self._pretrained_dir(), config)
        else:
            with self.random_build():
                model = self._new_model(config)
        model.eval().requires_grad_(False)
        return model.to(device=self.device, dtype=self.dtype)

    def _name_maps(self) -> tuple[dict[str, torch.Size], dict[str, str], dict[str, str]]:
        """(our shapes, official->ours, ours->official), from a model built on the meta device."""
        if self._names is None:
            with torch.device("meta"):
                meta = self._new_model(self._hf_config())
            ours = {k: v.shape for k, v in meta.state_dict().items()}
            to_official = {k: self._official_name(k) for k in ours}
            self._names = (ours, {v: k for k, v in to_official.items()}, to_official)
        return self._names

    def expected_shapes(self) -> dict[str, torch.Size]:
        """Official key names (transformers-4.35, weight_g/_v) -> shapes; costs no memory (meta device)."""
        ours, _, to_official = self._name_maps()
        return {to_official[k]: s for k, s in ours.items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly check the official sub-dict (prefix stripped) and use it for the model."""
        ours, official_to_ours, to_official = self._name_maps()
        renamed = check_and_rename_state_dict(sd, ours, official_to_ours, to_official, self.kind)
        renamed = {k: (v.to(self.dtype) if v.is_floating_point() else v) for k, v in renamed.items()}
        if self._model is None:
            self._pending = renamed
        else:
            with torch.no_grad():
                self._model.load_state_dict(renamed, strict=True)
