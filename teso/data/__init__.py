"""AVSBench readers (released and AVSBench-object layouts), the mask palette, the tree checker.

The readers and the checker import torch, so they are loaded on first use: ``import teso.data``
(and ``teso.data.palette``) stays light for commands that do not need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from teso.data.classes import AVSS_CLASSES, AVSS_LABEL2IDX
from teso.data.palette import colorize, decode_colors, palette

_LAZY = {
    "AVSBenchDataset": "teso.data.avsbench",
    "ClipArrays": "teso.data.avsbench",
    "ClipRecord": "teso.data.avsbench",
    "FRAMES_PER_SUBSET": "teso.data.avsbench",
    "LAYOUTS": "teso.data.avsbench",
    "Problem": "teso.data.avsbench",
    "SPLITS": "teso.data.avsbench",
    "SUBSETS": "teso.data.avsbench",
    "collate": "teso.data.avsbench",
    "detect_layout": "teso.data.avsbench",
    "inspect_clip": "teso.data.avsbench",
    "list_clips": "teso.data.avsbench",
    "parse_a_obj": "teso.data.avsbench",
    "read_label2idx": "teso.data.avsbench",
    "CheckReport": "teso.data.check",
    "check_tree": "teso.data.check",
}

__all__ = ["AVSS_CLASSES", "AVSS_LABEL2IDX", "colorize", "decode_colors", "palette", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teso.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
