"""Text features of the cues: build them once, cache them on disk, load them for training.

For each frame, its cues (at most ``n_t``, in the reasoner's order) become sentences
``"This is a {cue}."``, are encoded to ``[n_t, d_T]`` and zero-padded; ``counts[t]`` says how many
rows are real (0 for a frame with no cue, e.g. ``Answer: none`` or a malformed answer).

Layout, under the store (``ROOT/cues/<store>/features/<encoder>/``)::

    index.json               {"encoder", "model", "dim", "n_t", "template", "version"}
    clips/<uid>.safetensors  "features" float32 [T, n_t, d_T], "counts" int64 [T];
                             metadata: uid, cues_sha (hash of the cue lists it was built from)

Each clip file is written atomically (:func:`teso.utils.files.atomic_write`), so an interrupted
``encode`` leaves only whole files; a re-run skips clips whose ``cues_sha`` still matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from teso.cues.store import CueStore, text_sha
from teso.errors import TesoError
from teso.utils.files import atomic_write, atomic_write_json

TEMPLATE = "This is a {cue}."
FEATURES_VERSION = "1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def cue_sentence(cue: str) -> str:
    return TEMPLATE.format(cue=cue)


def cues_sha(cues: list[list[str]], n_t: int) -> str:
    """Hash of what a clip file depends on: the frames' cue lists, n_t and the sentence template."""
    return text_sha(json.dumps({"cues": cues, "n_t": n_t, "template": TEMPLATE}, sort_keys=True))


def clip_file(features_dir: Path, uid: str) -> Path:
    # uids are YouTube ids plus a suffix; anything else is escaped so it cannot leave the folder.
    return features_dir / "clips" / f"{_SAFE.sub('_', uid)}.safetensors"


def build_clip_tensor(
    cues: list[list[str]], encoder, n_t: int, cache: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the cues of T frames: ``([T, n_t, d_T] float32, [T] int64 counts)``.

    ``cache`` (sentence -> ``[d_T]``) avoids re-encoding the same cue across clips ("man" is everywhere).
    """
    cache = {} if cache is None else cache
    kept = [frame[:n_t] for frame in cues]
    todo = sorted({cue_sentence(c) for frame in kept for c in frame} - cache.keys())
    if todo:
        for sent, vec in zip(todo, encoder.encode(todo)):
            cache[sent] = vec.float()
    feats = torch.zeros(len(kept), n_t, encoder.dim, dtype=torch.float32)
    counts = torch.zeros(len(kept), dtype=torch.int64)
    for t, frame in enumerate(kept):
        for j, cue in enumerate(frame):
            feats[t, j] = cache[cue_sentence(cue)]
        counts[t] = len(frame)
    return feats, counts


def write_index(features_dir: Path, encoder, n_t: int, force: bool = False) -> None:
    """Create ``index.json``, or check that an existing one matches this encoder and ``n_t``."""
    index = {"encoder": encoder.name, "model": encoder.model, "dim": int(encoder.dim), "n_t": int(n_t),
             "template": TEMPLATE, "version": FEATURES_VERSION}  # fmt: skip
    path = features_dir / "index.json"
    if path.exists() and not force:
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in index.items() if old.get(k) != v}
        if diff:
            raise TesoError(
                f"{path}: existing features were built differently ({diff}, old vs new); "
                "re-run with --force to rebuild them all, or use another --store"
            )
        return
    if force and (features_dir / "clips").is_dir():
        for f in (features_dir / "clips").glob("*.safetensors"):
            f.unlink()
    atomic_write_json(path, index)


def clip_is_current(path: Path, sha: str) -> bool:
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("cues_sha") == sha
    except Exception:  # a damaged file is simply rebuilt
        return False


def write_clip(path: Path, uid: str, feats: torch.Tensor, counts: torch.Tensor, sha: str) -> None:
    from safetensors.torch import save_file

    atomic_write(
        path,
        lambda tmp: save_file(
            {"features": feats.contiguous(), "counts": counts.contiguous()},
            str(tmp),
            metadata={"uid": uid, "cues_sha": sha},
        ),
    )


class TextFeatures:
    """Cached text features, read-only: ``TextFeatures.open(root, encoder="minilm", cues="default")``.

    ``get(uid)`` returns ``(features [T, n_t, d_T] float32, counts [T] int64)``; a uid without a file is
    a :class:`TesoError`, never random or zero features. :meth:`require` checks a whole list of uids
    up front and names the missing ones.
    """

    def __init__(self, features_dir: Path, index: dict) -> None:
        self.dir = features_dir
        self.index = index
        self.encoder: str = index["encoder"]
        self.model: str = index["model"]
        self.dim: int = int(index["dim"])
        self.n_t: int = int(index["n_t"])

    @classmethod
    def open(cls, root: str | Path, encoder: str = "minilm", cues: str = "default") -> TextFeatures:
        store = CueStore(root, cues)
        fdir = store.features_dir(encoder)
        path = fdir / "index.json"
        if not path.is_file():
            raise TesoError(
                f"{path}: no text features for encoder {encoder!r} in cue store {cues!r}; "
                f"run `teso cues encode {root} --store {cues} --encoder {encoder}` first"
            )
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise TesoError(f"{path}: cannot read the feature index ({err})") from err
        return cls(fdir, index)

    def path(self, uid: str) -> Path:
        return clip_file(self.dir, uid)

    def has(self, uid: str) -> bool:
        return self.path(uid).is_file()

    def missing(self, uids: Iterable[str]) -> list[str]:
        return [u for u in uids if not self.has(u)]

    def require(self, uids: Iterable[str]) -> None:
        """Raise a :class:`TesoError` naming every uid without features (the first 20 listed)."""
        miss = self.missing(uids)
        if miss:
            shown = ", ".join(miss[:20]) + (f" ... (+{len(miss) - 20} more)" if len(miss) > 20 else "")
            raise TesoError(
                f"{self.dir}: no text features for {len(miss)} clip(s): {shown}; "
                f"run `teso cues all` / `teso cues encode --encoder {self.encoder}` for them"
            )

    def get(self, uid: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [T, n_t, d_T] float32, counts [T] int64)`` of one clip."""
        from safetensors.torch import load_file

        path = self.path(uid)
        if not path.is_file():
            self.require([uid])
        tensors = load_file(str(path))
        feats, counts = tensors["features"], tensors["counts"]
        if feats.ndim != 3 or feats.shape[1:] != (self.n_t, self.dim) or counts.shape != feats.shape[:1]:
            raise TesoError(
                f"{path}: features {tuple(feats.shape)} / counts {tuple(counts.shape)} do not match "
                f"the index (expected [T, {self.n_t}, {self.dim}] and [T])"
            )
        return feats, counts
