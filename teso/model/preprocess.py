"""Model inputs: frame preprocessing, cue packing (the one place cues are padded / truncated to
N_T) and the ground-truth container ``TeSOTargets``.

Shapes: B clips × T frames, S the model's input side, N_T cues a frame of width d_T.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from teso.errors import TesoError

# Mask2Former's image processor normalisation (ImageNet statistics, on 0..1 pixel values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 RGB frames [..., H, W, 3] -> normalised float [..., 3, S, S] (S = ``image_size``).

    Like Mask2Former's image processor: bilinear resize (antialiased, as PIL does when shrinking),
    scale to 0..1, subtract the ImageNet mean and divide by its std per channel. Unlike it, frames
    are resized to a square S×S (aspect ratio not kept), as AVS models do, so that the masks map
    back to the frame by a plain resize.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        raise TesoError(
            f"frames: expected uint8 RGB frames [..., H, W, 3], got {getattr(frames, 'dtype', frames)}"
        )
    if frames.dim() < 3 or frames.shape[-1] != 3:
        raise TesoError(f"frames: expected uint8 RGB frames [..., H, W, 3], got shape {tuple(frames.shape)}")
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(*lead, 3, image_size, image_size)


def prepare_text(
    text: torch.Tensor, text_count: torch.Tensor, num_cues: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cues padded / truncated to N_T by the one rule, :func:`teso.cues.slots.fit_cue_slots`.

    ``text`` [B, T, M, d_T] (any M >= 0), ``text_count`` [B, T] valid cues per frame (0..M).
    Returns ``text`` [B, T, N_T, d_T] with zeros beyond the count (the first N_T cues kept when there
    are more) and ``valid`` [B, T, N_T] bool.
    """
    from teso.cues.slots import fit_cue_slots

    return fit_cue_slots(text, text_count, num_cues)


def pack_cues(
    cues: Sequence[Sequence[torch.Tensor]], num_cues: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip, per-frame cue embeddings (each [n_i, d_T], n_i may be 0) -> ``text`` [B, T, N_T, d_T],
    ``text_count`` [B, T] (long), padded / truncated by ``prepare_text``."""
    b = len(cues)
    t = len(cues[0]) if b else 0
    if any(len(clip) != t for clip in cues):
        raise TesoError("cues: every clip must have the same number of frames")
    longest = max([c.shape[0] for clip in cues for c in clip] + [0])
    text = torch.zeros(b, t, longest, dim)
    count = torch.zeros(b, t, dtype=torch.long)
    for i, clip in enumerate(cues):
        for j, c in enumerate(clip):
            if c.dim() != 2 or (c.shape[0] and c.shape[1] != dim):
                raise TesoError(f"cues[{i}][{j}]: expected [n, {dim}] embeddings, got {tuple(c.shape)}")
            text[i, j, : c.shape[0]] = c
            count[i, j] = c.shape[0]
    from teso.cues.slots import slot_count

    padded, _ = prepare_text(text, count, num_cues)
    return padded, slot_count(count, num_cues)


@dataclass
class TeSOTargets:
    """Ground truth: ``masks`` [B, T, H, W] (binary maps or class-id maps), ``annotated`` [B, T] bool
    (None = every frame annotated). Unannotated frames add nothing to the segmentation loss."""

    masks: torch.Tensor
    annotated: torch.Tensor | None = None
