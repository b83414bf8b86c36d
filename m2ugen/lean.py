"""Building at real size without a second copy: each tensor made once, in its final dtype.

- ``default_dtype(dtype)``: a scoped ``torch.set_default_dtype`` (modules built inside it create their
  floating parameters directly in ``dtype``; nothing fp32 to cast afterwards);
- ``MaterializedBytes``: a deterministic check of what a build allocates (a ``TorchDispatchMode`` that
  adds up the bytes of every tensor created on a real device, per dtype, and the peak of those alive);
- ``rss_bytes`` / ``peak_rss_bytes`` / ``reset_peak_rss``: the process's resident memory (Linux).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype | str | None):
    """Make ``dtype`` torch's default floating dtype inside the block (None or non-floating: no change)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        yield
        return
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


class MaterializedBytes(TorchDispatchMode):
    """Counts the bytes of every tensor an op creates on a non-meta device (new storage only).

    ``created[dtype]``: bytes ever created in that dtype; ``peak``: the most bytes of created tensors
    alive at once; ``largest[dtype]``: the largest single tensor. Tensors are followed with weak
    references, so ``peak`` falls when a temporary is freed. Views and in-place results share their
    input's storage and are not counted again.
    """

    def __init__(self):
        super().__init__()
        self.created: dict[torch.dtype, int] = defaultdict(int)
        self.largest: dict[torch.dtype, int] = defaultdict(int)
        self.alive = 0
        self.peak = 0
        self._seen: dict[int, int] = {}  # storage data_ptr -> bytes, while alive

    def _release(self, ptr: int) -> None:
        self.alive -= self._seen.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta" or type(t) is not torch.Tensor:
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in self._seen:
                continue
            self._seen[ptr] = nbytes
            self.created[t.dtype] += nbytes
            self.largest[t.dtype] = max(self.largest[t.dtype], nbytes)
            self.alive += nbytes
            self.peak = max(self.peak, self.alive)
            weakref.finalize(storage, self._release, ptr)  # a storage's Python object lives as long as it
        return out


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is absent)."""
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024


def peak_rss_bytes() -> int:
    """The highest resident memory of this process (since start or the last ``reset_peak_rss``)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset the peak (``VmHWM``) to the current RSS (Linux: ``/proc/self/clear_refs`` = 5); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
