"""AVSBench readers: the released (AVSBench-semantic) layout and the older AVSBench-object layouts.

Layouts (SPEC §5; docs/data.md has the full description):

``released``
    ``ROOT/metadata.csv`` (vid,uid,s_min,s_sec,a_obj,split,label), ``ROOT/label2idx.json``,
    ``ROOT/{label}/{uid}/audio.wav``, ``frames/{0..F-1}.jpg``, ``labels_rgb/{t}.png`` (palette colours),
    ``labels_semantic/{t}.png`` (class indices, optional). label v1s / v1m: 5 frames, v2: 10.
``s4-object``
    ``ROOT/s4_meta_data.csv`` (name,category,split); data under ``ROOT`` or ``ROOT/s4_data``:
    ``visual_frames/{split}/{category}/{name}/{name}_{1..5}.png``,
    ``gt_masks/{split}/{category}/{name}/{name}_{k}.png``, ``audio_wav/{split}/{category}/{name}.wav``.
``ms3-object``
    ``ROOT/ms3_meta_data.csv`` (the video id in the first column, then ``split``); data under ``ROOT``
    or ``ROOT/ms3_data``: ``visual_frames/{video_id}/{video_id}.mp4_{1..5}.png`` (one folder per
    video, no split level), ``gt_masks/{split}/{video_id}/{video_id}_{k}.png``,
    ``audio_wav/{split}/{video_id}.wav``.

The object layouts follow the AVSBench code (OpenNLPLab/AVSBench, read at commit 4d4c901):
``avs_scripts/avs_s4/dataloader.py`` + ``config.py`` and ``avs_scripts/avs_ms3/dataloader.py`` +
``config.py`` (the paths, frames ``1..5``, S4 train with mask ``_1`` only, the id read from the
CSV's column 0), ``preprocess_scripts/preprocess_s4.py`` (S4 CSV: column 0 the name, 1 the start
time, 2 ``category``, 3 ``split``; the last two are read by name) and
``preprocess_scripts/preprocess_ms3.py`` (MS3 frames named ``{video file name}_{k}.png`` with the file
name ``{video_id}.mp4``, saved in ``visual_frames/{video_id}/``; MS3 CSV columns id, split). Their
``audio_log_mel/*.pkl`` files are not read: teso computes the log-mel from ``audio_wav``.

Annotation rule: S4 train (label v1s, split train, in either layout) has only its first frame
annotated; every other clip has all frames annotated. Masks present beyond that rule are ignored.

Every rule that decides whether a clip is valid lives in :func:`inspect_clip`, which both the
Dataset (raising :class:`TesoError`) and ``teso data check`` (listing every problem) call.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from teso.data.palette import decode_colors
from teso.errors import TesoError

SUBSETS: tuple[str, ...] = ("v1s", "v1m", "v2")
SPLITS: tuple[str, ...] = ("train", "val", "test")
FRAMES_PER_SUBSET: dict[str, int] = {"v1s": 5, "v1m": 5, "v2": 10}
LAYOUTS: tuple[str, ...] = ("released", "s4-object", "ms3-object")
LAYOUT_CSV: dict[str, str] = {
    "released": "metadata.csv",
    "s4-object": "s4_meta_data.csv",
    "ms3-object": "ms3_meta_data.csv",
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "released": ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"),
    "s4-object": ("name", "category", "split"),
    # AVSBench's MS3Dataset takes the video id from column 0 (``df_one_video[0]``) and never names
    # it, so the first column is the id whatever its header says; only ``split`` is read by name.
    "ms3-object": ("split",),
}
ID_COLUMN: dict[str, str | None] = {"released": "uid", "s4-object": "name", "ms3-object": None}
SAMPLE_RATE = 16000
# Audio may end this much before the clip's last second: VGGish's example for second t reads only
# samples [t, t + 0.975 s), so up to 25 ms is never read and another 25 ms of zero padding (added by
# teso.audio.per_second_examples) is inaudible in a 0.96 s example. Anything shorter is reported.
AUDIO_TOLERANCE_S = 0.05
SOUNDFILE_SUFFIXES = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"}
)

_A_OBJ_SEPARATORS = re.compile(r"[,;|_\s]+")


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset tree; ``str()`` is the one-line ``"PATH: message"``."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ClipRecord:
    """Where the files of one clip are; nothing is read until :func:`inspect_clip`.

    Attributes:
        uid: clip id (released ``uid``, S4 ``name``, MS3 the first CSV column).
        label: ``v1s`` | ``v1m`` | ``v2`` (S4 maps to v1s, MS3 to v1m).
        split: ``train`` | ``val`` | ``test``.
        num_frames: ``T`` (frames at 1 fps, also the clip's seconds of audio).
        frame_paths: ``T`` paths.
        audio_path: the clip's wav.
        mask_paths: ``T`` entries, None where the frame is not annotated.
        semantic_paths: ``T`` entries (None where not annotated) when the clip has
            ``labels_semantic``, else None.
        a_obj: names of the sounding objects (released: parsed from ``a_obj``; S4: ``[category]``;
            MS3: ``[]``).
        clip_dir: the clip's own folder (released: ``ROOT/{label}/{uid}``; S4 and MS3: its
            ``visual_frames`` folder).
        mask_format: ``palette`` (AVSS colours; unknown colours are errors) or ``binary``
            (object layouts: any non-black pixel is foreground).
        layout: the layout the record came from.
    """

    uid: str
    label: str
    split: str
    num_frames: int
    frame_paths: list[Path]
    audio_path: Path
    mask_paths: list[Path | None]
    semantic_paths: list[Path | None] | None
    a_obj: list[str]
    clip_dir: Path
    mask_format: str = "palette"
    layout: str = "released"

    @property
    def annotated(self) -> list[bool]:
        """``T`` flags: True where the frame has a ground-truth mask."""
        return [p is not None for p in self.mask_paths]


@dataclass
class ClipArrays:
    """What :func:`inspect_clip` read from one clip.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8, or None when frames were only measured (headers).
        frame_size: ``(H, W)`` of the clip's frames.
        masks: ``[T, H, W]`` bool, False where not annotated.
        semantic: ``[T, H, W]`` int64 class indices (0 where not annotated), or None.
        audio: ``[N]`` float32 at 16 kHz, or None when only its length was measured.
        audio_seconds: the audio's duration.
    """

    frames: np.ndarray | None
    frame_size: tuple[int, int]
    masks: np.ndarray
    semantic: np.ndarray | None
    audio: np.ndarray | None
    audio_seconds: float


# ----------------------------------------------------------------------------------------------
# Layout, CSV and label2idx


def detect_layout(root: str | os.PathLike) -> str:
    """``'released'`` | ``'s4-object'`` | ``'ms3-object'`` from the metadata CSV found in ``root``.

    Raises:
        TesoError: ``root`` missing, or none (or more than one) of the metadata CSVs present.
    """
    root = Path(root)
    if not root.is_dir():
        raise TesoError(f"{root}: dataset root not found (expected a folder)")
    found = [layout for layout, name in LAYOUT_CSV.items() if (root / name).is_file()]
    if len(found) == 1:
        return found[0]
    looked = ", ".join(f"{name} ({layout} layout)" for layout, name in LAYOUT_CSV.items())
    if not found:
        raise TesoError(f"{root}: not an AVSBench tree: looked for {looked} and found none")
    raise TesoError(
        f"{root}: ambiguous AVSBench tree: found {', '.join(LAYOUT_CSV[f] for f in found)}; "
        "point at one subset's root"
    )


def _object_data_dir(root: Path, layout: str) -> Path:
    """AVSBench-object keeps its data in ``s4_data`` / ``ms3_data`` beside the CSV; a flat tree is allowed."""
    sub = root / ("s4_data" if layout == "s4-object" else "ms3_data")
    if not (root / "visual_frames").is_dir() and sub.is_dir():
        return sub
    return root


def parse_a_obj(text: str) -> list[str]:
    """``a_obj`` cell (as :mod:`csv` returns it, quotes already removed) -> sounding-object names.

    The AVSBench code never reads this column; the public readers of the released metadata.csv
    split it on ``_`` (``man_guitar``), SynthAVS writes it so, and hand-made CSVs quote commas
    (``"man, guitar"``): all are accepted. Names are separated by any of ``, ; | _`` or whitespace
    (AVSS class names use hyphens only, e.g. ``emergency-car``); brackets and quotes of a list
    literal are dropped; empty cells give ``[]``; duplicates are removed keeping the first occurrence.
    """
    cleaned = text.strip().strip("[]()").replace("'", " ").replace('"', " ")
    names: list[str] = []
    for part in _A_OBJ_SEPARATORS.split(cleaned):
        part = part.strip()
        if part and part not in names:
            names.append(part)
    return names


def _read_csv(
    path: Path, required: Sequence[str], hint: str = ""
) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[Problem]]:
    """``(header, [(line, row)], problems)``. Cells are stripped; blank lines are skipped; a row
    with more or fewer fields than the header is reported (``hint`` appended) and left out, since
    its cells cannot be matched to columns (e.g. an unquoted ``man, guitar`` a_obj cell)."""
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[Problem] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing or not header:
                return (
                    header,
                    [],
                    [
                        Problem(
                            path,
                            f"missing CSV column(s) {', '.join(missing or required)}; expected columns "
                            f"{','.join(required)}, found {','.join(header) or 'no header'}",
                        )
                    ],
                )
            line = reader.line_num
            for cells in reader:
                first, line = line + 1, reader.line_num  # a quoted cell may span lines
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    problems.append(
                        Problem(
                            path,
                            f"line {first}: {len(cells)} field(s), but the header has {len(header)}" + hint,
                        )
                    )
                    continue
                rows.append((first, {h: c.strip() for h, c in zip(header, cells)}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [], [Problem(path, f"not a readable CSV file ({exc})")]
    return header, rows, problems


def label2idx_problems(root: str | os.PathLike) -> tuple[dict[str, int] | None, list[Problem]]:
    """Read and validate ``ROOT/label2idx.json``: a JSON object name -> index, indices exactly
    ``0..n-1``, ``background`` at 0. Returns ``(mapping or None, problems)``."""
    path = Path(root) / "label2idx.json"
    if not path.is_file():
        return None, [Problem(path, "missing (expected a JSON object class name -> index, background = 0)")]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [Problem(path, f"not valid JSON ({exc})")]
    if not isinstance(data, dict) or not data:
        return None, [Problem(path, "expected a non-empty JSON object class name -> index")]
    problems: list[Problem] = []
    bad = [k for k, v in data.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        problems.append(
            Problem(path, f"indices must be integers; not so for {', '.join(map(repr, bad[:5]))}")
        )
        return None, problems
    indices = sorted(data.values())
    if indices != list(range(len(data))):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        gaps = sorted(set(range(len(data))) - set(indices))
        problems.append(
            Problem(
                path,
                f"indices must be exactly 0..{len(data) - 1} once each"
                + (f"; repeated: {dup[:10]}" if dup else "")
                + (f"; missing: {gaps[:10]}" if gaps else ""),
            )
        )
    if data.get("background") != 0:
        problems.append(Problem(path, f"'background' must have index 0, found {data.get('background')!r}"))
    return (None if problems else {str(k): int(v) for k, v in data.items()}), problems


def read_label2idx(root: str | os.PathLike) -> dict[str, int]:
    """``ROOT/label2idx.json`` validated (see :func:`label2idx_problems`). Raises TesoError."""
    mapping, problems = label2idx_problems(root)
    if problems or mapping is None:
        raise TesoError(str(problems[0]))
    return mapping


def _released_record(root: Path, row: dict[str, str]) -> ClipRecord:
    label, split, uid = row["label"], row["split"], row["uid"]
    clip_dir = root / label / uid
    n = FRAMES_PER_SUBSET[label]
    annotated = [t == 0 for t in range(n)] if (label == "v1s" and split == "train") else [True] * n
    sem_dir = clip_dir / "labels_semantic"
    return ClipRecord(
        uid=uid,
        label=label,
        split=split,
        num_frames=n,
        frame_paths=[clip_dir / "frames" / f"{t}.jpg" for t in range(n)],
        audio_path=clip_dir / "audio.wav",
        mask_paths=[clip_dir / "labels_rgb" / f"{t}.png" if annotated[t] else None for t in range(n)],
        semantic_paths=[sem_dir / f"{t}.png" if annotated[t] else None for t in range(n)]
        if sem_dir.is_dir()
        else None,
        a_obj=parse_a_obj(row["a_obj"]),
        clip_dir=clip_dir,
        mask_format="palette",
        layout="released",
    )


def _s4_record(data: Path, row: dict[str, str]) -> ClipRecord:
    name, category, split = row["name"], row["category"], row["split"]
    frame_dir = data / "visual_frames" / split / category / name
    mask_dir = data / "gt_masks" / split / category / name
    n = FRAMES_PER_SUBSET["v1s"]
    annotated_count = 1 if split == "train" else n
    return ClipRecord(
        uid=name,
        label="v1s",
        split=split,
        num_frames=n,
        frame_paths=[frame_dir / f"{name}_{k}.png" for k in range(1, n + 1)],
        audio_path=data / "audio_wav" / split / category / f"{name}.wav",
        mask_paths=[mask_dir / f"{name}_{k}.png" if k <= annotated_count else None for k in range(1, n + 1)],
        semantic_paths=None,
        a_obj=[category],
        clip_dir=frame_dir,
        mask_format="binary",
        layout="s4-object",
    )


def _ms3_record(data: Path, vid: str, split: str) -> ClipRecord:
    n = FRAMES_PER_SUBSET["v1m"]
    # preprocess_ms3.py saves frame k of raw_videos/{vid}.mp4 as "{vid}.mp4" + f"_{k}.png" in
    # visual_frames/{vid}/ (no split level); MS3Dataset reads it from there, masks per split.
    frame_dir = data / "visual_frames" / vid
    mask_dir = data / "gt_masks" / split / vid
    return ClipRecord(
        uid=vid,
        label="v1m",
        split=split,
        num_frames=n,
        frame_paths=[frame_dir / f"{vid}.mp4_{k}.png" for k in range(1, n + 1)],
        audio_path=data / "audio_wav" / split / f"{vid}.wav",
        mask_paths=[mask_dir / f"{vid}_{k}.png" for k in range(1, n + 1)],
        semantic_paths=None,
        a_obj=[],
        clip_dir=frame_dir,
        mask_format="binary",
        layout="ms3-object",
    )


def scan_clips(root: str | os.PathLike) -> tuple[str, list[ClipRecord], list[Problem]]:
    """Every clip the metadata CSV lists, and every problem of the CSV itself.

    Returns ``(layout, records, problems)``; rows with problems (unknown label or split, empty id,
    duplicate id) are reported and left out of ``records``.

    Raises:
        TesoError: when no layout can be detected (see :func:`detect_layout`).
    """
    root = Path(root)
    layout = detect_layout(root)
    csv_path = root / LAYOUT_CSV[layout]
    hint = (
        ' (an a_obj cell naming several objects with commas must be quoted, as in "man, guitar")'
        if layout == "released"
        else ""
    )
    header, rows, problems = _read_csv(csv_path, REQUIRED_COLUMNS[layout], hint)
    id_column = ID_COLUMN[layout] or (header[0] if header else "")
    if layout == "ms3-object" and id_column in ("split", ""):
        problems.append(
            Problem(
                csv_path,
                f"the first column must hold the video id (AVSBench reads it from column 0), "
                f"found {id_column or 'an empty header'!r}",
            )
        )
        rows = []
    data = root if layout == "released" else _object_data_dir(root, layout)
    records: list[ClipRecord] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        bad: list[str] = []
        if not row.get(id_column):
            bad.append(f"empty {id_column}")
        if row.get("split") not in SPLITS:
            bad.append(f"split {row.get('split')!r} is not one of {', '.join(SPLITS)}")
        if layout == "released" and row.get("label") not in SUBSETS:
            bad.append(f"label {row.get('label')!r} is not one of {', '.join(SUBSETS)}")
        if layout == "s4-object" and not row.get("category"):
            bad.append("empty category")
        key = f"{row.get('label', '')}/{row.get(id_column, '')}"
        if row.get(id_column) and key in seen:
            bad.append(f"{id_column} {row[id_column]!r} is listed again (first on line {seen[key]})")
        if bad:
            problems.append(Problem(csv_path, f"line {line}: {'; '.join(bad)}"))
            continue
        seen[key] = line
        if layout == "released":
            records.append(_released_record(root, row))
        elif layout == "s4-object":
            records.append(_s4_record(data, row))
        else:
            records.append(_ms3_record(data, row[id_column], row["split"]))
    return layout, records, problems


def _as_choice(values: str | Iterable[str] | None, allowed: Sequence[str], name: str) -> tuple[str, ...]:
    if values is None:
        return tuple(allowed)
    chosen = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise TesoError(f"{name}: expected some of {', '.join(allowed)}, got {', '.join(map(repr, chosen))}")
    return chosen


def list_clips(
    root: str | os.PathLike,
    subsets: str | Iterable[str] | None = None,
    splits: str | Iterable[str] | None = None,
) -> list[ClipRecord]:
    """The clips of ``root`` (any layout) with label in ``subsets`` and split in ``splits`` (None =
    all), in CSV order. Only the CSV is read; use :func:`inspect_clip` or ``teso data check`` for
    the files.

    Raises:
        TesoError: unknown subset/split names, no detectable layout, or a bad CSV (the first
            problem is named; ``teso data check ROOT`` lists them all).
    """
    want_subsets = _as_choice(subsets, SUBSETS, "subsets")
    want_splits = _as_choice(splits, SPLITS, "splits")
    _, records, problems = scan_clips(root)
    if problems:
        more = f" (and {len(problems) - 1} more; run `teso data check {root}`)" if len(problems) > 1 else ""
        raise TesoError(f"{problems[0]}{more}")
    return [r for r in records if r.label in want_subsets and r.split in want_splits]


# ----------------------------------------------------------------------------------------------
# Per-clip validation: the one place that decides what is wrong with a clip


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header only."""
    with Image.open(path) as img:
        w, h = img.size
    return h, w


def _read_binary_mask(path: Path) -> np.ndarray:
    """``[H, W]`` bool: any non-black pixel (after the palette, for P-mode images)."""
    with Image.open(path) as img:
        if img.mode in ("1", "L", "I", "I;16", "F"):
            return np.asarray(img) != 0
        return np.asarray(img.convert("RGB")).any(axis=-1)


def _read_rgb_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _read_index_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"expected a single-channel class-index PNG, found mode {img.mode}")
        return np.asarray(img).astype(np.int64)


def _audio_seconds(path: Path) -> float:
    """Duration from the header when soundfile can read it, else by decoding."""
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise TesoError(f"{path}: not a readable audio file ({exc})") from exc
        if info.frames <= 0:
            raise TesoError(f"{path}: the file contains no audio samples")
        return info.frames / float(info.samplerate)
    from teso.audio import load_audio

    return len(load_audio(path, target_sr=SAMPLE_RATE)) / SAMPLE_RATE


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def missing_frame_dir_message(record: ClipRecord) -> str:
    """What a clip whose frame folder is absent is told: the files expected there and, for MS3,
    whether its frames sit one level up (``visual_frames/{vid}.mp4_k.png``, the flat layout that
    teso before issue 10 read by mistake)."""
    names = [p.name for p in record.frame_paths]
    expected = f"{names[0]} … {names[-1]}"
    if record.layout == "released":
        return f"missing frame folder ({record.label} clips have {record.num_frames} frames: {expected})"
    if record.layout == "s4-object":
        return (
            f"missing frame folder (AVSBench S4 keeps a clip's frames {expected} in "
            "visual_frames/{split}/{category}/{name}/)"
        )
    message = (
        f"missing frame folder (AVSBench MS3 keeps each video's frames {expected} in its own "
        "folder visual_frames/{video_id}/)"
    )
    parent = record.frame_paths[0].parent.parent
    flat = [name for name in names if (parent / name).is_file()]
    if flat:
        message += (
            f"; found {len(flat)} of them directly in {parent}, the layout older teso versions "
            f"expected: move them into {record.frame_paths[0].parent}"
        )
    return message


def inspect_clip(
    record: ClipRecord,
    *,
    num_classes: int = 71,
    load_frames: bool = True,
    load_audio: bool = True,
) -> tuple[ClipArrays | None, list[Problem]]:
    """Read and validate one clip; return its arrays (None when a problem stops it) and every problem.

    Checks: every frame exists and reads (``load_frames=False``: its header only), all frames of
    the clip have one size, every annotated mask exists, reads, has its frame's size and (palette
    masks) only colours of the first ``num_classes`` palette entries, every semantic mask is a
    single-channel PNG of the frame's size with indices below ``num_classes``, the audio exists,
    reads and lasts at least ``num_frames - AUDIO_TOLERANCE_S`` seconds (1 frame per second).
    Masks are always decoded fully (their colours must be checked). Audio with
    ``load_audio=False`` is measured from its header (soundfile) where possible.
    """
    problems: list[Problem] = []
    n = record.num_frames
    if record.layout == "released" and not record.clip_dir.is_dir():
        # One line for a clip that is not there at all, rather than one per missing file.
        return None, [Problem(record.clip_dir, f"missing clip folder (listed in {LAYOUT_CSV['released']})")]

    frame_dir = record.frame_paths[0].parent
    no_frame_dir = not frame_dir.is_dir()
    if no_frame_dir:
        # One line naming the folder expected, rather than one per frame; masks and audio (in other
        # folders for the object layouts) are still checked.
        problems.append(Problem(frame_dir, missing_frame_dir_message(record)))
    frames: list[np.ndarray | None] = []
    sizes: list[tuple[int, int] | None] = []
    for t, path in enumerate(record.frame_paths):
        if not path.is_file():
            if not no_frame_dir:
                problems.append(
                    Problem(path, f"missing frame {t} of {n} ({record.label} clips have {n} frames)")
                )
            frames.append(None)
            sizes.append(None)
            continue
        try:
            if load_frames:
                with Image.open(path) as img:
                    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
                frames.append(rgb)
                sizes.append(rgb.shape[:2])
            else:
                frames.append(None)
                sizes.append(_image_size(path))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(Problem(path, f"unreadable frame image ({exc})"))
            frames.append(None)
            sizes.append(None)
    known = [s for s in sizes if s is not None]
    # The clip's size is the one most of its frames have (ties: the earliest), so the odd frame out
    # is the one reported, and masks are compared with the clip's size, not with an odd frame.
    ref_size = max(known, key=lambda s: (known.count(s), -known.index(s))) if known else None
    for t, s in enumerate(sizes):
        if s is not None and s != ref_size:
            problems.append(
                Problem(
                    record.frame_paths[t],
                    f"frame size {_size_text(s)} differs from the clip's other frames "
                    f"({_size_text(ref_size)})",
                )
            )

    mask_arrays: list[np.ndarray | None] = [None] * n
    semantic_from_rgb: list[np.ndarray | None] = [None] * n
    for t, path in enumerate(record.mask_paths):
        if path is None:
            continue
        if not path.is_file():
            problems.append(Problem(path, f"missing mask of annotated frame {t}"))
            continue
        try:
            if record.mask_format == "palette":
                rgb = _read_rgb_mask(path)
                index, unknown = decode_colors(rgb, num_classes)
                mask_hw = rgb.shape[:2]
            else:
                index, unknown = None, None
                binary = _read_binary_mask(path)
                mask_hw = binary.shape[:2]
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(Problem(path, f"unreadable mask image ({exc})"))
            continue
        want = ref_size
        if want is not None and tuple(mask_hw) != tuple(want):
            problems.append(
                Problem(
                    path, f"mask size {_size_text(mask_hw)} does not match its frame ({_size_text(want)})"
                )
            )
            continue
        if index is not None:
            if unknown.any():
                ys, xs = np.nonzero(unknown)
                colours = np.unique(rgb[unknown].reshape(-1, 3), axis=0)
                shown = ", ".join(str(tuple(int(c) for c in col)) for col in colours[:3])
                problems.append(
                    Problem(
                        path,
                        f"unknown mask colour: {int(unknown.sum())} pixels (first at x={xs[0]}, y={ys[0]}) "
                        f"have colours outside the {num_classes}-class AVSS palette: {shown}"
                        + (f" and {len(colours) - 3} more" if len(colours) > 3 else ""),
                    )
                )
                continue
            mask_arrays[t] = index != 0
            semantic_from_rgb[t] = index
        else:
            mask_arrays[t] = binary

    semantic_arrays: list[np.ndarray | None] | None = None
    if record.semantic_paths is not None:
        semantic_arrays = [None] * n
        for t, path in enumerate(record.semantic_paths):
            if path is None:
                continue
            if not path.is_file():
                problems.append(Problem(path, f"missing semantic mask of annotated frame {t}"))
                continue
            try:
                index = _read_index_mask(path)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                problems.append(Problem(path, f"unreadable semantic mask ({exc})"))
                continue
            want = ref_size
            if want is not None and tuple(index.shape) != tuple(want):
                problems.append(
                    Problem(
                        path,
                        f"semantic mask size {_size_text(index.shape)} does not match its frame "
                        f"({_size_text(want)})",
                    )
                )
                continue
            if index.size and int(index.max()) >= num_classes:
                problems.append(
                    Problem(path, f"class index {int(index.max())} is not below the {num_classes} classes")
                )
                continue
            semantic_arrays[t] = index
    elif record.label == "v2" and record.mask_format == "palette":
        semantic_arrays = semantic_from_rgb

    audio: np.ndarray | None = None
    audio_seconds = 0.0
    apath = record.audio_path
    if not apath.is_file():
        problems.append(Problem(apath, "missing audio file"))
    else:
        try:
            if load_audio:
                from teso.audio import load_audio as _load

                audio = _load(apath, target_sr=SAMPLE_RATE)
                audio_seconds = len(audio) / SAMPLE_RATE
            else:
                audio_seconds = _audio_seconds(apath)
        except TesoError as exc:
            message = str(exc)
            prefix = f"{apath}: "
            problems.append(Problem(apath, message[len(prefix) :] if message.startswith(prefix) else message))
        else:
            if audio_seconds < n - AUDIO_TOLERANCE_S:
                problems.append(
                    Problem(
                        apath,
                        f"audio shorter than the clip: {audio_seconds:.3f} s for {n} frames at 1 fps "
                        f"(needs at least {n - AUDIO_TOLERANCE_S:.2f} s)",
                    )
                )

    if problems or ref_size is None:
        return None, problems
    h, w = ref_size
    masks = np.zeros((n, h, w), dtype=bool)
    for t, m in enumerate(mask_arrays):
        if m is not None:
            masks[t] = m
    semantic = None
    if semantic_arrays is not None:
        semantic = np.zeros((n, h, w), dtype=np.int64)
        for t, s in enumerate(semantic_arrays):
            if s is not None:
                semantic[t] = s
    return (
        ClipArrays(
            frames=np.stack(frames) if load_frames else None,  # type: ignore[arg-type]
            frame_size=(h, w),
            masks=masks,
            semantic=semantic,
            audio=audio,
            audio_seconds=audio_seconds,
        ),
        problems,
    )


def raise_problems(problems: Sequence[Problem], root: str | os.PathLike | None = None) -> None:
    """Raise the first problem as a one-line TesoError, counting the others."""
    if not problems:
        return
    hint = f"; run `teso data check {root}` for the full list" if root is not None else ""
    more = f" (and {len(problems) - 1} more problem(s) in this clip{hint})" if len(problems) > 1 else ""
    raise TesoError(f"{problems[0]}{more}")


# ----------------------------------------------------------------------------------------------
# Dataset


def _size_arg(value: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise TesoError(f"{name}: expected a positive int or (height, width), got {value!r}")


def _resize_stack(
    arrays: np.ndarray, size: tuple[int, int], resample: int, mode: str | None = None
) -> np.ndarray:
    """Resize ``[T, H, W(, 3)]`` to ``size = (H', W')`` frame by frame with PIL."""
    h, w = size
    out = []
    for a in arrays:
        img = Image.fromarray(a, mode=mode) if mode else Image.fromarray(a)
        out.append(np.asarray(img.resize((w, h), resample)))
    return np.stack(out)


class AVSBenchDataset(Dataset):
    """The clips of one subset and split of an AVSBench tree (any layout) as a torch Dataset.

    Item (a dict), ``T`` = frames of the subset (5 or 10), ``H x W`` = the dataset's own frame size:

    - ``uid`` (str), ``label`` (str), ``split`` (str), ``a_obj`` (list[str])
    - ``frames``: uint8 ``[T, H, W, 3]`` RGB; with ``image_size`` ``[T, h, w, 3]`` resized with PIL
      bilinear (PIL widens the kernel when shrinking, i.e. anti-aliased)
    - ``audio``: float32 ``[T, 1, 96, 64]`` VGGish log-mel examples (``audio="logmel"``, from
      :func:`teso.audio.per_second_examples`) or ``[T, 16000]`` (``audio="waveform"``)
    - ``masks``: bool ``[T, H, W]``, True on any non-background pixel; all False where not annotated.
      Masks stay at the dataset's own resolution (metrics are computed there) unless ``mask_size``
      is given (nearest-neighbour resize).
    - ``semantic``: int64 ``[T, H, W]`` class indices (from ``labels_semantic``, or for v2 from the
      ``labels_rgb`` colours via the palette); the key is absent when the clip has neither
    - ``annotated``: bool ``[T]``

    Any problem of a clip (missing frame, unreadable image, mask size != frame size, unknown mask
    colour, audio shorter than the clip, ...) raises :class:`TesoError` naming the file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        subset: str,
        split: str,
        *,
        audio: str = "logmel",
        image_size: int | Sequence[int] | None = None,
        mask_size: int | Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        if subset not in SUBSETS:
            raise TesoError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
        if split not in SPLITS:
            raise TesoError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        if audio not in ("logmel", "waveform"):
            raise TesoError(f"audio: expected 'logmel' or 'waveform', got {audio!r}")
        self.subset, self.split, self.audio = subset, split, audio
        self.image_size = _size_arg(image_size, "image_size")
        self.mask_size = _size_arg(mask_size, "mask_size")
        self.layout = detect_layout(self.root)
        self.num_classes = len(read_label2idx(self.root)) if self.layout == "released" else 2
        self.records: list[ClipRecord] = list_clips(self.root, [subset], [split])
        if not self.records:
            raise TesoError(
                f"{self.root / LAYOUT_CSV[self.layout]}: no clips with label {subset} and split {split}"
            )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def uids(self) -> list[str]:
        return [r.uid for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from teso.audio import per_second_examples, per_second_waveforms

        record = self.records[index]
        arrays, problems = inspect_clip(
            record, num_classes=self.num_classes, load_frames=True, load_audio=True
        )
        raise_problems(problems, self.root)
        assert arrays is not None and arrays.frames is not None and arrays.audio is not None
        frames = arrays.frames
        if self.image_size is not None and frames.shape[1:3] != self.image_size:
            frames = _resize_stack(frames, self.image_size, Image.BILINEAR)
        masks, semantic = arrays.masks, arrays.semantic
        if self.mask_size is not None and masks.shape[1:3] != self.mask_size:
            masks = _resize_stack(masks.astype(np.uint8), self.mask_size, Image.NEAREST) != 0
            if semantic is not None:
                semantic = _resize_stack(semantic.astype(np.uint8), self.mask_size, Image.NEAREST).astype(
                    np.int64
                )
        n = record.num_frames
        if self.audio == "logmel":
            audio = per_second_examples(arrays.audio, SAMPLE_RATE, n)
        else:
            audio = per_second_waveforms(arrays.audio, SAMPLE_RATE, n)
        item: dict[str, Any] = {
            "uid": record.uid,
            "label": record.label,
            "split": record.split,
            "frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "audio": audio.to(torch.float32),
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "annotated": torch.tensor(record.annotated, dtype=torch.bool),
            "a_obj": list(record.a_obj),
        }
        if semantic is not None:
            item["semantic"] = torch.from_numpy(np.ascontiguousarray(semantic))
        return item


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn``: tensors stacked to ``[B, ...]``, everything else kept as lists.

    Raises:
        TesoError: an empty batch, a key present in some items only (``semantic``), or tensors of
            different shapes (clips of different sizes: pass ``image_size``/``mask_size`` or use
            batch size 1).
    """
    if not batch:
        raise TesoError("collate: empty batch")
    keys = list(batch[0].keys())
    uids = [str(item.get("uid")) for item in batch]
    out: dict[str, Any] = {}
    for key in {k for item in batch for k in item}:
        if key not in keys or any(key not in item for item in batch):
            have = [u for u, item in zip(uids, batch) if key in item]
            raise TesoError(f"collate: '{key}' is present for clips {have} but not for all of {uids}")
    for key in keys:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise TesoError(
                    f"collate: '{key}' has different shapes {sorted(shapes)} across clips {uids}; "
                    "pass image_size / mask_size to the dataset or use batch size 1"
                )
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
