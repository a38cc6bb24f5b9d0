"""Pinned CPU numerics, for runs whose numbers are compared across machines (``teso demo``,
``teso ablate --reproducible``).

A CPU float result depends on two things besides the seed:
- the intra-op thread count: work split otherwise is summed in another order;
- the instruction set each library dispatches to. ATen's own kernels, MKL's GEMM and oneDNN's
  convolutions each pick AVX-512 on an Intel Xeon and AVX2 on an AMD EPYC, and the two give other
  bits (measured on one Xeon, forcing AVX2 per library: softmax via ATen, matmul via MKL, conv and
  GELU via oneDNN all changed).
Pinning all three to AVX2 — which every x86-64 machine of this kind has — and the thread count to a
fixed number makes one seed give one set of numbers on either. The libraries read these variables
once, when torch is first imported (ATen caches its choice at the first dispatch): pin before that.
A variable the user has set is left as it is; ``numerics_record`` says what is in effect.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

DEFAULT_THREADS = 2  # the cores of the development machine kind; any count works, as long as it is fixed
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_numerics(threads: int | None = None) -> dict[str, Any]:
    """Pin the kernels' instruction set (if torch is not imported yet, on x86-64) and, when
    ``threads`` is given, torch's intra-op thread count. Returns :func:`numerics_record`."""
    if "torch" not in sys.modules and _x86():
        for key, value in PINNED_ENV.items():
            os.environ.setdefault(key, value)
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        torch.set_num_threads(threads)
    return numerics_record()


def numerics_record() -> dict[str, Any]:
    """What decides the CPU numerics of this process: threads, ATen's kernel level, the pinning
    variables, and whether all of them hold the pinned values (``pinned``)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    env = {key: os.environ.get(key) for key in PINNED_ENV}
    pinned = capability == "AVX2" and env == PINNED_ENV
    return {
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": capability,
        "env": env,
        "pinned": pinned,
        "machine": platform.machine(),
        "torch": torch.__version__,
    }


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")
