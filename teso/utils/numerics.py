"""Pinned CPU numerics, for runs whose numbers are compared across machines (``teso demo``,
``teso ablate --reproducible``, ``teso fingerprint``): one seed gives the same bits on an Intel Xeon
and an AMD EPYC.

A CPU float result depends on three things besides the seed (docs/engine.md "Pinned CPU numerics"
has the measurements):

- the intra-op thread count: work split otherwise is summed in another order;
- the instruction set each library dispatches to (AVX-512 on one CPU, AVX2 on another);
- the CPU *vendor*. MKL's reproducible branches (``MKL_CBWR=AVX2``) hold on Intel CPUs only: on any
  other CPU MKL silently runs its ``AUTO`` branch instead (its documentation says so; measured here
  by making MKL believe the CPU is not Intel: every GEMM changed bits, and so did every weight of a
  demo trained that way). oneDNN promises equal bits only "on a given platform": its convolution
  blocking follows the cache sizes it reads from the CPU, which differ between vendors.

The pinned path therefore uses no vendor-dependent code: ATen's own kernels at AVX2 (chosen by
instruction set only), MKL in its ``COMPATIBLE`` branch (the one branch Intel documents as giving the
same results on Intel and non-Intel CPUs: SSE2 without the approximate rcpps/rsqrtps), and neither
oneDNN nor NNPACK (convolutions run as ATen im2col + MKL GEMM). The price is speed
(``bench/numerics.py``). The libraries read the variables once, when torch is first imported (ATen
caches its choice at the first dispatch): pin before that. A variable the user has set is left as it
is; :func:`numerics_record` says what is in effect and whether it is the pinned path.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

DEFAULT_THREADS = 2  # the cores of the development machine kind; any count works, as long as it is fixed
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels: picked by instruction set, not vendor
    "MKL_CBWR": "COMPATIBLE",  # MKL's vendor-neutral branch (AVX2 is honoured on Intel CPUs only)
    "MKL_DYNAMIC": "FALSE",  # MKL may not lower its thread count on its own (a CNR condition)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN is switched off below; this caps anything that still reaches it
}
# The pinning before vendor-neutral-1 (MKL's AVX2 branch: Intel only; oneDNN on): kept for
# bench/numerics.py and the tests that show why it was replaced.
EARLIER_AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Names the pinned path in reports; bump it when PINNED_ENV or the switches change.
SCHEME = "vendor-neutral-1"


def pin_numerics(threads: int | None = None) -> dict[str, Any]:
    """Pin the kernels (environment variables, if torch is not imported yet, on x86-64), switch
    oneDNN and NNPACK off and, when ``threads`` is given, fix torch's intra-op thread count.
    Returns :func:`numerics_record`."""
    if "torch" not in sys.modules and _x86():
        for key, value in PINNED_ENV.items():
            os.environ.setdefault(key, value)
    import torch

    if _x86():
        # Process-wide switches (inherited by forked DataLoader workers): convolutions fall back to
        # ATen's im2col + GEMM, whose only library call is MKL's pinned GEMM.
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        torch.set_num_threads(threads)
    return numerics_record()


def numerics_record() -> dict[str, Any]:
    """What decides the CPU numerics of this process: threads, ATen's kernel level, the pinning
    variables, the oneDNN / NNPACK switches, and whether all of them are the pinned path (``pinned``)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    env = {key: os.environ.get(key) for key in PINNED_ENV}
    mkldnn = bool(torch.backends.mkldnn.enabled)
    nnpack = bool(torch.backends.nnpack.is_available() and torch._C._get_nnpack_enabled())
    pinned = capability == "AVX2" and env == PINNED_ENV and not mkldnn and not nnpack
    return {
        "scheme": SCHEME if pinned else None,
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": capability,
        "env": env,
        "onednn": mkldnn,
        "nnpack": nnpack,
        "pinned": pinned,
        "machine": platform.machine(),
        "torch": torch.__version__,
    }


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")
