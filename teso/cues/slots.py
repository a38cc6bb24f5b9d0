"""The model's cue slots: how each frame's cues become N_T (``text.num_cues``) slots — the one rule.

A frame with ``n`` cues fills ``min(n, N_T)`` slots, with its **first** cues in the reasoner's
order; the other slots are zero padding (the model's ``text.padding``: zero rows that hear the
audio, or removed). :func:`slot_count` is that rule;
:func:`seen_cues` applies it to cue words (REC#1/#2, ``teso predict``'s summary, the feature writer)
and :func:`fit_cue_slots` to cue embeddings (the model's input, ``pack_cues``), so the words scored
and shown are exactly the rows the model reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from teso.errors import TesoError


def slot_count(count: Any, n_t: int | None) -> Any:
    """Slots a frame with ``count`` cues fills: ``min(count, n_t)`` (``count`` when ``n_t`` is None).

    Works on an int or an integer tensor of counts (any shape).
    """
    if n_t is None:
        return count
    if isinstance(count, int):
        return min(count, n_t)
    return count.clamp(max=n_t)


def seen_cues(cues: Sequence, n_t: int | None) -> list:
    """The cues of one frame as the model sees them: the first ``n_t`` (all when ``None``)."""
    cues = list(cues)
    return cues[: slot_count(len(cues), n_t)]


def fit_cue_slots(text: Any, count: Any, n_t: int) -> tuple[Any, Any]:
    """Cue embeddings cut / zero-padded to ``n_t`` slots.

    ``text`` [B, T, M, d_T] float (any M >= 0), ``count`` [B, T] integer, real cues per frame (0..M).
    Returns ``text`` [B, T, n_t, d_T] with zeros in every slot beyond ``slot_count(count, n_t)`` and
    ``valid`` [B, T, n_t] bool (True for the filled slots).
    """
    import torch
    import torch.nn.functional as F

    if text.dim() != 4:
        raise TesoError(f"text: expected cue embeddings [B, T, N_T, d_T], got {tuple(text.shape)}")
    if count.shape != text.shape[:2]:
        raise TesoError(
            f"text_count: expected shape {tuple(text.shape[:2])} (B, T), got {tuple(count.shape)}"
        )
    if count.is_floating_point() or count.dtype == torch.bool:
        raise TesoError(f"text_count: expected integer counts, got {count.dtype}")
    if n_t < 1:
        raise TesoError(f"num_cues {n_t}: expected at least one cue slot")
    m = text.shape[2]
    if (count < 0).any() or (count > m).any():
        raise TesoError(
            f"text_count: counts must lie in 0..{m} (the cues given per frame), got {count.tolist()}"
        )
    if m < n_t:
        text = F.pad(text, (0, 0, 0, n_t - m))
    text = text[:, :, :n_t]
    valid = torch.arange(n_t, device=text.device) < slot_count(count, n_t)[..., None]
    return text * valid[..., None].to(text.dtype), valid
