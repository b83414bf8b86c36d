"""Weights: official M2UGen checkpoints, LLaMA-2 base weights, the converted trainable-only file.

Formats handled here:
- the official ``checkpoint.pth`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``, a full
  ``state_dict`` with official names, optional ``module.`` prefixes, mixed fp16/fp32/bf16);
- LLaMA-2 base weights in Meta format (``consolidated.*.pth`` + ``params.json``) or Hugging Face
  format (``config.json`` + ``model*.safetensors`` / ``pytorch_model*.bin``);
- our converted ``.safetensors``: only the tensors M2UGen trained (official names) plus the
  ``[AUD]`` rows of ``llama.output.weight``; frozen base weights come from their own sources.

Modules, one job each:
- ``architectures``: the sub-models' known architectures, ``offline_config``, ``guess_preset``;
- ``names``: official <-> our names, which tensors M2UGen trained;
- ``files``: reading ``checkpoint.pth`` / ``.safetensors``;
- ``assign``: putting tensors into a meta-device model, releasing file pages (``FilePages``);
- ``state_dict``: loading an official or converted state dict into ``M2UGen``;
- ``llama_base``: the LLaMA-2 base weights (Meta and HF formats);
- ``convert``: the trainable-only ``.safetensors``;
- ``pretrained``: ``from_pretrained`` and the weights spec (``weights.json``) lookup.

The names below are re-exported here: ``from m2ugen import checkpoint; checkpoint.load_llama(...)``.

Every loader works on a model built on the meta device: tensors are then assigned (no copy when the
dtype already matches, so memory-mapped tensors stay memory-mapped), otherwise copied in place.
"""

from m2ugen.checkpoint.architectures import (
    ENCODEC_32KHZ,
    KNOWN_ARCHITECTURES,
    MERT_V1_330M,
    MUSICGEN_MEDIUM,
    MUSICGEN_SMALL,
    T5_BASE_ENCODER,
    VIT_BASE_16_224,
    VIVIT_B_16X2,
    detect_prefix_layout,
    guess_preset,
    offline_config,
)
from m2ugen.checkpoint.assign import FilePages
from m2ugen.checkpoint.convert import convert_checkpoint
from m2ugen.checkpoint.files import is_converted, read_any_state_dict, read_official_checkpoint, read_safetensors
from m2ugen.checkpoint.llama_base import is_base_param, load_hf_llama, load_llama, load_meta_llama
from m2ugen.checkpoint.names import (
    AUD_ROWS_KEY,
    BRIDGE_PREFIXES,
    CONVERTED_FORMAT,
    HOLDER_PREFIXES,
    OWN_PREFIXES,
    is_trained_key,
    strip_module_prefix,
    to_official,
    to_ours,
)
from m2ugen.checkpoint.pretrained import (
    SPEC_KEYS,
    SPEC_PATH_KEYS,
    SUBMODEL_PATH_KEYS,
    find_weights,
    from_pretrained,
    read_spec,
    resolve_source,
)
from m2ugen.checkpoint.state_dict import load_converted_state_dict, load_reference_state_dict

__all__ = [
    "AUD_ROWS_KEY", "BRIDGE_PREFIXES", "CONVERTED_FORMAT", "ENCODEC_32KHZ", "HOLDER_PREFIXES", "KNOWN_ARCHITECTURES",
    "MERT_V1_330M", "MUSICGEN_MEDIUM", "MUSICGEN_SMALL", "OWN_PREFIXES", "SPEC_KEYS", "SPEC_PATH_KEYS",
    "SUBMODEL_PATH_KEYS", "T5_BASE_ENCODER", "VIT_BASE_16_224", "VIVIT_B_16X2", "FilePages", "convert_checkpoint",
    "detect_prefix_layout", "find_weights", "from_pretrained", "guess_preset", "is_base_param", "is_converted",
    "is_trained_key", "load_converted_state_dict", "load_hf_llama", "load_llama", "load_meta_llama",
    "load_reference_state_dict", "offline_config", "read_any_state_dict", "read_official_checkpoint", "read_safetensors",
    "read_spec", "resolve_source", "strip_module_prefix", "to_official", "to_ours",
]
