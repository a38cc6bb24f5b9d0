"""Audio-control and segmentation-preference metrics (SPEC §7).

* ``relative_drop(normal, control)``: ``(normal − control) / normal`` — the paper's Δm / Δf. Large is
  good: a model that listens loses accuracy when the audio is muted or replaced by noise.
* ``foreground_rate``: the share of pixels predicted foreground. Under silence nothing is sounding, so
  against that (empty) truth every foreground pixel is a false positive.
* ``preference_rate``: the share of the pixels of visible but silent audible objects that are predicted
  as sounding — the segmentation preference measured directly (needs data that knows which visible
  objects are silent, such as SynthAVS).

Split-level values pool pixel counts (Σ hits / Σ pixels) rather than averaging per-frame rates, so a
large silent object weighs by its area; ``ForegroundRateMeter`` and ``PreferenceRateMeter`` do that.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from teso.errors import TesoError
from teso.metrics.avsbench import REFERENCE_THRESHOLD, _check_threshold, binary_gt, to_probabilities


def relative_drop(normal: float, control: float) -> float:
    """``(normal − control) / normal``: the relative drop of a metric under an audio control.

    Returns 0.0 when ``normal`` is 0 (there is nothing to lose; defined so that a table never holds NaN).
    Negative when the control scores higher than the normal audio.
    """
    values = []
    for name, value in (("normal", normal), ("control", control)):
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise TesoError(f"{name}: expected a scalar, got a tensor of shape {list(value.shape)}")
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TesoError(f"{name}: expected a finite number, got {value!r}")
        values.append(float(value))
    normal_v, control_v = values
    if normal_v == 0.0:
        return 0.0
    return (normal_v - control_v) / normal_v


def _foreground(pred: Tensor, threshold: float, from_logits: bool) -> Tensor:
    if not isinstance(pred, Tensor) or pred.dim() < 2:
        raise TesoError("pred: expected a tensor of masks [..., H, W]")
    if not pred.is_floating_point():
        raise TesoError(f"pred: expected floating-point logits or probabilities, got dtype {pred.dtype}")
    _check_threshold(threshold)
    return to_probabilities(pred, from_logits=from_logits) > threshold


def foreground_counts(
    pred: Tensor, *, threshold: float = REFERENCE_THRESHOLD, from_logits: bool = True
) -> tuple[int, int]:
    """``(foreground pixels, all pixels)`` of ``pred [..., H, W]`` (logits, or probabilities)."""
    fg = _foreground(pred, threshold, from_logits)
    return int(fg.sum()), fg.numel()


def foreground_rate(
    pred: Tensor, *, threshold: float = REFERENCE_THRESHOLD, from_logits: bool = True
) -> float:
    """Share of the pixels of ``pred [..., H, W]`` predicted foreground (``sigmoid > threshold``).

    Raises ``TesoError`` for an empty tensor (a rate of nothing is undefined).
    """
    fg, total = foreground_counts(pred, threshold=threshold, from_logits=from_logits)
    if total == 0:
        raise TesoError("pred: has no pixels; a foreground rate needs at least one")
    return fg / total


def preference_counts(
    pred: Tensor,
    silent_audible_mask: Tensor,
    *,
    threshold: float = REFERENCE_THRESHOLD,
    from_logits: bool = True,
) -> tuple[int, int]:
    """``(silent pixels predicted sounding, silent pixels)``.

    Args:
        pred: ``[..., H, W]`` logits (or probabilities with ``from_logits=False``).
        silent_audible_mask: binary mask of the same shape marking the pixels of visible objects that
            could sound but are silent in that frame.
    """
    fg = _foreground(pred, threshold, from_logits)
    if not isinstance(silent_audible_mask, Tensor) or silent_audible_mask.shape != fg.shape:
        shape = (
            list(silent_audible_mask.shape)
            if isinstance(silent_audible_mask, Tensor)
            else type(silent_audible_mask).__name__
        )
        raise TesoError(f"silent_audible_mask: expected the shape of pred {list(fg.shape)}, got {shape}")
    silent = binary_gt(silent_audible_mask, name="silent_audible_mask").to(fg.device)
    return int((fg & silent).sum()), int(silent.sum())


def preference_rate(
    pred: Tensor,
    silent_audible_mask: Tensor,
    *,
    threshold: float = REFERENCE_THRESHOLD,
    from_logits: bool = True,
) -> float:
    """Share of the silent-audible pixels predicted as sounding, for these frames.

    Returns NaN when the frames hold no silent-audible pixel (the rate is undefined there; over a split
    use ``PreferenceRateMeter``, which pools the counts).
    """
    hits, total = preference_counts(pred, silent_audible_mask, threshold=threshold, from_logits=from_logits)
    return hits / total if total else float("nan")


class ForegroundRateMeter:
    """Pooled foreground rate over a split: Σ foreground pixels / Σ pixels.

    ``update(pred)`` with ``pred [..., H, W]``; ``compute() -> {"foreground_rate", "foreground_pixels",
    "pixels"}``.
    """

    def __init__(self, *, threshold: float = REFERENCE_THRESHOLD, from_logits: bool = True) -> None:
        _check_threshold(threshold)
        self.threshold = float(threshold)
        self.from_logits = from_logits
        self.reset()

    def reset(self) -> None:
        self.foreground_pixels = 0
        self.pixels = 0

    def update(self, pred: Tensor) -> None:
        fg, total = foreground_counts(pred, threshold=self.threshold, from_logits=self.from_logits)
        self.foreground_pixels += fg
        self.pixels += total

    def merge(self, other: ForegroundRateMeter) -> None:
        self.foreground_pixels += other.foreground_pixels
        self.pixels += other.pixels

    def compute(self) -> dict[str, Any]:
        if self.pixels == 0:
            raise TesoError("ForegroundRateMeter.compute: no frames were added (call update first)")
        return {
            "foreground_rate": self.foreground_pixels / self.pixels,
            "foreground_pixels": self.foreground_pixels,
            "pixels": self.pixels,
        }


class PreferenceRateMeter:
    """Pooled preference rate over a split: Σ silent pixels predicted sounding / Σ silent pixels.

    ``update(pred, silent_audible_mask)``; ``compute() -> {"preference_rate", "silent_hits",
    "silent_pixels"}``, the rate being NaN when the split has no silent-audible pixel at all (the
    metric does not apply, it is not 0).
    """

    def __init__(self, *, threshold: float = REFERENCE_THRESHOLD, from_logits: bool = True) -> None:
        _check_threshold(threshold)
        self.threshold = float(threshold)
        self.from_logits = from_logits
        self.reset()

    def reset(self) -> None:
        self.silent_hits = 0
        self.silent_pixels = 0
        self.frames = 0

    def update(self, pred: Tensor, silent_audible_mask: Tensor) -> None:
        hits, total = preference_counts(
            pred, silent_audible_mask, threshold=self.threshold, from_logits=self.from_logits
        )
        self.silent_hits += hits
        self.silent_pixels += total
        self.frames += pred[..., 0, 0].numel()

    def merge(self, other: PreferenceRateMeter) -> None:
        self.silent_hits += other.silent_hits
        self.silent_pixels += other.silent_pixels
        self.frames += other.frames

    def compute(self) -> dict[str, Any]:
        if self.frames == 0:
            raise TesoError("PreferenceRateMeter.compute: no frames were added (call update first)")
        rate = self.silent_hits / self.silent_pixels if self.silent_pixels else float("nan")
        return {"preference_rate": rate, "silent_hits": self.silent_hits, "silent_pixels": self.silent_pixels}
