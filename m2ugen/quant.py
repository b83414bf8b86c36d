"""Int8 weight-only LLaMA (torchao) and weight-byte accounting.

``quantize_llama_int8`` stores the frozen LLaMA projections (attention wq/wk/wv/wo, feed-forward
w1/w2/w3 and the output head) as int8 with one scale per output row (torchao's
``Int8WeightOnlyConfig``, per-row granularity): activations stay in the model's dtype and each matmul
dequantizes on the fly, so a memory-bound decode step reads about half the bytes of bf16 (a quarter
of fp32). What stays as it is: the token embeddings (one row read per token), RMSNorm weights, the
bias-tuning biases of the quantized linears (kept in the model's dtype by torchao), the LoRA pairs
(``lora_*``: small, trained, and added in full precision), the per-head gates and the prefix
adapters (inputs, not weights). The adapter keys/values are computed with the int8 wk/wv.

torchao's weight-only matmul converts the whole int8 weight to the activation dtype for each call: a
transient of twice the int8 bytes (the LLaMA-2 output head: 262 MB in bf16, per prefill and decode
step). The quantized linears here run their matmul in blocks of output rows instead (``Int8Linear``:
the same per-row arithmetic, at most ``CHUNK_BYTES`` converted at a time).

torchao is an optional dependency (the ``speed`` extra); it is imported only when quantizing.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

QUANTIZED_NAMES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")
CHUNK_BYTES = 32 << 20  # the most weight bytes an int8 matmul converts to the activation dtype at once


class Int8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight is torchao's per-row int8 tensor, multiplied in blocks of output rows.

    Each block computes what torchao's weight-only linear computes for those rows
    (``(x @ q[rows].T.to(x.dtype)) * scale[rows]``, then the bias), so only a block of the weight is
    ever converted to the activation dtype. Set by ``quantize_llama_int8`` (the module's class is
    swapped in place: its parameters and state-dict names stay as they are).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        q, scale = w.qdata, w.scale.reshape(-1)  # [out, in] int8, [out]
        rows = max(1, CHUNK_BYTES // (q.shape[1] * x.element_size()))
        if rows >= q.shape[0] or x.requires_grad:
            return super().forward(x)
        x2 = x.reshape(-1, x.shape[-1])
        y = x2.new_empty(x2.shape[0], q.shape[0])
        for i in range(0, q.shape[0], rows):
            m = torch.mm(x2, q[i:i + rows].t().to(x.dtype))
            y[:, i:i + rows] = m * scale[i:i + rows].to(m.dtype)
        if self.bias is not None:
            y += self.bias
        return y.reshape(*x.shape[:-1], q.shape[0]).to(x.dtype)


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
    tq.quantize_(llama, tq.Int8WeightOnlyConfig(granularity=tq.PerRow()), filter_fn=keep)
    for name, module in llama.named_modules():
        if type(module) is nn.Linear and _is_per_row_int8(module.weight) and keep(module, name):
            module.__class__ = Int8Linear
    return llama


def _is_per_row_int8(w: torch.Tensor) -> bool:
    """torchao's Int8Tensor with one scale per output row (what ``Int8Linear`` multiplies in blocks)."""
    q, scale = getattr(w, "qdata", None), getattr(w, "scale", None)
    return (isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.dim() == 2 and isinstance(scale, torch.Tensor)
            and scale.numel() == q.shape[0] and getattr(w, "act_quant_kwargs", None) is None
            and getattr(w, "act_pre_scale", None) is None)


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
