"""Run logs: every metric as a JSONL line, and the same scalars for TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from teso.utils.files import append_line


class RunLogger:
    """Appends ``{"kind", "step", "epoch", "time", **scalars}`` to ``RUN/log.jsonl`` and TensorBoard.

    TensorBoard event files need the ``tensorboard`` package, a default dependency of teso; should it
    be missing from an environment anyway, only the JSONL log is written, and ``tensorboard_note``
    says so.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "log.jsonl"
        self._tb = None
        self.tensorboard_note = ""
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.tensorboard_note = (
                "tensorboard is not installed (it is a teso dependency: `pip install tensorboard`): "
                "scalars go to log.jsonl only"
            )
        else:
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def log(self, kind: str, step: int, epoch: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _plain(v) for k, v in scalars.items()}
        record = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3), **clean}
        append_line(self.path, json.dumps(record))
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return str(v)
    return v
