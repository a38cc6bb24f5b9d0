"""TeSO checkpoints: one safetensors file holding the weights, the resolved config and a format version.

Layout (``.safetensors``): tensors = the model's full ``state_dict()`` (frozen weights included, so
the file alone rebuilds the model — no pre-trained directory or VGGish file needed); metadata
(string → string) = ``format`` ("teso-checkpoint"), ``format_version``, ``transformers_version``,
``config`` (the ``TeSOConfig.to_dict()`` JSON), ``extra`` (caller's JSON: epoch, metrics, ...).
Tensor keys are the HF module names of the installed transformers; a checkpoint loads under a
release with the same module layout (the Swin layout changed between 5.0 and 5.23).

Optimizer / scheduler state is not in it: ``save_training_state`` writes it beside the checkpoint
(``<name>.train.pt``), so an inference user never loads pickled training state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from teso.errors import TesoError
from teso.model.build import build_teso
from teso.model.config import TeSOConfig
from teso.model.teso import TeSO
from teso.utils.files import atomic_write

FORMAT_NAME = "teso-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(model: TeSO, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (atomically). ``extra`` must be JSON-serialisable."""
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise TesoError(f"save_checkpoint extra: must be JSON-serialisable ({exc})") from exc
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "extra": extra_json,
        # HF module names (hence tensor keys) can change between transformers releases.
        "transformers_version": transformers.__version__,
    }
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_checkpoint_metadata(path: str | os.PathLike) -> tuple[TeSOConfig, dict[str, Any]]:
    """The config and extra of a checkpoint, checked for format and version, without the weights."""
    path = Path(path)
    if not path.is_file():
        raise TesoError(f"{path}: checkpoint not found (expected a .safetensors file from save_checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT_NAME:
        raise TesoError(f"{path}: not a TeSO checkpoint (metadata format {meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise TesoError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this teso reads version "
            f"{FORMAT_VERSION}"
        )
    try:
        config_dict = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise TesoError(f"{path}: checkpoint metadata config/extra is not valid JSON ({exc})") from exc
    return TeSOConfig.from_dict(config_dict), extra


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[TeSO, dict]:
    """Rebuild the model from the checkpoint alone; returns ``(model in eval mode, extra)``.

    Raises TesoError on a missing/unreadable file, a wrong format version, or any missing,
    unexpected or mis-shaped tensor (the message lists them).
    """
    path = Path(path)
    config, extra = read_checkpoint_metadata(path)
    model = build_teso(config, load_pretrained=False)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        keys = set(f.keys())
        missing = sorted(set(expected) - keys)
        unexpected = sorted(keys - set(expected))
        saved_with = (f.metadata() or {}).get("transformers_version", "unknown")
        if missing or unexpected:
            hint = (
                f" (saved with transformers {saved_with}, running {transformers.__version__}: "
                "HF module names differ between these releases)"
                if saved_with != transformers.__version__
                else ""
            )
            raise TesoError(
                f"{path}: checkpoint does not match its config: missing keys {_few(missing)}, "
                f"unexpected keys {_few(unexpected)}{hint}"
            )
        state = {k: f.get_tensor(k) for k in keys}
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise TesoError(f"{path}: checkpoint tensors have wrong shapes: {_few(wrong)}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), extra


def training_state_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where the optimizer state of ``checkpoint_path`` lives: ``<stem>.train.pt`` beside it."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".train.pt")


def save_training_state(checkpoint_path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save optimizer / scheduler / RNG state (any ``torch.save``-able dict) beside a checkpoint."""
    return atomic_write(training_state_path(checkpoint_path), lambda tmp: torch.save(state, tmp))


def load_training_state(checkpoint_path: str | os.PathLike) -> dict[str, Any]:
    """Read what ``save_training_state`` wrote (it holds pickled optimizer state: trusted files only)."""
    path = training_state_path(checkpoint_path)
    if not path.is_file():
        raise TesoError(f"{path}: training state not found (written by save_training_state)")
    return torch.load(path, map_location="cpu", weights_only=False)


def _few(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
