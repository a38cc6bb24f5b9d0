"""The colour palette of AVSBench's ``labels_rgb`` masks.

AVSBench (V1 and V2) colours class ``k`` with the PASCAL-VOC bit-interleaving palette: bit ``3i``
of ``k`` goes to bit ``7-i`` of red, bit ``3i+1`` to green, bit ``3i+2`` to blue. Class 0
(background) is black, so a binary mask is "any non-black pixel".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def palette(num_classes: int = 71) -> np.ndarray:
    """[num_classes, 3] uint8 RGB colours, row k = colour of class k."""
    return _palette(num_classes).copy()


@lru_cache(maxsize=8)
def _palette(num_classes: int) -> np.ndarray:
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for k in range(num_classes):
        lab, i = k, 0
        r = g = b = 0
        while lab > 0:
            r |= ((lab >> 0) & 1) << (7 - i)
            g |= ((lab >> 1) & 1) << (7 - i)
            b |= ((lab >> 2) & 1) << (7 - i)
            i += 1
            lab >>= 3
        out[k] = (r, g, b)
    return out


def colorize(index_mask: np.ndarray, num_classes: int = 71) -> np.ndarray:
    """[H, W] class indices -> [H, W, 3] uint8 RGB with the AVSBench palette."""
    pal = palette(max(num_classes, int(index_mask.max()) + 1))
    return pal[index_mask]


def decode_colors(rgb: np.ndarray, num_classes: int = 71) -> tuple[np.ndarray, np.ndarray]:
    """[H, W, 3] uint8 RGB -> ([H, W] int64 class indices, [H, W] bool unknown-colour pixels).

    A pixel whose colour is not in the palette gets index 0 and is flagged in the second array,
    so callers can report it instead of guessing.
    """
    lut_keys, lut_idx = _lookup(num_classes)
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(lut_keys, key), 0, len(lut_keys) - 1)
    known = lut_keys[pos] == key
    index = np.where(known, lut_idx[pos], 0)
    return index.astype(np.int64), ~known


@lru_cache(maxsize=8)
def _lookup(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 24-bit colour keys of the palette and the class index of each."""
    pal = _palette(num_classes).astype(np.int64)
    pal_key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    keys, idx = np.unique(pal_key, return_index=True)
    return keys, idx
