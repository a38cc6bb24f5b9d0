"""AdamW parameter groups of a TeSO model: the paper's learning rates and Mask2Former's weight decay.

Learning rate (paper §4.1, SPEC §3): ``lr_visual_adapters`` (1e-4) for the visual-encoder adapters
only — the adapters in the Swin backbone — and ``lr`` (1e-3) for every other learnable parameter:
the pixel-decoder and transformer-decoder adapters, the new class head, the audio / text
projections, SeDAM, PMQS and a trained audio CNN.

An unfrozen foundation (``freeze_foundation=False``: the ``tiny`` variant trained from scratch, as
``teso/configs/synth.yaml`` does with ``lr_visual_adapters: 3.0e-4``) trains every one of its own
weights — Swin, pixel decoder, transformer decoder, queries; not the new class head — at
``lr_visual_adapters``: the foundation keeps one rate of its own, apart from the new modules' ``lr``.
Its adapters follow the rule above either way.

Weight decay: ``weight_decay`` except 0 for norm layers (LayerNorm, GroupNorm, BatchNorm, ...) and
embeddings (``nn.Embedding``; the learnt position tables Swin's ``relative_position_bias_table``
and the pixel decoder's ``level_embed``), as Mask2Former's optimiser does, and 0 for every bias
(SPEC §3).

Groups (only the non-empty ones, in this order): ``swin_adapters``, ``swin_adapters_no_decay``,
``foundation``, ``foundation_no_decay``, ``other_no_decay``, ``other``. Each is a dict with
``name``, ``params``, ``names`` (the parameters' names in the model), ``lr`` and ``weight_decay``,
ready for ``torch.optim.AdamW``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
# Learnt tables that are embeddings in all but type (raw nn.Parameter in the HF modules).
EMBEDDING_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "level_embed")
GROUP_ORDER = (
    "swin_adapters",
    "swin_adapters_no_decay",
    "foundation",
    "foundation_no_decay",
    "other_no_decay",
    "other",
)


def _no_decay(module: nn.Module, param_name: str) -> bool:
    return (
        isinstance(module, (*NORM_TYPES, nn.Embedding))
        or param_name == "bias"
        or param_name.endswith("_bias")  # nn.MultiheadAttention's in_proj_bias
        or param_name in EMBEDDING_NAMES
    )


def _rate_group(name: str) -> str:
    if name.startswith("foundation.adapters.swin_"):
        return "swin_adapters"
    if name.startswith("foundation.m2f.") and not name.startswith("foundation.m2f.class_predictor."):
        return "foundation"
    return "other"  # other adapters, class head, projections, SeDAM, PMQS, audio encoder


def parameter_groups(
    model: nn.Module, *, lr: float, lr_visual_adapters: float, weight_decay: float
) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` (a TeSO) in named AdamW groups (module docstring).

    Every trainable parameter is in exactly one group; frozen ones are in none. A parameter shared
    by two modules counts once, under its first name.
    """
    rates = {"swin_adapters": lr_visual_adapters, "foundation": lr_visual_adapters, "other": lr}
    groups: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            rate = _rate_group(name)
            key = rate + ("_no_decay" if _no_decay(module, param_name) else "")
            group = groups.setdefault(
                key,
                {
                    "name": key,
                    "params": [],
                    "names": [],
                    "lr": rates[rate],
                    "weight_decay": 0.0 if key.endswith("_no_decay") else weight_decay,
                },
            )
            group["params"].append(param)
            group["names"].append(name)
    return [groups[k] for k in GROUP_ORDER if k in groups]
