"""What produced a number: the software versions that change results, the CPU, and the numerics in
effect. Every report (``teso demo``, ``teso ablate``, ``teso eval``, ``teso fingerprint``) records
:func:`environment_record` beside its numbers, so two reports can be compared knowing whether they
*should* agree bit for bit (same pinned scheme, same versions) or only within noise.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose version can change a number: kernels and random init (torch, transformers),
# data generation and metrics (numpy, scipy), decoding (av, soundfile, pillow), weights files
# (safetensors), text features (tokenizers).
NUMERIC_PACKAGES = (
    "torch",
    "transformers",
    "numpy",
    "scipy",
    "av",
    "safetensors",
    "pillow",
    "soundfile",
    "tokenizers",
)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")  # the ones the dispatchers look at


def package_versions(names: tuple[str, ...] = NUMERIC_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_record(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's vendor, model name, logical CPU count and dispatch-relevant flags.

    Read from ``/proc/cpuinfo`` (the x86 field names); where that file is missing the vendor and flags
    are None and the model is what :func:`platform.processor` says; on other architectures the
    fields it lacks are None."""
    path = Path(cpuinfo)
    fields: dict[str, str] = {}
    count = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            count += 1
        fields.setdefault(key, value.strip())
    if not fields:
        return {
            "vendor": None,
            "model": platform.processor() or None,
            "family_model_stepping": None,
            "logical_cpus": None,
            "flags": None,
        }
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id"),
        "model": fields.get("model name"),
        # A virtual machine may show a generic model name: family/model/stepping still tell the core.
        "family_model_stepping": "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "logical_cpus": count or None,
        "flags": {f: f in flags for f in CPU_FLAGS},
    }


def machine_line(env: dict[str, Any]) -> str:
    """One line naming the machine of an :func:`environment_record`, for report tables."""
    cpu = env.get("cpu") or {}
    pk = env.get("packages") or {}
    num = env.get("numerics") or {}
    how = f"pinned numerics {num.get('scheme')}" if num.get("pinned") else "numerics not pinned"
    name = f"{cpu.get('vendor') or '?'} {cpu.get('model') or '?'} ({cpu.get('family_model_stepping')})"
    return (
        f"{name}, {how}, {num.get('threads', '?')} threads; "
        f"torch {pk.get('torch')}, transformers {pk.get('transformers')}, numpy {pk.get('numpy')}"
    )


def environment_record() -> dict[str, Any]:
    """Packages, Python, OS, CPU and :func:`teso.utils.numerics.numerics_record` of this process."""
    from teso import __version__
    from teso.utils.numerics import numerics_record

    return {
        "teso": __version__,
        "python": sys.version.split()[0],
        "os": f"{platform.system()} {platform.release()}",
        "packages": package_versions(),
        "cpu": cpu_record(),
        "numerics": numerics_record(),
    }
