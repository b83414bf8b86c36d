"""Putting tensors into a model built on the meta device, and releasing the source file's pages.

A meta target is replaced by the tensor (no copy when the dtype already matches, so memory-mapped
tensors stay memory-mapped); a real one is copied into. Once a file-mapped source has been copied
or cast, its resident pages are dropped (``FilePages``).
"""

from __future__ import annotations

import mmap
import sys

import torch
from torch import nn


def resolve(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    mod = root
    for p in path:
        mod = getattr(mod, p)
    return mod, attr


class FilePages:
    """Drops the resident pages of file-mapped source tensors once they have been copied or cast.

    Tensors read with ``mmap`` occupy RSS once touched; after a cast (fp32 file -> fp16 model) the
    source pages are dead weight until the whole file is unmapped. Only pages lying wholly inside
    the tensor and inside a file-backed mapping (``/proc/self/maps``) are dropped
    (``madvise(MADV_DONTNEED)``); the kernel re-reads them from the file if they are touched again.
    Never used on tensors of a caller's in-memory state dict. A no-op off Linux.
    """

    MADV_DONTNEED = 4

    def __init__(self, enabled: bool = True):
        self.ranges: list[tuple[int, int]] = []
        self.libc = None
        if not enabled or not sys.platform.startswith("linux"):
            return
        try:
            import ctypes

            self.libc = ctypes.CDLL(None, use_errno=True)
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 6 and parts[5].startswith("/"):
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        self.ranges.append((lo, hi))
        except OSError:
            self.ranges = []

    def release(self, t: torch.Tensor) -> None:
        if not self.ranges or t.device.type != "cpu" or t.is_meta or not t.is_contiguous():
            return
        import ctypes

        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        if not any(lo <= start and end <= hi for lo, hi in self.ranges):
            return
        page = mmap.PAGESIZE
        a, b = -(-start // page) * page, end // page * page
        if b > a:
            self.libc.madvise(ctypes.c_void_p(a), ctypes.c_size_t(b - a), self.MADV_DONTNEED)


_NO_RELEASE = FilePages(enabled=False)


@torch.no_grad()
def put(root: nn.Module, name: str, value: torch.Tensor, pages: FilePages = _NO_RELEASE) -> None:
    """Set parameter/buffer ``name`` of ``root`` to ``value`` cast to the target's dtype.

    A meta target is replaced (assign: no copy if the dtype matches); a real one is copied into.
    When a copy was made, ``pages`` drops the source's file pages.
    """
    mod, attr = resolve(root, name)
    cur = getattr(mod, attr)
    if tuple(cur.shape) != tuple(value.shape):
        raise ValueError(f"{name}: shape {list(value.shape)} does not fit the model's {list(cur.shape)}")
    if cur.is_meta:
        new = value.to(dtype=cur.dtype)
        if attr in mod._parameters:
            mod._parameters[attr] = nn.Parameter(new, requires_grad=cur.requires_grad)
        else:
            mod._buffers[attr] = new
        if new.data_ptr() != value.data_ptr():
            pages.release(value)
    else:
        cur.copy_(value)
        pages.release(value)


def fmt_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return shown + more


def shape_of(t) -> list[int]:
    return list(t.shape) if hasattr(t, "shape") else list(t)
