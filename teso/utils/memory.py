"""Keeping a long streaming job's peak memory flat on glibc (Linux)."""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Serve every allocation of ``nbytes`` or more with its own mmap, returned to the OS when freed.

    glibc raises its mmap threshold after the first large free (up to 32 MB on 64-bit), so later
    per-window buffers of a few MB land on the heap, whose top cannot shrink while newer small
    objects sit above them: a streaming job's peak then creeps up with its length. Pinning the
    threshold (the same as ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment) stops that. Returns
    whether it was set; False where the C library is not glibc (macOS, musl), which only means that
    the allocator's own policy applies there.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
