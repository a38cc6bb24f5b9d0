"""Run a command as MKL would run it on a CPU that is not Intel's, on an Intel machine.

MKL asks one of its own exported functions (``mkl_serv_intel_cpu_true``) whether the CPU is Intel's
and picks its code branch from the answer: with ``MKL_CBWR=AVX2`` a non-Intel CPU gets the ``AUTO``
branch instead (other bits), with ``MKL_CBWR=COMPATIBLE`` the same branch. A two-function library put
in front of torch with ``LD_PRELOAD`` answers "not Intel", so the vendor effect on MKL can be measured
on the machine at hand (``bench/numerics.py``, the golden test). It covers MKL only: oneDNN reads
cache sizes from the CPU itself, which no preload changes — the pinned path does not use oneDNN.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from teso.errors import TesoError

SOURCE = """\
/* teso: make MKL treat this CPU as a non-Intel one (see teso/utils/vendor_emulation.py). */
int mkl_serv_intel_cpu_true(void) { return 0; }
int mkl_serv_intel_cpu(void) { return 0; }
"""


def compiler() -> str | None:
    """A C compiler on PATH (``cc``, ``gcc``, ``clang``), or None."""
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def available() -> str | None:
    """None when the emulation can run here, else why not (one line)."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return "needs Linux on x86-64 (LD_PRELOAD into torch's MKL)"
    if compiler() is None:
        return "needs a C compiler (cc, gcc or clang) on PATH"
    import torch

    if not torch.backends.mkl.is_available():
        return "this torch is not built with MKL"
    return None


def build_library(folder: str | os.PathLike) -> Path:
    """Compile the preload library into ``folder``; returns its path."""
    why = available()
    if why:
        raise TesoError(f"non-Intel MKL emulation: {why}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "teso_non_intel_mkl.c"
    lib = folder / "libteso_non_intel_mkl.so"
    src.write_text(SOURCE)
    done = subprocess.run(
        [compiler(), "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], capture_output=True, text=True
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise TesoError(f"non-Intel MKL emulation: compiling {src} failed: {first}")
    return lib


def preload_env(lib: str | os.PathLike, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with ``lib`` first on ``LD_PRELOAD``."""
    env = dict(os.environ if env is None else env)
    rest = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib} {rest}".strip()
    return env
