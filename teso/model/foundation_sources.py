"""Where a small checkpoint finds its frozen foundations, wherever it was moved.

A small checkpoint stores its frozen foundations by reference: the path in its config
(``visual.pretrained`` — a ``save_pretrained`` directory — and ``audio.weights`` — a safetensors
file), the hash of the frozen tensors inside the model (``sha256``) and, since this module exists,
``weights_sha256``: the hash of the tensors of the foundation's weights file (names, dtypes, shapes,
bytes — not the file's bytes: safetensors orders its header metadata differently from one write to
the next, so equal tensors make unequal files). A path relative to the folder a run was started in
stops working as soon as the user ``cd``s elsewhere, moves the run folder or sends the checkpoint to
a colleague; so the loader looks, in this order, for a candidate whose weights have the recorded
hash:

1. the folders the user names (``--foundations DIR``): DIR itself, ``DIR/visual`` /
   ``DIR/audio.safetensors``, the same one level down (``DIR/*/``) and under ``DIR/foundations/*/``;
2. the recorded path as it is (absolute, or relative to the working folder);
3. the recorded path re-rooted at every folder above the checkpoint, dropping its leading parts one
   at a time down to two (``runs/demo/synthavs/foundations/K/visual`` is found under a moved ``demo``
   folder as ``synthavs/foundations/K/visual``);
4. the data root of the command (``teso eval CKPT DATA``): ``DATA/foundations/*/``;
5. the user cache, ``$TESO_CACHE/foundations/<sha256>/`` (default ``~/.cache/teso``; ``teso pretrain``
   registers there every foundation it builds).

A checkpoint written before ``weights_sha256`` existed (or a visual folder without a single
``model.safetensors``: sharded or ``.bin`` weights get no weights hash) is resolved by trying every
existing candidate of steps 1–4 against the frozen tensors' hash (``teso.model.checkpoint``). Other
weights are refused naming both hashes; hub ids (not a local path) are left to the hub loader.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teso.errors import TesoError

if TYPE_CHECKING:
    from teso.model.config import TeSOConfig

KINDS = ("visual", "audio")
VISUAL_DIR = "visual"  # teso pretrain's names inside a foundation folder
AUDIO_FILE = "audio.safetensors"
VISUAL_WEIGHTS = "model.safetensors"  # what save_pretrained writes
CACHE_ENV = "TESO_CACHE"
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> hash: a big file is hashed once


def cache_dir() -> Path:
    """``$TESO_CACHE``, else ``$XDG_CACHE_HOME/teso``, else ``~/.cache/teso``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().absolute() / "teso"


def weights_file(kind: str, source: str | os.PathLike) -> Path:
    """The file whose bytes identify a foundation: ``DIR/model.safetensors`` of a visual directory,
    the audio weights file itself."""
    source = Path(source)
    return source / VISUAL_WEIGHTS if kind == "visual" else source


def is_local(source: str | None) -> bool:
    """Whether a configured source names the file system (not a hub id such as ``facebook/x``)."""
    if not source:
        return False
    p = Path(source).expanduser()
    return p.exists() or p.is_absolute() or source.startswith((".", "~")) or len(p.parts) != 2


def weights_sha256(kind: str, source: str | os.PathLike | None) -> str | None:
    """The tensors' hash of a local foundation's weights file (memoised by path, size and modification
    time), or None when ``source`` is not a local, existing safetensors foundation."""
    if source is None or not is_local(str(source)):
        return None
    wf = weights_file(kind, Path(source).expanduser())
    try:
        st = wf.stat()
    except OSError:
        return None
    key = (str(wf.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from teso.model.checkpoint import tensors_sha256  # not at import time: checkpoint imports us

        try:
            _HASHES[key] = tensors_sha256(load_file(str(wf)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TesoError(f"{wf}: not a readable safetensors weights file ({exc})") from exc
    return _HASHES[key]


def _name(kind: str) -> str:
    """A foundation's name inside a foundation folder (and inside a cache entry)."""
    return VISUAL_DIR if kind == "visual" else AUDIO_FILE


def _exists(kind: str, path: Path) -> bool:
    return weights_file(kind, path).is_file()


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(c for c in folder.iterdir() if c.is_dir())
    except OSError:  # missing or unreadable: nothing to find there
        return []


def _in_folder(kind: str, folder: Path) -> Iterator[Path]:
    name = _name(kind)
    yield folder
    yield folder / name
    for sub in (folder, folder / "foundations"):
        for child in _children(sub):
            yield child / name


def _rerooted(recorded: Path, checkpoint: Path) -> Iterator[Path]:
    parts = recorded.parts[1:] if recorded.is_absolute() else recorded.parts
    # Tails of two parts at least: a bare "visual" or "audio.safetensors" in some folder above is not
    # evidence of anything.
    tails = [Path(*parts[i:]) for i in range(max(len(parts) - 1, 0))]
    for ancestor in Path(os.path.abspath(checkpoint)).parents:
        for tail in tails:
            yield ancestor / tail


def candidates(
    kind: str,
    recorded: str,
    weights_hash: str | None,
    *,
    checkpoint: str | os.PathLike | None = None,
    search: Sequence[str | os.PathLike] = (),
    data_root: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Every place :func:`find` looks at, in order (not filtered; may repeat)."""
    rec = Path(recorded).expanduser()
    name = _name(kind)
    for folder in search:
        yield from _in_folder(kind, Path(folder).expanduser())
    yield rec
    if checkpoint is not None:
        yield from _rerooted(rec, Path(checkpoint))
    if data_root is not None:
        for child in _children(Path(data_root).expanduser() / "foundations"):
            yield child / name
    if weights_hash:
        yield cache_dir() / "foundations" / weights_hash / name


def find(kind: str, recorded: str, weights_hash: str | None, **where: Any) -> list[Path]:
    """The candidates to load, best first; ``where``: the keyword arguments of :func:`candidates`
    (see the module docstring for the order).

    With a recorded ``weights_hash``: the first candidate whose weights have it (hashing stops
    there) — or, when none has, the recorded path alone if it exists (so that loading it names both
    hashes). Without: every existing candidate, for the caller to check against the frozen tensors'
    hash."""
    seen: set[str] = set()
    existing: list[Path] = []
    for cand in candidates(kind, recorded, weights_hash, **where):
        try:
            key = os.path.realpath(cand)
            present = _exists(kind, cand)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            continue
        if key in seen or not present:
            continue
        seen.add(key)
        if weights_hash is not None and weights_sha256(kind, cand) == weights_hash:
            return [cand]
        existing.append(cand)
    if weights_hash is None:
        return existing
    rec = Path(recorded).expanduser()
    return [rec] if _exists(kind, rec) else []


def register(kind: str, source: str | os.PathLike) -> Path:
    """Copy a foundation into the user cache under its :func:`weights_sha256` (once; atomic) and
    return the cached path: ``cache/foundations/<hash>/visual`` or ``.../audio.safetensors``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    source = Path(source)
    wf = weights_file(kind, source)
    if not wf.is_file():
        raise TesoError(f"{wf}: no such file (a {kind} foundation to register)")
    entry = cache_dir() / "foundations" / weights_sha256(kind, source)
    target = entry / _name(kind)
    if _exists(kind, target):
        return target
    entry.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".register-", dir=entry))
    try:
        staged = tmp / target.name
        if kind == "visual":
            shutil.copytree(source, staged)
        else:
            shutil.copy2(source, staged)
        try:
            os.rename(staged, target)
        except OSError:
            if not _exists(kind, target):  # another process registered it first: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_search_paths(paths: Sequence[str | os.PathLike]) -> None:
    """``--foundations`` values must exist: a typo is named, never silently searched in vain."""
    for p in paths:
        if not Path(p).expanduser().exists():
            raise TesoError(f"--foundations {p}: no such folder or file")


def searched_list(places: Iterable[Path], limit: int = 6) -> str:
    """A short human list of places, for error messages."""
    places = list(dict.fromkeys(str(p) for p in places))
    more = f" and {len(places) - limit} more" if len(places) > limit else ""
    return ", ".join(places[:limit]) + more


# ---- foundation.json: what `teso pretrain` records beside the foundations it builds

FORMAT_NAME = "teso-foundation"
RECORD_NAME = "foundation.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """A ``foundation.json`` written by ``teso pretrain`` (None where there is none)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TesoError(f"{path}: not valid JSON ({exc}); remove it to pre-train again") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise TesoError(f"{path}: not a teso foundation record (format {FORMAT_NAME!r} expected)")
    return record


def foundation_provenance(config: TeSOConfig) -> list[dict[str, Any]]:
    """The ``foundation.json`` records behind a model config: for ``visual.pretrained`` (a local
    directory) and, when the model has audio, ``audio.weights``, the record in the parent directory
    if there is one. Each entry is the record plus ``record`` (its path) and ``used_for`` (``visual``
    and/or ``audio``); a foundation not made by ``teso pretrain`` (a hub model, VGGish) adds nothing.
    """
    sources: list[tuple[str, Path]] = []
    if config.visual.pretrained is not None and Path(config.visual.pretrained).expanduser().is_dir():
        sources.append(("visual", Path(config.visual.pretrained).expanduser().resolve().parent))
    if config.ablation.audio and config.audio.weights is not None:
        weights = Path(config.audio.weights).expanduser()
        if weights.is_file():
            sources.append(("audio", weights.resolve().parent))
    entries: dict[Path, dict[str, Any]] = {}
    for role, folder in sources:
        path = folder / RECORD_NAME
        if path in entries:
            entries[path]["used_for"].append(role)
            continue
        record = read_record(path)
        if record is not None:
            entries[path] = dict(record, record=str(path), used_for=[role])
    return list(entries.values())
