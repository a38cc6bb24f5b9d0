"""Checking a weights file against the module it is meant for, before loading it."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from teso.errors import TesoError


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str,
    kind: str,
    shapes: str,
) -> None:
    """Raise one TesoError naming ``where`` when ``state`` lacks keys of ``expected``, has keys it does
    not, or holds a tensor of another shape. ``kind`` names what the file should be ("a VGGish state
    dict"); ``shapes`` opens the wrong-shape message (and may say which settings fix them)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TesoError(
            f"{where}: not {kind}; missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    wrong = shape_mismatches(state, expected)
    if wrong:
        raise TesoError(f"{where}: {shapes}: {'; '.join(wrong)}")


def shape_mismatches(state: Mapping, expected: Mapping) -> list[str]:
    """``"key (saved shape) != (expected shape)"`` for every key of ``expected`` whose shapes differ
    (every key must be in ``state``)."""
    return [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
