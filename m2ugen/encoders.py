"""Frozen input encoders: MERT (music), ViT (image) and ViViT (video), built lazily.

Each holder is a ``LazySubmodel`` (``m2ugen.submodel``): a plain Python object, not an ``nn.Module``
child of the top-level model; nothing is built until ``.model`` is first used, so a request without
video never builds ViViT.

Weights come from, in order of precedence:
1. ``load_state_dict(sd)`` with the official M2UGen sub-dict (``mert_model.*`` etc. with the prefix
   stripped, transformers-4.35 names): kept until the model is built, then loaded with ``assign``
   so the checkpoint's tensors are used without a random init or a second copy;
2. ``cfg.*_path``: a local directory, or a Hugging Face repo id found in the local cache only;
3. ``cfg.*_config``: a tiny random model (seeded, so it does not depend on build order).

Official names differ from transformers 5.23 in two ways:
- weight norm: legacy ``.weight_g`` / ``.weight_v`` <-> ``.parametrizations.weight.original0/1``
  (mapped in ``m2ugen.submodel``);
- ViT / ViViT layers (mapped here): ``encoder.layer.N.attention.attention.query`` <-> ``layers.N.attention.q_proj``
  etc. (transformers v5 renamed them and converts old checkpoints in ``from_pretrained``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import torch

from m2ugen import media
from m2ugen.submodel import LazySubmodel

# ----------------------------------------------------------------------------------------------
# MERT as a plain HubertModel

# MERT config.json fields that HubertConfig does not know (or that only matter for MERT variants
# we refuse: CQT front-end, deepnorm post-LN encoder).
_MERT_ONLY_KEYS = {
    "attention_relax", "deepnorm", "feature_extractor_cqt", "feature_extractor_cqt_bins", "sample_rate",
    "auto_map", "architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
}


def hubert_config_from_mert(mert: dict[str, Any]):
    """MERT-v1 config.json -> an equivalent ``HubertConfig`` (no remote code needed)."""
    from transformers import HubertConfig

    if mert.get("feature_extractor_cqt"):
        raise ValueError("MERT config uses the CQT front-end (feature_extractor_cqt); only plain MERT-v1 is supported")
    if mert.get("deepnorm"):
        raise ValueError("MERT config uses deepnorm; only the stable-layer-norm MERT-v1 encoder is supported")
    if not mert.get("do_stable_layer_norm", False):
        raise ValueError("MERT config has do_stable_layer_norm=False (MERT's own post-LN encoder); not supported")
    kwargs = {k: v for k, v in mert.items() if k not in _MERT_ONLY_KEYS}
    kwargs["conv_pos_batch_norm"] = False
    return HubertConfig(**kwargs)


class MusicEncoder(LazySubmodel):
    """MERT-v1: mono audio at ``cfg.audio_sample_rate`` -> per-layer time means [cfg.mert_layers, cfg.mert_dim]."""

    kind = "MERT"
    _seed = 1

    def _path(self) -> str | None:
        return self.cfg.mert_path

    def _hf_config(self):
        from transformers import HubertConfig

        d = self._pretrained_dir()
        if d is None:
            if self.cfg.mert_config is None:
                raise ValueError("MERT: set cfg.mert_path (weights) or cfg.mert_config (random tiny model)")
            return HubertConfig(**self.cfg.mert_config, conv_pos_batch_norm=False)
        return hubert_config_from_mert(json.loads((d / "config.json").read_text()))

    def _model_class(self) -> type:
        from transformers import HubertModel

        return HubertModel

    def _build_processor(self):
        from transformers import Wav2Vec2FeatureExtractor

        d = self._pretrained_dir()
        if d is not None and (d / "preprocessor_config.json").exists():
            return Wav2Vec2FeatureExtractor.from_pretrained(d)
        return Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=self.cfg.audio_sample_rate, padding_value=0.0,
            do_normalize=True, return_attention_mask=True,
        )

    def receptive_field(self) -> int:
        """Samples the conv front-end needs for one output frame (400 for MERT / HuBERT)."""
        cfg = self.model.config
        field, hop = 1, 1
        for kernel, stride in zip(cfg.conv_kernel, cfg.conv_stride):
            field += (kernel - 1) * hop
            hop *= stride
        return field

    def windows(self, wave: np.ndarray) -> list[np.ndarray]:
        """Split a clip into the windows MERT encodes (see ``encode``)."""
        sr = self.cfg.audio_sample_rate
        size = int(round(self.cfg.mert_window_s * sr))
        if size < 1:
            raise ValueError(f"mert_window_s must be positive, got {self.cfg.mert_window_s}")
        if self.cfg.mert_windows == "reference":
            return [wave[:size]]
        if self.cfg.mert_windows != "all":
            raise ValueError(f"mert_windows must be 'all' or 'reference', got {self.cfg.mert_windows!r}")
        chunks = [wave[i:i + size] for i in range(0, len(wave), size)]
        if len(chunks) > 1 and len(chunks[-1]) < sr:  # a tail shorter than 1 s is dropped
            chunks.pop()
        return chunks

    @torch.inference_mode()
    def _encode_window(self, x: np.ndarray) -> torch.Tensor:
        need = self.receptive_field()
        if len(x) < need:  # very short clip: zero-pad to one output frame instead of failing in the conv
            x = np.pad(x, (0, need - len(x)))
        inputs = self.processor(x, sampling_rate=self.cfg.audio_sample_rate, return_tensors="pt")
        kwargs = {"input_values": inputs["input_values"].to(self.device, self.dtype)}
        if "attention_mask" in inputs:
            kwargs["attention_mask"] = inputs["attention_mask"].to(self.device)
        out = self.model(**kwargs, output_hidden_states=True)
        hidden = torch.stack(out.hidden_states)[:, 0]  # [L+1, T, H]
        return hidden.float().mean(dim=1)  # [L+1, H]

    def encode(self, wave: np.ndarray) -> torch.Tensor:
        """Mono float32 [samples] at ``cfg.audio_sample_rate`` -> [cfg.mert_layers, cfg.mert_dim] (float32).

        ``cfg.mert_windows``: ``"all"`` encodes consecutive ``cfg.mert_window_s`` windows of the whole clip
        (a last partial window counts when it is at least 1 s long) and takes the plain mean of the
        per-window results, each window weighing the same (the official formula, sum / count);
        ``"reference"`` encodes only the first window (what the official code does, §1.2).
        """
        w = np.asarray(wave)
        if w.ndim != 1:
            raise ValueError(f"MERT input must be mono [samples], got shape {list(w.shape)}")
        if w.size == 0:
            raise ValueError("MERT input audio is empty")
        if not np.isfinite(w).all():
            raise ValueError("MERT input audio contains NaN or inf")
        w = w.astype(np.float32, copy=False)
        feats = torch.stack([self._encode_window(x) for x in self.windows(w)]).mean(dim=0)
        expected = (self.cfg.mert_layers, self.cfg.mert_dim)
        if tuple(feats.shape) != expected:
            raise RuntimeError(f"MERT produced {list(feats.shape)}, config expects {list(expected)}")
        return feats


# ----------------------------------------------------------------------------------------------
# ViT / ViViT (same layer layout)

# transformers 5.23 name -> transformers 4.35 name, inside one ViT/ViViT layer
_VIT_LAYER_RENAMES = [
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
]


def vit_official_name(key: str) -> str:
    """``layers.3.attention.q_proj.weight`` -> ``encoder.layer.3.attention.attention.query.weight``."""
    m = re.match(r"layers\.(\d+)(\..*)$", key)
    if m is None:
        return key
    rest = m.group(2)
    for new, old in _VIT_LAYER_RENAMES:
        if rest.startswith(new):
            rest = old + rest[len(new):]
            break
    return f"encoder.layer.{m.group(1)}{rest}"


class _VisionEncoder(LazySubmodel):
    """ViT and ViViT: the same layer layout and official names, a config from the weights directory or
    from ``cfg.<prefix>_config``, and ``last_hidden_state[0]`` of the pixels as the features."""

    prefix = ""  # the config fields: cfg.<prefix>_path / _config / _tokens / _dim

    def _path(self) -> str | None:
        return getattr(self.cfg, f"{self.prefix}_path")

    def _config_class(self) -> type:
        raise NotImplementedError

    def _check_config(self, config) -> None:
        raise NotImplementedError

    def _hf_config(self):
        d = self._pretrained_dir()
        if d is not None:
            config = self._config_class().from_pretrained(d)
        else:
            kwargs = getattr(self.cfg, f"{self.prefix}_config")
            if kwargs is None:
                raise ValueError(f"{self.kind}: set cfg.{self.prefix}_path (weights) or cfg.{self.prefix}_config "
                                 "(random tiny model)")
            config = self._config_class()(**kwargs)
        self._check_config(config)
        return config

    def _official_name(self, key: str) -> str:
        return vit_official_name(key)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """-> float32 [cfg.<prefix>_tokens, cfg.<prefix>_dim], checked."""
        out = self.model(pixel_values=pixels.to(self.device, self.dtype)).last_hidden_state[0].float()
        expected = (getattr(self.cfg, f"{self.prefix}_tokens"), getattr(self.cfg, f"{self.prefix}_dim"))
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{self.kind} produced {list(out.shape)}, config expects {list(expected)}")
        return out


class ImageEncoder(_VisionEncoder):
    """ViT: an image (path, PIL, array) -> last_hidden_state[0] [cfg.vit_tokens, cfg.vit_dim]."""

    kind = "ViT"
    prefix = "vit"
    _seed = 2

    def _config_class(self) -> type:
        from transformers import ViTConfig

        return ViTConfig

    def _check_config(self, config) -> None:
        if config.image_size != self.cfg.image_size:
            raise ValueError(f"ViT image_size {config.image_size} != cfg.image_size {self.cfg.image_size}")

    def _model_class(self) -> type:
        from transformers import ViTModel

        return ViTModel  # with the pooler: official checkpoints have pooler.dense.*

    def _build_processor(self):
        from transformers import ViTImageProcessorPil

        d = self._pretrained_dir()
        size = {"height": self.cfg.image_size, "width": self.cfg.image_size}
        if d is not None and (d / "preprocessor_config.json").exists():
            return ViTImageProcessorPil.from_pretrained(d, size=size)
        # what the official code gets from vit-base-patch16-224: bilinear resize, [0,1] -> mean/std 0.5
        return ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)

    @torch.inference_mode()
    def encode(self, image: Any) -> torch.Tensor:
        """-> float32 [cfg.vit_tokens, cfg.vit_dim] (CLS + patch tokens)."""
        img = media.load_image(image)
        pixels = self.processor(images=img, return_tensors="pt")["pixel_values"]  # [1, 3, S, S]
        return self._features(pixels)


class VideoEncoder(_VisionEncoder):
    """ViViT: a video (path or frames) -> last_hidden_state[0] [cfg.vivit_tokens, cfg.vivit_dim]."""

    kind = "ViViT"
    prefix = "vivit"
    _seed = 3

    def _config_class(self) -> type:
        from transformers import VivitConfig

        return VivitConfig

    def _check_config(self, config) -> None:
        if config.num_frames != self.cfg.video_frames:
            raise ValueError(f"ViViT num_frames {config.num_frames} != cfg.video_frames {self.cfg.video_frames}")

    def _model_class(self) -> type:
        from transformers import VivitModel

        return VivitModel

    def _build_processor(self):
        from transformers import VivitImageProcessor

        d = self._pretrained_dir()
        if d is not None and (d / "preprocessor_config.json").exists():
            return VivitImageProcessor.from_pretrained(d)
        s = self.cfg.image_size
        # HF defaults otherwise (rescale 1/127.5 with offset, mean/std 0.5), as the official code gets
        return VivitImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s})

    @torch.inference_mode()
    def encode(self, video: Any, rng: np.random.Generator | None = None) -> torch.Tensor:
        """-> float32 [cfg.vivit_tokens, cfg.vivit_dim]; frames from ``media.load_video_frames``."""
        frames = media.load_video_frames(video, self.cfg.video_frames, self.cfg.video_sampling, rng)
        pixels = self.processor(frames, return_tensors="pt")["pixel_values"]  # [1, T, 3, S, S]
        return self._features(pixels)
