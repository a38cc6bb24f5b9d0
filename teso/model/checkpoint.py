"""TeSO checkpoints: one safetensors file of weights, config and a content hash; training state beside it.

Weights file (``.safetensors``, format version 2). Metadata (string → string): ``format``
("teso-checkpoint"), ``format_version``, ``transformers_version``, ``config`` (the
``TeSOConfig.to_dict()`` JSON), ``extra`` (caller's JSON: epoch, metrics, ...), ``frozen`` (JSON, see
below), ``metadata_sha256`` and ``content_sha256``. Tensors: the model's ``state_dict()``, except
frozen foundation weights that have a source:

- **Small checkpoints.** A frozen part with a source — the Mask2Former when ``freeze_foundation`` is
  set and ``visual.pretrained`` names a directory or hub id; a frozen audio encoder with
  ``audio.weights`` — is stored by identity: ``frozen[part] = {"source", "sha256", "tensors",
  "bytes"}``, where ``sha256`` hashes those frozen tensors (names, dtypes, shapes, bytes). Loading
  rebuilds the part from its source and refuses other weights (``FoundationMismatchError``, naming
  the checkpoint, the source and both hashes). What trains — adapters, class head, projections,
  SeDAM, PMQS, any unfrozen weight — and every buffer are always in the file. ``full=True`` (or a
  frozen part without a source, i.e. random) stores the part's tensors too.
- **Integrity.** ``content_sha256`` = sha256 over the metadata (all keys but itself, canonical JSON)
  and every tensor (name, dtype, shape, bytes, in name order): it covers the header's meaning and
  the data, so a flipped or zeroed byte anywhere is a one-line ``CheckpointIntegrityError`` at load
  (a byte that breaks the header's structure is a "not a readable safetensors checkpoint" error).
  ``metadata_sha256`` (the metadata alone) is checked by every read, ``read_checkpoint_metadata``
  included, so no damaged config is ever acted on.
  Hashing is one pass over the bytes (a full 0.76 GB swin-base-ade state: 2.3 s on the busy 2-core
  development machine; docs/engine.md).
- Tensor keys are the HF module names of the installed transformers; a checkpoint loads under a
  release with the same module layout (the Swin layout changed between 5.0 and 5.23).

Training state (``<stem>.train.pt``, written by ``save_training_state`` / ``save_checkpoint_pair``):
a magic line, a JSON line ``{"sha256", "bytes", "weights_sha256"}`` and a ``torch.save`` payload
(optimiser, scheduler, RNG, position: pickled, so trusted files only). ``weights_sha256`` ties it
to the weights file it was written with.

``save_checkpoint_pair`` replaces weights + training state (+ copies such as ``best.safetensors``)
as one unit (``teso.utils.files.replace_together``): after a crash or a failed write at any byte,
``recover_checkpoint_pair`` leaves the last complete pair. Format version 1 files (before hashes)
still load, with a warning that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open

from teso.errors import TesoError
from teso.model.build import build_teso
from teso.model.config import TeSOConfig
from teso.model.foundation_sources import candidates, find, is_local, searched_list, weights_sha256
from teso.model.teso import TeSO
from teso.utils.files import (
    DiskFullError,
    FileWriteError,
    Sink,
    recover_together,
    replace_together,
)
from teso.utils.state_dict import shape_mismatches

FORMAT_NAME = "teso-checkpoint"
FORMAT_VERSION = 2
_READABLE_VERSIONS = ("1", str(FORMAT_VERSION))  # 1: before content hashes and small checkpoints
HASH_KEY = "content_sha256"
META_HASH_KEY = "metadata_sha256"  # the metadata alone: checked by every read, even without tensors
STATE_MAGIC = b"TESO-TRAINING-STATE 2\n"


class CheckpointIntegrityError(TesoError):
    """A checkpoint or training state whose bytes are not those written at save time."""


class CheckpointWriteError(TesoError):
    """A checkpoint could not be written (disk full, I/O error); the previous one is kept."""


class FoundationMismatchError(TesoError):
    """A small checkpoint's frozen foundation cannot be used: found nowhere, or found holding other
    weights than at save time, or other tensors than the checkpoint's model has."""


# safetensors dtype names (the format's spec)
_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class _Part:
    """A foundation part whose frozen weights a small checkpoint stores by identity."""

    name: str
    prefix: str  # TeSO state_dict prefix of the part's own module
    option: str  # the config key naming its source
    source: Callable[[TeSOConfig], str | None]
    load: Callable[[TeSOConfig], dict[str, torch.Tensor]]  # the source's tensors, module-local keys


def _load_visual(config: TeSOConfig) -> dict[str, torch.Tensor]:
    from teso.model.foundation import load_mask2former

    return load_mask2former(config.visual, config.num_classes, load_pretrained=True).state_dict()


def _load_audio(config: TeSOConfig) -> dict[str, torch.Tensor]:
    from teso.model.audio_encoder import AudioEncoder

    return AudioEncoder(config.audio, load_weights=True).net.state_dict()


_PARTS = {
    p.name: p
    for p in (
        _Part("visual", "foundation.m2f.", "visual.pretrained", lambda c: c.visual.pretrained, _load_visual),
        _Part("audio", "audio_encoder.net.", "audio.weights", lambda c: c.audio.weights, _load_audio),
    )
}


# ----- hashing -------------------------------------------------------------------------------------
def _dtype_name(t: torch.Tensor, key: str) -> str:
    try:
        return _ST_DTYPES[t.dtype]
    except KeyError:
        raise TesoError(f"checkpoint tensor {key}: dtype {t.dtype} is not supported") from None


def _raw(t: torch.Tensor) -> memoryview:
    """The bytes of contiguous CPU tensor ``t`` (little-endian, as safetensors stores them)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _hash_tensors(h: Any, tensors: Mapping[str, torch.Tensor], keys: Iterable[str]) -> None:
    for key in keys:
        t = tensors[key].detach()
        t = (t.cpu() if t.device.type != "cpu" else t).contiguous()
        h.update(f"{key}\0{_dtype_name(t, key)}\0{list(t.shape)}\0{t.numel() * t.element_size()}\n".encode())
        h.update(_raw(t))


def tensors_sha256(tensors: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None) -> str:
    """sha256 over ``keys`` (default all) of ``tensors`` in name order: names, dtypes, shapes, bytes."""
    h = hashlib.sha256(b"teso-tensors v1\n")
    _hash_tensors(h, tensors, sorted(tensors if keys is None else keys))
    return h.hexdigest()


def metadata_sha256(metadata: Mapping[str, str]) -> str:
    """The ``metadata_sha256`` of this metadata (both hash keys left out)."""
    meta = {k: v for k, v in metadata.items() if k not in (HASH_KEY, META_HASH_KEY)}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_sha256(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> str:
    """The ``content_sha256`` of a checkpoint with this metadata and these tensors (the metadata's
    own ``content_sha256`` is left out)."""
    h = hashlib.sha256(b"teso-checkpoint-content v2\n")
    meta = {k: v for k, v in metadata.items() if k != HASH_KEY}
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    _hash_tensors(h, tensors, sorted(tensors))
    return h.hexdigest()


# ----- what a checkpoint holds ---------------------------------------------------------------------
def _frozen_keys(model: TeSO, part: _Part) -> list[str]:
    """Names of ``part``'s frozen parameters (buffers are always saved: they are small)."""
    return sorted(n for n, p in model.named_parameters() if n.startswith(part.prefix) and not p.requires_grad)


def _contents(
    model: TeSO, extra: dict[str, Any] | None, full: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise TesoError(f"save_checkpoint extra: must be JSON-serialisable ({exc})") from exc
    state = model.state_dict()
    frozen: dict[str, dict[str, Any]] = {}
    by_reference: set[str] = set()
    for part in _PARTS.values():
        source = part.source(model.config)
        keys = _frozen_keys(model, part)
        if full or source is None or not keys:
            continue
        frozen[part.name] = {
            "source": str(source),
            "sha256": tensors_sha256(state, keys),
            "tensors": len(keys),
            "bytes": sum(state[k].numel() * state[k].element_size() for k in keys),
        }
        weights_hash = weights_sha256(part.name, str(source))
        if weights_hash is not None:  # the key that finds the foundation again wherever it moved
            frozen[part.name]["weights_sha256"] = weights_hash
        by_reference.update(keys)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in by_reference}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "extra": extra_json,
        # HF module names (hence tensor keys) can change between transformers releases.
        "transformers_version": transformers.__version__,
        "frozen": json.dumps(frozen),
    }
    metadata[META_HASH_KEY] = metadata_sha256(metadata)
    metadata[HASH_KEY] = content_sha256(metadata, tensors)
    return tensors, metadata


def _safetensors_plan(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[int, Callable[[Sink], None]]:
    """(file size, writer) of the safetensors file of ``tensors`` + ``metadata``, streamed tensor by
    tensor (no second copy of the weights in memory). Layout per the format: u64 little-endian
    header length, JSON header padded with spaces to 8 bytes, then the data in header order."""
    order = sorted(tensors)
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for key in order:
        t = tensors[key]
        n = t.numel() * t.element_size()
        header[key] = {
            "dtype": _dtype_name(t, key),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 8)
    head = struct.pack("<Q", len(js)) + js

    def write(sink: Sink) -> None:
        sink.write(head)
        for key in order:
            if tensors[key].numel():
                sink.write(_raw(tensors[key]))

    return len(head) + offset, write


def _state_plan(state: dict[str, Any], weights_sha256: str | None) -> tuple[int, Callable[[Sink], None]]:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    head = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "weights_sha256": weights_sha256,
    }
    head_bytes = STATE_MAGIC + json.dumps(head).encode("utf-8") + b"\n"

    def write(sink: Sink) -> None:
        sink.write(head_bytes)
        sink.write(payload)

    return len(head_bytes) + len(payload), write


# ----- saving --------------------------------------------------------------------------------------
def training_state_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where the optimizer state of ``checkpoint_path`` lives: ``<stem>.train.pt`` beside it."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".train.pt")


def commit_journal_path(checkpoint_path: str | os.PathLike) -> Path:
    """The journal of ``save_checkpoint_pair`` (present only while a pair is being switched)."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".commit.json")


def save_checkpoint(
    model: TeSO, path: str | os.PathLike, extra: dict[str, Any] | None = None, *, full: bool = False
) -> Path:
    """Write ``model`` to ``path`` atomically. ``extra`` must be JSON-serialisable. ``full=True``
    stores frozen foundation weights too (a file that needs no foundation directory to load).

    Raises CheckpointWriteError (disk full: the file, the bytes needed and free) with ``path``
    untouched."""
    path = Path(path)
    tensors, metadata = _contents(model, extra, full)
    size, write = _safetensors_plan(tensors, metadata)
    _write_unit(path, [(path, size, write)])
    return path


def save_checkpoint_pair(
    model: TeSO,
    path: str | os.PathLike,
    extra: dict[str, Any] | None,
    state: dict[str, Any],
    copies: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write the weights to ``path``, ``state`` to ``training_state_path(path)`` and the same weights
    to every path of ``copies`` (same directory), replaced as one unit: a failure or a crash at any
    byte leaves the previous complete set (or, once committed, the new one after
    ``recover_checkpoint_pair``). The state records the weights' content hash, so a mixed pair is
    refused by ``load_training_state``."""
    path = Path(path)
    tensors, metadata = _contents(model, extra, full=False)
    size, write = _safetensors_plan(tensors, metadata)
    state_size, state_write = _state_plan(state, metadata[HASH_KEY])
    files = [(path, size, write), (training_state_path(path), state_size, state_write)]
    files += [(Path(c), size, write) for c in copies]
    _write_unit(path, files)
    return path


def recover_checkpoint_pair(path: str | os.PathLike, copies: Sequence[str | os.PathLike] = ()) -> str | None:
    """Complete (journal present) or discard (no journal: ``.new`` files) an interrupted
    ``save_checkpoint_pair`` of ``path``; see ``teso.utils.files.recover_together``."""
    path = Path(path)
    targets = [path, training_state_path(path), *map(Path, copies)]
    return recover_together(commit_journal_path(path), targets)


def save_training_state(checkpoint_path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save optimizer / scheduler / RNG state (any ``torch.save``-able dict) beside a checkpoint,
    atomically, with its content hash (not tied to a weights file: ``save_checkpoint_pair`` is)."""
    path = training_state_path(checkpoint_path)
    size, write = _state_plan(state, None)
    _write_unit(path, [(path, size, write)])
    return path


def _write_unit(primary: Path, files: list[tuple[Path, int, Callable[[Sink], None]]]) -> None:
    try:
        replace_together(commit_journal_path(primary), files)
    except (DiskFullError, FileWriteError) as exc:
        raise CheckpointWriteError(f"{exc}; {_kept(primary)}") from exc


def _kept(primary: Path) -> str:
    if not primary.is_file():
        return f"no earlier {primary.name} exists and nothing was replaced"
    try:
        _, extra = read_checkpoint_metadata(primary)
        step = f" (step {extra['step']})" if isinstance(extra, dict) and "step" in extra else ""
    except TesoError:
        step = ""
    return (
        f"the previous {primary.name}{step} is kept unchanged (free space, then --resume continues from it)"
    )


# ----- loading -------------------------------------------------------------------------------------
def _read_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise TesoError(f"{path}: checkpoint not found (expected a .safetensors file from save_checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT_NAME:
        raise TesoError(f"{path}: not a TeSO checkpoint (metadata format {meta.get('format')!r})")
    if meta.get("format_version") not in _READABLE_VERSIONS:
        raise TesoError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this teso reads versions "
            f"{', '.join(_READABLE_VERSIONS)}"
        )
    if meta["format_version"] != "1":
        want, got = meta.get(META_HASH_KEY), metadata_sha256(meta)
        if got != want:
            raise CheckpointIntegrityError(
                f"{path}: corrupt checkpoint: metadata sha256 {got[:16]}… differs from the "
                f"{str(want)[:16]}… written at save time (the header changed after it was written: disk, "
                "copy or transfer damage); restore it from a copy"
            )
    return meta


def read_checkpoint_metadata(path: str | os.PathLike) -> tuple[TeSOConfig, dict[str, Any]]:
    """The config and extra of a checkpoint, checked for format and version, without the weights
    (nor their hash: ``load_checkpoint`` verifies that)."""
    path = Path(path)
    meta = _read_metadata(path)
    try:
        config_dict = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise TesoError(f"{path}: checkpoint metadata config/extra is not valid JSON ({exc})") from exc
    return TeSOConfig.from_dict(config_dict), extra


def _frozen_record(meta: Mapping[str, str], path: Path) -> dict[str, dict[str, Any]]:
    try:
        frozen = json.loads(meta.get("frozen", "{}"))
    except json.JSONDecodeError as exc:
        raise TesoError(f"{path}: checkpoint metadata frozen is not valid JSON ({exc})") from exc
    unknown = sorted(set(frozen) - set(_PARTS))
    if unknown:
        raise TesoError(
            f"{path}: frozen parts {unknown} are unknown to this teso (expected {sorted(_PARTS)})"
        )
    return frozen


def _verified_tensors(path: Path, meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Every tensor of the file (CPU), after checking them against ``content_sha256``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format_version") == "1":
        warnings.warn(
            f"{path}: format version 1 checkpoint (written before content hashes): bytes not verified",
            stacklevel=3,
        )
        return state
    want = meta.get(HASH_KEY)
    if not want:
        raise CheckpointIntegrityError(f"{path}: no {HASH_KEY} in its metadata (format version 2 has one)")
    got = content_sha256(meta, state)
    if got != want:
        raise CheckpointIntegrityError(
            f"{path}: corrupt checkpoint: content sha256 {got[:16]}… differs from the {want[:16]}… written "
            "at save time (the file changed after it was written: disk, copy or transfer damage); "
            "restore it from a copy"
        )
    return state


def _set_source(config: TeSOConfig, name: str, source: str) -> None:
    if name == "visual":
        config.visual.pretrained = source
    else:
        config.audio.weights = source


def _fill_from_sources(
    model: TeSO,
    frozen: Mapping[str, Any],
    path: Path,
    *,
    foundations: Sequence[str | os.PathLike] = (),
    data_root: str | os.PathLike | None = None,
) -> None:
    """Find each frozen part of the small checkpoint at ``path`` (``teso.model.foundation_sources``),
    load it into ``model`` and point ``model.config`` at it (an absolute path).

    Each candidate is loaded and its frozen tensors hashed as the checkpoint hashed them; the first
    that matches is kept. None found: one line naming the recorded source, the places searched and
    ``--foundations DIR``. Found only with other weights: they stay in ``model`` for ``_load_into`` to
    refuse naming both hashes."""
    for name, record in frozen.items():
        part = _PARTS[name]
        recorded = str(record.get("source") or part.source(model.config) or "")
        weights_hash = record.get("weights_sha256")
        if name == "visual" and weights_hash is None and not is_local(recorded):
            found = [recorded]  # a hub id: the hub loader finds it
        else:
            found = find(
                name, recorded, weights_hash, checkpoint=path, search=foundations, data_root=data_root
            )
        if not found:
            looked = candidates(
                name, recorded, weights_hash, checkpoint=path, search=foundations, data_root=data_root
            )
            what = (
                f"weights sha256 {weights_hash[:16]}…"
                if weights_hash
                else "older checkpoint, no weights hash"
            )
            raise FoundationMismatchError(
                f"{path}: its frozen {name} foundation {recorded} ({what}) was not found; looked in "
                f"{searched_list(looked)}; pass --foundations DIR (the folder holding it, e.g. a run's "
                "synthavs/foundations) or copy it back"
            )
        keys = _frozen_keys(model, part)
        local = {k: k[len(part.prefix) :] for k in keys}
        chosen: tuple[str, dict[str, torch.Tensor]] | None = None
        for cand in found:
            source = cand if isinstance(cand, str) else str(Path(cand).resolve())
            _set_source(model.config, name, source)
            try:
                source_state = part.load(model.config)
            except TesoError as exc:
                if len(found) == 1:
                    raise TesoError(f"{path}: stores its frozen {name} weights by reference; {exc}") from exc
                continue  # not loadable as this part: try the next candidate
            if any(src not in source_state for src in local.values()):
                if len(found) == 1:
                    missing = [src for src in local.values() if src not in source_state]
                    raise FoundationMismatchError(
                        f"{path}: {part.option}={source} lacks frozen {name} tensors "
                        f"{_few(missing)} of this checkpoint's model"
                    )
                continue
            view = {key: source_state[src] for key, src in local.items()}
            if tensors_sha256(view, keys) == record.get("sha256"):
                chosen = (source, view)
                break
            chosen = chosen or (source, view)  # the first loadable one: _load_into names both hashes
        if chosen is None:
            raise FoundationMismatchError(
                f"{path}: no candidate for its frozen {name} foundation {recorded} could be loaded "
                f"({searched_list(found)})"
            )
        source, view = chosen
        _set_source(model.config, name, source)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, tensor in view.items():
                if tuple(tensor.shape) != tuple(params[key].shape):
                    raise FoundationMismatchError(
                        f"{path}: {part.option}={source}: tensor {local[key]} has shape "
                        f"{tuple(tensor.shape)}, the checkpoint's model {tuple(params[key].shape)}"
                    )
                params[key].copy_(tensor)


def load_checkpoint_into(model: TeSO, path: str | os.PathLike) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``model`` (built from the same config), strictly; returns
    its extra. The file's content hash is verified; a small checkpoint's frozen parts are not in
    the file and must already be in ``model`` with the hash recorded at save time.

    Raises CheckpointIntegrityError (bytes changed), FoundationMismatchError (other frozen weights),
    TesoError (missing / unexpected / mis-shaped tensors, unreadable file)."""
    path = Path(path)
    meta = _read_metadata(path)
    state = _verified_tensors(path, meta)
    _load_into(model, path, meta, state)
    return _extra(meta, path)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    foundations: Sequence[str | os.PathLike] = (),
    data_root: str | os.PathLike | None = None,
) -> tuple[TeSO, dict]:
    """Rebuild the model from the checkpoint; returns ``(model in eval mode, extra)``.

    A full checkpoint needs nothing else; a small one finds its frozen parts by their recorded hashes
    (:func:`_fill_from_sources`: ``foundations`` folders first, then the recorded path, the folders
    above the checkpoint, ``data_root`` and the user cache) and checks their tensors' hash.
    Raises TesoError on a missing/unreadable file, a wrong format version, changed bytes, other
    foundation weights, or any missing, unexpected or mis-shaped tensor (the message lists them).
    """
    path = Path(path)
    meta = _read_metadata(path)
    state = _verified_tensors(path, meta)  # before the config is read: damage is named as such
    config, extra = read_checkpoint_metadata(path)
    frozen = _frozen_record(meta, path)
    model = build_teso(config, load_pretrained=False)
    _fill_from_sources(model, frozen, path, foundations=foundations, data_root=data_root)
    _load_into(model, path, meta, state)
    return model.to(map_location).eval(), extra


def _extra(meta: Mapping[str, str], path: Path) -> dict[str, Any]:
    try:
        return json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError as exc:
        raise TesoError(f"{path}: checkpoint metadata extra is not valid JSON ({exc})") from exc


def _load_into(model: TeSO, path: Path, meta: Mapping[str, str], state: dict[str, torch.Tensor]) -> None:
    frozen = _frozen_record(meta, path)
    current = model.state_dict()
    by_reference: set[str] = set()
    for name, record in frozen.items():
        part = _PARTS[name]
        keys = _frozen_keys(model, part)
        digest = tensors_sha256(current, keys)
        if digest != record.get("sha256"):
            raise FoundationMismatchError(
                f"{path}: trained on frozen {name} weights {record.get('source')} (sha256 "
                f"{str(record.get('sha256'))[:16]}…, {record.get('tensors')} tensors), but {part.option}="
                f"{part.source(model.config)} holds other weights (sha256 {digest[:16]}…, {len(keys)} "
                f"tensors); the checkpoint's adapters and heads fit the former: point {part.option} at it"
            )
        by_reference.update(keys)
    expected = {k: v for k, v in current.items() if k not in by_reference}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        saved_with = meta.get("transformers_version", "unknown")
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
    wrong = shape_mismatches(state, expected)
    if wrong:
        raise TesoError(f"{path}: checkpoint tensors have wrong shapes: {_few(wrong)}")
    result = model.load_state_dict(state, strict=False)
    if set(result.missing_keys) != by_reference or result.unexpected_keys:  # the checks above forbid it
        raise RuntimeError(f"{path}: state dict load left {result}")


def load_training_state(checkpoint_path: str | os.PathLike) -> dict[str, Any]:
    """Read what ``save_training_state`` / ``save_checkpoint_pair`` wrote, after checking its hash
    and, when it records one, that ``checkpoint_path`` is the weights file it was written with.
    (It holds pickled optimizer state: trusted files only.)"""
    path = training_state_path(checkpoint_path)
    if not path.is_file():
        raise TesoError(f"{path}: training state not found (written by save_training_state)")
    with open(path, "rb") as f:
        magic = f.read(len(STATE_MAGIC))
        if magic != STATE_MAGIC:
            if magic.startswith(b"PK\x03\x04"):  # a bare torch.save zip: written before hashes
                warnings.warn(
                    f"{path}: training state written before content hashes: its bytes are not verified",
                    stacklevel=2,
                )
                return torch.load(path, map_location="cpu", weights_only=False)
            raise CheckpointIntegrityError(
                f"{path}: not a TeSO training state (unexpected first bytes {magic[:24]!r})"
            )
        try:
            head = json.loads(f.readline(4096))
            want, size, weights_sha = head["sha256"], int(head["bytes"]), head.get("weights_sha256")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise CheckpointIntegrityError(f"{path}: corrupt training state header ({exc})") from exc
        payload = f.read()
    if len(payload) != size:
        raise CheckpointIntegrityError(
            f"{path}: corrupt training state: {len(payload)} payload bytes, {size} written at save time"
        )
    got = hashlib.sha256(payload).hexdigest()
    if got != want:
        raise CheckpointIntegrityError(
            f"{path}: corrupt training state: content sha256 {got[:16]}… differs from the {want[:16]}… "
            "written at save time; restore it from a copy"
        )
    if weights_sha is not None:
        weights = Path(checkpoint_path)
        their = _read_metadata(weights).get(HASH_KEY) if weights.is_file() else None
        if their != weights_sha:
            raise CheckpointIntegrityError(
                f"{path}: written with weights of content sha256 {weights_sha[:16]}…, but {weights} "
                f"{'is missing' if their is None else f'has {their[:16]}…'}: the two do not belong together"
            )
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)


def _few(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
