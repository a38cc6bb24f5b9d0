"""A dataset's identity for reports: which bytes the numbers were computed on.

- A SynthAVS tree (``synth.json`` at its root) is small: its identity hashes the content of every
  file under it, so two machines can check that they generated the very same bytes.
- Anything else (an AVSBench root, tens of GB) hashes its metadata CSVs and the listing of its files
  (relative path and size): instant, and it changes whenever a file is added, removed or resized.

Either way the top-level folders that runs write into a data root (``foundations``, ``cues``) are not
the dataset and are left out. (Not to be confused with ``teso.synthavs.foundations.dataset_hash``, the
foundations' cache key: ``synth.json`` + ``metadata.csv`` only.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from teso.errors import TesoError

RUN_FOLDERS = (
    "foundations",
    "cues",
)  # written into a SynthAVS root by pretrain / cue runs, not by the generator
CHUNK = 1 << 20


def _files(root: Path, skip_top: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    # followlinks: AVSBench trees are often assembled from symlinked folders
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return out


def dataset_identity(root: str | os.PathLike, *, content: bool | None = None) -> dict[str, Any]:
    """``{"root", "kind", "method", "files", "bytes", "sha256"}`` of the dataset at ``root``.

    ``content``: hash file contents (default: for SynthAVS only) or only names and sizes plus the
    bytes of the CSV files (the default elsewhere)."""
    root = Path(root)
    if not root.is_dir():
        raise TesoError(f"{root}: dataset root not found (expected a folder)")
    synth = (root / "synth.json").is_file()
    if content is None:
        content = synth
    files = _files(root, RUN_FOLDERS)
    h = hashlib.sha256(b"teso-dataset v1\n")
    total = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            size = path.stat().st_size  # a broken symlink fails here: named, not skipped
            total += size
            h.update(f"{rel}\0{size}\n".encode())
            if content or path.suffix.lower() == ".csv":
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
        except OSError as exc:
            raise TesoError(f"{path}: cannot read this dataset file ({exc})") from exc
    return {
        "root": str(root),
        "kind": "synthavs" if synth else "avsbench",
        "method": "content" if content else "csv+listing",
        "files": len(files),
        "bytes": total,
        "sha256": h.hexdigest(),
    }
