"""Where a small checkpoint finds its frozen foundations, wherever it was moved.

A small checkpoint stores its frozen foundations by reference: the path in its config
(``visual.pretrained`` — a ``save_pretrained`` directory — and ``audio.weights`` — a safetensors
file) and, since this module exists, the sha256 of the foundation's weights file (``file_sha256``).
A path relative to the folder a run was started in stops working as soon as the user ``cd``s
elsewhere, moves the run folder or sends the checkpoint to a colleague; so the loader looks, in this
order, for a candidate whose weights file has the recorded hash:

1. the folders the user names (``--foundations DIR``): DIR itself, ``DIR/visual`` /
   ``DIR/audio.safetensors``, the same one level down (``DIR/*/``) and under ``DIR/foundations/*/``;
2. the recorded path as it is (absolute, or relative to the working folder);
3. the recorded path re-rooted at every folder above the checkpoint, dropping its leading parts one
   at a time (``runs/demo/synthavs/foundations/K/visual`` is found under a moved ``demo`` folder as
   ``synthavs/foundations/K/visual``);
4. the data root of the command (``teso eval CKPT DATA``): ``DATA/foundations/*/``;
5. the user cache, ``$TESO_CACHE/foundations/<sha256>/`` (default ``~/.cache/teso``; ``teso pretrain``
   registers there every foundation it builds).

A checkpoint written before ``file_sha256`` existed is resolved by path only (steps 1–4, first
existing candidate). Whatever is found, the loader then checks the frozen tensors' own hash as
before (``teso.model.checkpoint``): other weights are refused naming both hashes. Hub ids (not a
local path) are left to the hub loader.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from teso.errors import TesoError

KINDS = ("visual", "audio")
VISUAL_DIR = "visual"  # teso pretrain's names inside a foundation folder
AUDIO_FILE = "audio.safetensors"
VISUAL_WEIGHTS = "model.safetensors"  # what save_pretrained writes
CACHE_ENV = "TESO_CACHE"
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: a big file is hashed once


def cache_dir() -> Path:
    """``$TESO_CACHE``, else ``$XDG_CACHE_HOME/teso``, else ``~/.cache/teso``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "teso"


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


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised by path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def source_sha256(kind: str, source: str | None) -> str | None:
    """The ``file_sha256`` of a configured source, or None when it is not a local, existing one."""
    if not is_local(source):
        return None
    wf = weights_file(kind, Path(source).expanduser())
    return file_sha256(wf) if wf.is_file() else None


def _exists(kind: str, path: Path) -> bool:
    return weights_file(kind, path).is_file()


def _in_folder(kind: str, folder: Path) -> Iterator[Path]:
    name = VISUAL_DIR if kind == "visual" else AUDIO_FILE
    yield folder
    yield folder / name
    for sub in (folder, folder / "foundations"):
        if sub.is_dir():
            for child in sorted(sub.iterdir()):
                if child.is_dir():
                    yield child / name


def _rerooted(recorded: Path, checkpoint: Path) -> Iterator[Path]:
    parts = recorded.parts[1:] if recorded.is_absolute() else recorded.parts
    tails = [Path(*parts[i:]) for i in range(len(parts))]
    for ancestor in checkpoint.resolve().parents:
        for tail in tails:
            yield ancestor / tail


def candidates(
    kind: str,
    recorded: str,
    sha256: str | None,
    *,
    checkpoint: str | os.PathLike | None = None,
    search: Sequence[str | os.PathLike] = (),
    data_root: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Every place :func:`resolve` looks at, in order (not filtered; may repeat)."""
    rec = Path(recorded).expanduser()
    for folder in search:
        yield from _in_folder(kind, Path(folder).expanduser())
    yield rec
    if checkpoint is not None:
        yield from _rerooted(rec, Path(checkpoint))
    if data_root is not None:
        root = Path(data_root).expanduser()
        if (root / "foundations").is_dir():
            for child in sorted((root / "foundations").iterdir()):
                yield child / (VISUAL_DIR if kind == "visual" else AUDIO_FILE)
    if sha256:
        entry = cache_dir() / "foundations" / sha256
        yield entry / (VISUAL_DIR if kind == "visual" else AUDIO_FILE)


def resolve(
    kind: str,
    recorded: str,
    sha256: str | None,
    *,
    checkpoint: str | os.PathLike | None = None,
    search: Sequence[str | os.PathLike] = (),
    data_root: str | os.PathLike | None = None,
) -> Path | None:
    """The first candidate whose weights file has ``sha256`` (without a recorded hash: the first that
    exists); None when none matches. See the module docstring for the order."""
    seen: set[Path] = set()
    for cand in candidates(kind, recorded, sha256, checkpoint=checkpoint, search=search, data_root=data_root):
        try:
            key = cand.resolve()
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        if not _exists(kind, cand):
            continue
        if sha256 is None or file_sha256(weights_file(kind, cand)) == sha256:
            return cand
    return None


def register(kind: str, source: str | os.PathLike) -> Path:
    """Copy a foundation into the user cache under its ``file_sha256`` (once; atomic) and return the
    cached path: ``cache/foundations/<sha>/visual`` or ``.../audio.safetensors``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    source = Path(source)
    wf = weights_file(kind, source)
    if not wf.is_file():
        raise TesoError(f"{wf}: no such file (a {kind} foundation to register)")
    entry = cache_dir() / "foundations" / file_sha256(wf)
    target = entry / (VISUAL_DIR if kind == "visual" else AUDIO_FILE)
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


def searched_list(places: Iterable[Path], limit: int = 6) -> str:
    """A short human list of places, for error messages."""
    places = list(dict.fromkeys(str(p) for p in places))
    more = f" and {len(places) - limit} more" if len(places) > limit else ""
    return ", ".join(places[:limit]) + more
