"""glibc's mmap threshold pinned for streaming jobs; elsewhere the allocator's policy is left alone."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import teso.utils.memory as memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_large_buffers_freed_after_pinning_go_back_to_the_os():
    # In a fresh process: after one 16 MB free glibc raises its threshold, so a later 8 MB buffer
    # sits on the heap below a small live object and its pages stay resident after `del`; with the
    # threshold pinned the buffer is its own mmap and its 8 MB leave at once.
    script = r"""
import ctypes, sys
sys.path.insert(0, sys.argv[2])
from teso.utils.memory import pin_mmap_threshold
libc = ctypes.CDLL("libc.so.6"); libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]; libc.free.argtypes = [ctypes.c_void_p]
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
big = libc.malloc(16 << 20); ctypes.memset(big, 1, 16 << 20); libc.free(big)
buf = libc.malloc(8 << 20); ctypes.memset(buf, 1, 8 << 20)
keep = libc.malloc(64); ctypes.memset(keep, 1, 64)   # a small object allocated after the buffer
before = rss(); libc.free(buf)
print(before - rss())
"""
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    freed = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", script, mode, repo], capture_output=True, text=True, check=True
            ).stdout
        )  # fmt: skip
        for mode in ("pin", "default")
    }
    assert freed["pin"] >= 7 << 20  # the 8 MB buffer's pages (less a page of slack) left the process
    assert freed["default"] < 1 << 20  # glibc's own policy kept them on the heap


def test_not_linux_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.pin_mmap_threshold() is False
