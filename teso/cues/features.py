"""Text features of the cues: build them once, cache them on disk, load them for training.

For each frame, its cues (at most ``n_t``, in the reasoner's order: :mod:`teso.cues.slots`) become
sentences ``"This is a {cue}."``, are encoded to ``[n_t, d_T]`` and zero-padded; ``counts[t]`` says
how many rows are real (0 for a frame with no cue, e.g. ``Answer: none`` or a malformed answer).

Layout, under the store (``ROOT/cues/<store>/features/<encoder>/``)::

    index.json               {"encoder", "model", "weights_sha", "dim", "n_t", "template", "version"}
    clips/<uid>.safetensors  "features" float32 [T, n_t, d_T], "counts" int64 [T];
                             metadata: uid, cues_sha (hash of the cue lists it was built from),
                             content_sha (hash of uid, cues_sha and the tensors, checked at load)

Each clip file is written atomically (:func:`teso.utils.files.atomic_write`), so an interrupted
``encode`` leaves only whole files; a re-run skips clips whose ``cues_sha`` still matches and
rebuilds the stale ones. Only a missing or stale file is rebuilt: a file that cannot be read
(permissions, I/O) or is damaged is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from teso.cues.slots import fit_cue_slots, seen_cues
from teso.cues.store import CueStore, text_sha
from teso.errors import TesoError
from teso.utils.files import atomic_write, atomic_write_json

TEMPLATE = "This is a {cue}."
# 2: clip files carry content_sha and the index weights_sha; version-1 clips count as stale.
FEATURES_VERSION = "2"
_OLD_VERSIONS = ("1",)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_HEADER_MAX = 100_000_000  # safetensors' own limit on the JSON header


def cue_sentence(cue: str) -> str:
    return TEMPLATE.format(cue=cue)


def cues_sha(cues: list[list[str]], n_t: int) -> str:
    """Hash of what a clip file depends on: the frames' cue lists, n_t and the sentence template."""
    return text_sha(json.dumps({"cues": cues, "n_t": n_t, "template": TEMPLATE}, sort_keys=True))


def content_sha(uid: str, sha: str, feats: torch.Tensor, counts: torch.Tensor) -> str:
    """16 hex digits of a clip file's content: its uid, cues_sha and both tensors (dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps([uid, sha]).encode("utf-8"))
    for t in (feats, counts):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def encoder_weights_sha(encoder: Any) -> str:
    """16 hex digits identifying an encoder's weights: a hash of its ``net``'s state dict (names,
    dtypes, shapes, values); encoders without weights (``tiny``) are identified by name, model, dim."""
    net = getattr(encoder, "net", None)
    h = hashlib.sha256()
    if net is None:
        h.update(json.dumps([encoder.name, encoder.model, int(encoder.dim)]).encode("utf-8"))
    else:
        for name, t in sorted(net.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def clip_file(features_dir: Path, uid: str) -> Path:
    # uids are YouTube ids plus a suffix; anything else is escaped so it cannot leave the folder.
    return features_dir / "clips" / f"{_SAFE.sub('_', uid)}.safetensors"


def build_clip_tensor(
    cues: list[list[str]], encoder, n_t: int, cache: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the cues of T frames: ``([T, n_t, d_T] float32, [T] int64 counts)``.

    The slots follow :mod:`teso.cues.slots` (the model's rule). ``cache`` (sentence -> ``[d_T]``)
    avoids re-encoding the same cue across clips ("man" is everywhere).
    """
    cache = {} if cache is None else cache
    kept = [seen_cues(frame, n_t) for frame in cues]
    todo = sorted({cue_sentence(c) for frame in kept for c in frame} - cache.keys())
    if todo:
        for sent, vec in zip(todo, encoder.encode(todo)):
            cache[sent] = vec.float()
    longest = max([len(frame) for frame in kept] + [0])
    feats = torch.zeros(len(kept), longest, encoder.dim, dtype=torch.float32)
    counts = torch.zeros(len(kept), dtype=torch.int64)
    for t, frame in enumerate(kept):
        for j, cue in enumerate(frame):
            feats[t, j] = cache[cue_sentence(cue)]
        counts[t] = len(frame)
    padded, _ = fit_cue_slots(feats[None], counts[None], n_t)
    return padded[0], counts


def vocabulary_sha(vocab) -> str | None:
    """A short hash of a :class:`~teso.cues.parse.Vocabulary` (names and synonyms); None = no mapping."""
    if vocab is None:
        return None
    body = json.dumps({"names": list(vocab.names), "synonyms": vocab.synonyms}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def write_index(features_dir: Path, encoder, n_t: int, force: bool = False, vocab=None) -> None:
    """Create ``index.json``, or check that an existing one matches this encoder, ``n_t`` and
    vocabulary mapping (``encode --map-vocab``: ``vocab``, recorded as ``map_vocab``, its hash).

    An index of an older feature version with the same encoder and ``n_t`` is upgraded: its clips
    lack content hashes, so they count as stale and are rebuilt by this run.
    """
    index = {"encoder": encoder.name, "model": encoder.model, "weights_sha": encoder_weights_sha(encoder),
             "dim": int(encoder.dim), "n_t": int(n_t), "template": TEMPLATE,
             "map_vocab": vocabulary_sha(vocab), "version": FEATURES_VERSION}  # fmt: skip
    path = features_dir / "index.json"
    if path.exists() and not force:
        old = read_index(path)
        upgrade = old.get("version") in _OLD_VERSIONS
        skip = ("version", "weights_sha") if upgrade else ()
        diff = {k: (old.get(k), v) for k, v in index.items() if k not in skip and old.get(k) != v}
        if diff:
            raise TesoError(
                f"{path}: existing features were built differently ({diff}, old vs new); "
                "re-run with --force to rebuild them all, or use another --store"
            )
        if not upgrade:
            return
    if force and (features_dir / "clips").is_dir():
        for f in (features_dir / "clips").glob("*.safetensors"):
            f.unlink()
    atomic_write_json(path, index)


def read_index(path: Path) -> dict:
    """A feature ``index.json``; unreadable or not a JSON object: an error naming it."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TesoError(f"{path}: cannot read the feature index ({err})") from err
    if not isinstance(index, dict):
        raise TesoError(f"{path}: the feature index is not a JSON object")
    return index


def _damaged(path: Path, why: str) -> TesoError:
    return TesoError(
        f"{path}: damaged text-feature file ({why}); delete it and re-run `teso cues encode` to rebuild it"
    )


def _read_bytes(path: Path, size: int | None = None) -> bytes:
    """The file's bytes (the first ``size`` when given); an OS error is an error naming the file."""
    try:
        with open(path, "rb") as fh:
            return fh.read() if size is None else fh.read(size)
    except OSError as err:
        raise TesoError(f"{path}: cannot read the text-feature file ({err})") from err


def _header(path: Path, data: bytes) -> dict:
    """The JSON header of a safetensors file from (the start of) its bytes."""
    if len(data) < 8:
        raise _damaged(path, "shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > _HEADER_MAX or len(data) < 8 + n:
        raise _damaged(path, "header length beyond the file")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(path, f"header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise _damaged(path, "header is not a JSON object")
    return header


def clip_metadata(path: Path) -> dict | None:
    """The metadata of a clip file, reading only its header; None when the file does not exist."""
    if not path.exists():
        return None
    start = _read_bytes(path, 8)
    n = int.from_bytes(start[:8], "little") if len(start) == 8 else 0
    data = _read_bytes(path, 8 + min(n, _HEADER_MAX))
    meta = _header(path, data).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise _damaged(path, "metadata is not a JSON object")
    return meta


def clip_is_current(path: Path, sha: str) -> bool:
    """Whether a clip file exists and was built from these cues (``cues_sha``) by this feature
    version. Missing or stale: False (rebuild); unreadable or damaged: a :class:`TesoError`."""
    meta = clip_metadata(path)
    if meta is None or meta.get("cues_sha") != sha or "content_sha" not in meta:
        return False
    read_clip(path)  # a current header over damaged tensors must not pass as done (the file is small)
    return True


def write_clip(path: Path, uid: str, feats: torch.Tensor, counts: torch.Tensor, sha: str) -> None:
    from safetensors.torch import save_file

    feats, counts = feats.contiguous(), counts.contiguous()
    meta = {"uid": uid, "cues_sha": sha, "content_sha": content_sha(uid, sha, feats, counts)}
    atomic_write(path, lambda tmp: save_file({"features": feats, "counts": counts}, str(tmp), metadata=meta))


def read_clip(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, counts)`` of a clip file, its content hash checked: a damaged file is an error."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = _read_bytes(path)
    meta = _header(path, data).get("__metadata__") or {}
    if not isinstance(meta, dict) or "content_sha" not in meta:
        raise TesoError(
            f"{path}: written by an older teso without a content hash; re-run `teso cues encode` to "
            "rebuild it"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise _damaged(path, str(err)) from err
    if set(tensors) != {"features", "counts"}:
        raise _damaged(path, f"tensors {sorted(tensors)}, expected features and counts")
    feats, counts = tensors["features"], tensors["counts"]
    got = content_sha(str(meta.get("uid")), str(meta.get("cues_sha")), feats, counts)
    if got != meta["content_sha"]:
        raise _damaged(path, f"content hash {got} != {meta['content_sha']} written with it")
    return feats, counts


class TextFeatures:
    """Cached text features, read-only: ``TextFeatures.open(root, encoder="minilm", cues="default")``.

    ``get(uid)`` returns ``(features [T, n_t, d_T] float32, counts [T] int64)``; a uid without a file is
    a :class:`TesoError`, never random or zero features. :meth:`require` checks a whole list of uids
    up front and names the missing ones.
    """

    def __init__(self, features_dir: Path, index: dict, store: CueStore | None = None) -> None:
        self.dir = features_dir
        self.index = index
        self.store = store
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
        index = read_index(path)
        missing = [k for k in ("encoder", "model", "dim", "n_t") if k not in index]
        if missing:
            raise TesoError(f"{path}: the feature index lacks {missing}")
        return cls(fdir, index, store)

    def check_slots(self, num_cues: int) -> None:
        """The store must have as many cue slots per frame as the model (``text.num_cues``)."""
        if self.n_t != num_cues:
            name = self.store.name if self.store is not None else self.dir
            where = f" {self.store.root} --store {self.store.name}" if self.store is not None else " ROOT"
            raise TesoError(
                f"cue store {name!r} ({self.dir / 'index.json'}): features have {self.n_t} cue slots per "
                f"frame, but the model has text.num_cues = {num_cues}; re-encode with "
                f"`teso cues encode{where} --encoder {self.encoder} --n-t {num_cues} --force` or set "
                f"model.text.num_cues={self.n_t}"
            )

    def provenance(self) -> dict:
        """Where these features' cues come from (:func:`teso.cues.provenance.cue_provenance`)."""
        from teso.cues.provenance import cue_provenance

        if self.store is None:
            raise TesoError(f"{self.dir}: features opened without their cue store have no provenance")
        return cue_provenance(self.store, self.index)

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
        """``(features [T, n_t, d_T] float32, counts [T] int64)`` of one clip, its content hash checked."""
        path = self.path(uid)
        if not path.is_file():
            self.require([uid])
        feats, counts = read_clip(path)
        if feats.ndim != 3 or feats.shape[1:] != (self.n_t, self.dim) or counts.shape != feats.shape[:1]:
            raise TesoError(
                f"{path}: features {tuple(feats.shape)} / counts {tuple(counts.shape)} do not match "
                f"the index (expected [T, {self.n_t}, {self.dim}] and [T])"
            )
        return feats, counts
