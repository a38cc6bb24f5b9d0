"""Audio-control condition names (``normal``, ``mute``, ``wgnN``, ``snrN``): parsing and help text.

Kept free of torch so that ``teso`` can build its parser without loading it (``teso demo`` pins
the kernels' instruction set before torch is first imported: ``teso.utils.numerics``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from teso.errors import TesoError

NOISE = re.compile(r"^(wgn|snr)(-?\d+(?:\.\d+)?)$")


def condition_help() -> str:
    return (
        "normal = the clip's audio; mute = all-zero waveform; wgnN = white Gaussian noise only at N dB "
        "below the clip's power (paper Table 4 'WGN'); snrN = the clip's audio plus noise at N dB SNR"
    )


def parse_conditions(spec: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for name in names:
        if name not in ("normal", "mute") and not NOISE.match(name):
            raise TesoError(f"--audio: unknown condition {name!r}; {condition_help()}")
    if not names:
        raise TesoError(f"--audio: no condition given; {condition_help()}")
    if "normal" not in names:
        names.insert(0, "normal")  # the drops are relative to normal audio
    return list(dict.fromkeys(names))
