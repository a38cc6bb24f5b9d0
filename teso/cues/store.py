"""The cue store: one folder per dataset and configuration, append-only JSONL files.

Layout (``ROOT/cues/<name>/``)::

    captions.jsonl      one record per (uid, frame) attempt of the captioner
    reasoning.jsonl     one record per (uid, frame) attempt of the reasoner
    features/<encoder>/ text features (see teso.cues.features)

Every line is a JSON object with ``uid``, ``frame`` (0-based index), ``status`` (``ok`` or
``failed``), ``error`` and ``provenance`` (stage, backend, model, prompt name, version and hash,
time). Caption records add ``caption``; reasoning records add ``raw`` (the reasoner's text, kept
whole), ``cues`` (parsed, normalised), ``malformed``, ``parse`` (``strict``/``tolerant``/null) and
``caption_sha`` (hash of the caption it read). Lines are appended one ``write`` + ``fsync`` each
(:func:`teso.utils.files.append_line`); for a key, the last record wins. A trailing line that does not
parse (a crash mid-append) is ignored by readers and cut off before the next append.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from teso.errors import TesoError
from teso.utils.files import append_line

Key = tuple[str, int]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def text_sha(text: str) -> str:
    """12 hex digits identifying a text (captions, cue lists)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    # With a final newline the split ends in b""; without one the last element is a partial line.
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                return  # a partial line from a crash during an append
            raise TesoError(f"{path}: line {i + 1} is not valid JSON ({err}); the store is damaged") from err
        if not isinstance(rec, dict) or "uid" not in rec or "frame" not in rec:
            raise TesoError(f"{path}: line {i + 1} is not a cue record (expected uid and frame)")
        yield rec


def _repair_tail(path: Path) -> None:
    """Cut a partial last line so the next append starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())


class CueStore:
    """Read and append the records of one store: ``CueStore(dataset_root, name)``."""

    def __init__(self, root: str | Path, name: str = "default") -> None:
        if not _NAME.match(name):
            raise TesoError(f"--store {name!r}: expected a folder name of letters, digits, '.', '_', '-'")
        self.root = Path(root)
        self.name = name
        self.dir = self.root / "cues" / name
        self.captions_path = self.dir / "captions.jsonl"
        self.reasoning_path = self.dir / "reasoning.jsonl"

    def features_dir(self, encoder: str) -> Path:
        return self.dir / "features" / encoder

    def _latest(self, path: Path) -> dict[Key, dict[str, Any]]:
        out: dict[Key, dict[str, Any]] = {}
        for rec in _read_jsonl(path):
            out[(str(rec["uid"]), int(rec["frame"]))] = rec
        return out

    def captions(self) -> dict[Key, dict[str, Any]]:
        """The latest caption record of every (uid, frame)."""
        return self._latest(self.captions_path)

    def reasoning(self) -> dict[Key, dict[str, Any]]:
        """The latest reasoning record of every (uid, frame)."""
        return self._latest(self.reasoning_path)

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        # Checked before every append (one seek): cheap next to a model call, and it also covers a
        # partial line left by another process that was killed while this one was running.
        _repair_tail(path)
        append_line(path, json.dumps(record, ensure_ascii=False, sort_keys=True))

    def append_caption(self, record: dict[str, Any]) -> None:
        self._append(self.captions_path, record)

    def append_reasoning(self, record: dict[str, Any]) -> None:
        self._append(self.reasoning_path, record)

    def cues(self) -> dict[Key, list[str]]:
        """Parsed cues of every frame whose latest reasoning succeeded (malformed answers give ``[]``)."""
        return {k: list(r.get("cues") or []) for k, r in self.reasoning().items() if r["status"] == "ok"}
