"""Tiny AVSBench trees written into a test's tmp_path, in the released layout and in the
AVSBench-object S4 and MS3 layouts, with the values a reader must return.

Every writer returns ``{uid: ClipTruth}`` so tests can compare what a reader yields with what was
written. Frames are lossless PNGs in the object layouts and JPEGs (as released) in the released
layout; each frame is a flat colour whose red channel encodes its index (``FRAME_RED(t)``), so a
test can tell which frame it got even through JPEG.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from teso.data.classes import AVSS_CLASSES, AVSS_LABEL2IDX
from teso.data.palette import colorize

SIZE = (24, 32)  # (H, W) of every frame and mask
SAMPLE_RATE = 16000


def frame_red(t: int) -> int:
    """Red value of frame ``t`` (green and blue are fixed)."""
    return 20 + 20 * t


@dataclass
class ClipTruth:
    """What a reader must return for one clip: ``index`` is ``[T, H, W]`` int64 class indices
    (0 where not annotated), ``annotated`` ``[T]`` bool, ``semantic`` whether a semantic mask
    exists, ``audio_seconds`` the wav's length."""

    uid: str
    label: str
    split: str
    index: np.ndarray
    annotated: np.ndarray
    a_obj: list[str]
    semantic: bool
    audio_seconds: float
    freq: float


def _frame(t: int) -> np.ndarray:
    img = np.empty((*SIZE, 3), dtype=np.uint8)
    img[..., 0] = frame_red(t)
    img[..., 1] = 90
    img[..., 2] = 160
    return img


def _index_mask(t: int, classes: list[int]) -> np.ndarray:
    """Class ``classes[i]`` on a 6x8 box that moves with ``t``; box ``i`` sits in column band ``i``."""
    mask = np.zeros(SIZE, dtype=np.int64)
    for i, cls in enumerate(classes):
        y0 = 2 + (t % 3) * 4
        x0 = 2 + i * 10 + (t % 2)
        mask[y0 : y0 + 6, x0 : x0 + 8] = cls
    return mask


def wav_samples(seconds: float, freq: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The float samples :func:`write_wav` stores, exactly: a tone whose amplitude steps up every
    second (second ``t`` peaks at ``(t + 1) / 16`` of full scale, so a reader that pairs second ``t``
    with other audio is caught), quantised to 16-bit integers ``q`` and read back as ``q / 32768``
    (float64; every value is also exact in float32)."""
    return _pcm16(seconds, freq, sample_rate) / 32768.0


def _pcm16(seconds: float, freq: float, sample_rate: int) -> np.ndarray:
    n = np.arange(int(round(seconds * sample_rate)))
    level = 2048.0 * (1 + n // sample_rate)  # 1/16 of full scale in second 0, 10/16 in second 9
    return np.round(level * np.sin(2 * np.pi * freq * n / sample_rate)).astype(np.int16)


def write_wav(path: Path, seconds: float, freq: float = 440.0, sample_rate: int = SAMPLE_RATE) -> None:
    """A 16-bit PCM wav of :func:`wav_samples`; the integers are written as they are (no float
    conversion by libsndfile), so what a reader must return is known to the last bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _pcm16(seconds, freq, sample_rate), sample_rate, subtype="PCM_16")


def _write_png(path: Path, array: np.ndarray) -> None:
    """uint8 ``[H, W]`` is written as 8-bit grayscale, ``[H, W, 3]`` as RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path)


# (uid, label, split, a_obj cell, classes per frame, with labels_semantic, tone Hz)
RELEASED_CLIPS = [
    ("s_train", "v1s", "train", "dog", [AVSS_LABEL2IDX["dog"]], False, 300.0),
    ("s_test", "v1s", "test", "guitar", [AVSS_LABEL2IDX["guitar"]], False, 500.0),
    ("m_val", "v1m", "val", "man_piano", [AVSS_LABEL2IDX["man"], AVSS_LABEL2IDX["piano"]], False, 700.0),
    (
        "v2_sem",
        "v2",
        "test",
        "woman, violin",
        [AVSS_LABEL2IDX["woman"], AVSS_LABEL2IDX["violin"]],
        True,
        900.0,
    ),
    ("v2_rgb", "v2", "test", "['emergency-car']", [AVSS_LABEL2IDX["emergency-car"]], False, 1100.0),
]
RELEASED_A_OBJ = {
    "s_train": ["dog"],
    "s_test": ["guitar"],
    "m_val": ["man", "piano"],
    "v2_sem": ["woman", "violin"],
    "v2_rgb": ["emergency-car"],
}
EMPTY_FRAME = 2  # frame of s_test whose mask is all background (a silent second)


def write_released_tree(root: Path) -> dict[str, ClipTruth]:
    """ROOT/metadata.csv, label2idx.json (the 71 AVSS classes) and the five clips of RELEASED_CLIPS."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "label2idx.json").write_text(json.dumps({name: i for i, name in enumerate(AVSS_CLASSES)}))
    truths: dict[str, ClipTruth] = {}
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for uid, label, split, a_obj, classes, with_sem, freq in RELEASED_CLIPS:
            writer.writerow([f"yt_{uid}", uid, 0, 0, a_obj, split, label])
            n = 10 if label == "v2" else 5
            clip = root / label / uid
            annotated = np.array([t == 0 or not (label == "v1s" and split == "train") for t in range(n)])
            index = np.zeros((n, *SIZE), dtype=np.int64)
            for t in range(n):
                Image.fromarray(_frame(t)).save(_mkparent(clip / "frames" / f"{t}.jpg"), quality=95)
                if not annotated[t]:
                    continue
                idx = _index_mask(t, classes) if not (uid == "s_test" and t == EMPTY_FRAME) else index[t]
                index[t] = idx
                _write_png(clip / "labels_rgb" / f"{t}.png", colorize(idx))
                if with_sem:
                    _write_png(clip / "labels_semantic" / f"{t}.png", idx.astype(np.uint8))
            write_wav(clip / "audio.wav", float(n), freq)
            truths[uid] = ClipTruth(
                uid, label, split, index, annotated, RELEASED_A_OBJ[uid], with_sem, float(n), freq
            )
    return truths


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


S4_CLIPS = [("s4_a", "dog_barking", "train", 350.0), ("s4_b", "male_speech", "test", 650.0)]
MS3_CLIPS = [("ms3_x", "train", 450.0), ("ms3_y", "val", 850.0)]


# The object layouts as the AVSBench code reads and writes them (OpenNLPLab/AVSBench at commit
# 4d4c901: avs_scripts/avs_s4/{config,dataloader}.py, avs_scripts/avs_ms3/{config,dataloader}.py,
# preprocess_scripts/preprocess_s4.py and preprocess_ms3.py):
#   Single-source/s4_meta_data.csv     column 0 name, 1 start time, 2 category, 3 split
#   Single-source/s4_data/visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
#   Single-source/s4_data/gt_masks/{split}/{category}/{name}/{name}_{k}.png   (train: k = 1 only)
#   Single-source/s4_data/audio_wav/{split}/{category}/{name}.wav
#   Multi-sources/ms3_meta_data.csv    column 0 the video id, 1 split
#   Multi-sources/ms3_data/visual_frames/{video_id}/{video_id}.mp4_{1..5}.png   (no split level)
#   Multi-sources/ms3_data/gt_masks/{split}/{video_id}/{video_id}_{1..5}.png
#   Multi-sources/ms3_data/audio_wav/{split}/{video_id}.wav
# (and audio_log_mel/... .pkl beside audio_wav, which teso does not read). The dataloaders read the
# id from column 0 and `category` / `split` by name; the S4 id header `name` is what other public
# AVSBench readers index by. The header names written for the columns no code reads by name (S4
# column 1, MS3 column 0) are this fixture's choice.
S4_HEADER = ["name", "start", "category", "split"]
MS3_HEADER = ["video_id", "split"]


def write_s4_object_tree(root: Path, nested: bool = True) -> dict[str, ClipTruth]:
    """AVSBench-object S4: ROOT/s4_meta_data.csv and (nested, as released) ROOT/s4_data/... .

    Masks are 8-bit grayscale 0/255 PNGs; train clips have only ``{name}_1.png``.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = root / "s4_data" if nested else root
    truths: dict[str, ClipTruth] = {}
    with open(root / "s4_meta_data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(S4_HEADER)
        for name, category, split, freq in S4_CLIPS:
            writer.writerow([name, 0, category, split])
            index = np.zeros((5, *SIZE), dtype=np.int64)
            annotated = np.array([k == 1 or split != "train" for k in range(1, 6)])
            for k in range(1, 6):
                _write_png(
                    data / "visual_frames" / split / category / name / f"{name}_{k}.png", _frame(k - 1)
                )
                if annotated[k - 1]:
                    binary = (_index_mask(k - 1, [1]) > 0).astype(np.uint8)
                    index[k - 1] = binary
                    _write_png(data / "gt_masks" / split / category / name / f"{name}_{k}.png", binary * 255)
            write_wav(data / "audio_wav" / split / category / f"{name}.wav", 5.0, freq)
            truths[name] = ClipTruth(name, "v1s", split, index, annotated, [category], False, 5.0, freq)
    return truths


def write_ms3_object_tree(
    root: Path, nested: bool = False, header: list[str] | None = None
) -> dict[str, ClipTruth]:
    """AVSBench-object MS3: ROOT/ms3_meta_data.csv, frames ``visual_frames/{vid}/{vid}.mp4_{k}.png``
    (one folder per video, as preprocess_ms3.py writes them), ``nested``: under ROOT/ms3_data/ as
    released. ``header`` replaces the CSV header (default :data:`MS3_HEADER`).

    Masks are palette (P-mode) PNGs: index 1 (dark red) is foreground, as a palette annotation tool
    writes them; every frame is annotated.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = root / "ms3_data" if nested else root
    truths: dict[str, ClipTruth] = {}
    with open(root / "ms3_meta_data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or MS3_HEADER)
        for vid, split, freq in MS3_CLIPS:
            writer.writerow([vid, split])
            index = np.zeros((5, *SIZE), dtype=np.int64)
            for k in range(1, 6):
                _write_png(data / "visual_frames" / vid / f"{vid}.mp4_{k}.png", _frame(k - 1))
                binary = (_index_mask(k - 1, [1, 1]) > 0).astype(np.uint8)
                index[k - 1] = binary
                img = Image.new("P", (SIZE[1], SIZE[0]))
                img.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
                img.putdata(binary.reshape(-1).tolist())
                path = _mkparent(data / "gt_masks" / split / vid / f"{vid}_{k}.png")
                img.save(path)
            write_wav(data / "audio_wav" / split / f"{vid}.wav", 5.0, freq)
            truths[vid] = ClipTruth(vid, "v1m", split, index, np.ones(5, dtype=bool), [], False, 5.0, freq)
    return truths


def flatten_ms3_frames(data: Path) -> list[Path]:
    """Move every MS3 frame of the tree whose data folder is ``data`` from
    ``visual_frames/{vid}/{vid}.mp4_k.png`` up to ``visual_frames/{vid}.mp4_k.png`` (the flat layout
    teso read by mistake before issue 10) and remove the emptied folders; returns the folders removed."""
    removed = []
    for folder in sorted(p for p in (data / "visual_frames").iterdir() if p.is_dir()):
        for frame in sorted(folder.iterdir()):
            frame.rename(folder.parent / frame.name)
        folder.rmdir()
        removed.append(folder)
    return removed
