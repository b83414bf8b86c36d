"""Int8 weight-only LLaMA (torchao) and weight-byte accounting.

``quantize_llama_int8`` stores the frozen LLaMA projections (attention wq/wk/wv/wo, feed-forward
w1/w2/w3 and the output head) as int8 with one scale per output row (torchao's
``Int8WeightOnlyConfig``, per-row granularity): activations stay in the model's dtype and each matmul
dequantizes on the fly, so a memory-bound decode step reads about half the bytes of bf16 (a quarter
of fp32). What stays as it is: the token embeddings (one row read per token), RMSNorm weights, the
bias-tuning biases of the quantized linears (kept in the model's dtype by torchao), the LoRA pairs
(``lora_*``: small, trained, and added in full precision), the per-head gates and the prefix
adapters (inputs, not weights). The adapter keys/values are computed with the int8 wk/wv.

torchao is an optional dependency (the ``speed`` extra); it is imported only when quantizing.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

QUANTIZED_NAMES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")


def defer_torchao() -> None:
    """Keep torchao out of this process until ``quantize_llama_int8`` needs it.

    transformers imports torchao whenever it is installed (``quantizers.auto`` -> ``quantizer_torchao``,
    at the first model build), which costs a second and prints its missing-kernel warnings on a CPU-only
    machine. Call this before transformers' models are imported, in a process that will not load a
    torchao-quantized Hugging Face checkpoint (we never do: our int8 path quantizes our own LLaMA).
    """
    import sys

    if "torchao" in sys.modules or "transformers.quantizers.auto" in sys.modules:
        return
    try:
        import transformers.utils as tu
        import transformers.utils.import_utils as iu
    except ImportError:
        return

    def unavailable(*args, **kwargs) -> bool:
        return False

    iu.is_torchao_available = tu.is_torchao_available = unavailable


def _is_llama_projection(module: nn.Module, name: str) -> bool:
    return isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in QUANTIZED_NAMES


def _torchao():
    """Import torchao quietly (on a CPU-only machine it logs that its CUDA kernels do not load)."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torchao.quantization as tq
    except ImportError as e:
        raise ImportError("int8 LLaMA needs torchao (pip install 'm2ugen[speed]', torchao==0.18.0)") from e
    finally:
        log.setLevel(level)
    return tq


@torch.no_grad()
def quantize_llama_int8(llama: nn.Module, only: nn.Module | None = None) -> nn.Module:
    """Quantize ``llama``'s projections to int8 weight-only in place (see the module docstring); returns it.

    Call it after loading the weights (LoRA/bias merges and state-dict loading expect plain tensors)
    and after moving the model to its device and dtype. ``only``: just the projections inside this
    block of ``llama`` (a layer, or the output head), e.g. while the rest is still on the meta device.
    """
    if llama_is_int8(llama):
        return llama
    tq = _torchao()
    if only is None:
        keep = _is_llama_projection
    else:
        inside = {id(m) for m in only.modules()}

        def keep(module: nn.Module, name: str) -> bool:
            return id(module) in inside and _is_llama_projection(module, name)
    tq.quantize_(llama, tq.Int8WeightOnlyConfig(), filter_fn=keep)
    return llama


def llama_is_int8(llama: nn.Module) -> bool:
    """True when the output head's weight is a quantized tensor (``quantize_llama_int8`` has run)."""
    w = getattr(getattr(llama, "output", None), "weight", None)
    return w is not None and type(w) not in (torch.Tensor, nn.Parameter)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a tensor subclass (a torchao quantized weight) counts its inner tensors."""
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module, *, skip: tuple[str, ...] = ()) -> int:
    """Bytes of ``module``'s parameters (quantized ones at their stored size), except names starting with ``skip``."""
    return sum(tensor_bytes(p) for n, p in module.named_parameters() if not n.startswith(skip))


def decode_weight_bytes(llama: nn.Module) -> int:
    """Weight bytes one decode step must read: every parameter but the token embeddings (one row per token)."""
    return weight_bytes(llama, skip=("tok_embeddings.",))
