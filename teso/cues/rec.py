"""REC#1: how well the cues alone recognise the categories that are sounding (paper Table 3).

Definition (the paper gives none; this is ours):

* Frames: every frame of the evaluated clips. Categories: the dataset vocabulary (``label2idx.json``
  without ``background``, or the 70 AVSS classes).
* Ground truth ``y[f, c] = 1`` when category ``c`` sounds in frame ``f``: for AVSBench the clip's
  ``a_obj`` holds for each of its frames; for SynthAVS ``truth.json`` gives, per object, its category
  and per-second ``sounding`` flags.
* Cues scored: the first N_T of each frame (:func:`seen_cues`), the ones the model sees after its
  truncation (``run_score(n_t=None)`` scores every cue instead).
* Score ``s[f, c] = 1`` when one of the frame's scored cues maps onto ``c``
  (:meth:`teso.cues.parse.Vocabulary.map`), else 0. Cues that map to nothing do not count (their share
  is reported). A malformed answer gives no cue.
* ``AP_c`` is the non-interpolated average precision over frames (sklearn's ``average_precision_score``):
  ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing order,
  ``R_0 = 0``. With binary scores this is ``R1*P1 + (1 - R1)*pi``, where ``P1``/``R1`` are the
  precision/recall of the frames with ``s = 1`` and ``pi`` is the share of frames where ``c`` sounds
  (the precision of flagging every frame) — a category never cued scores ``pi``, not 0.
* **REC#1 = mean of AP_c over the categories that sound in at least one evaluated frame.** Categories
  that never sound are left out of the mean (AP is undefined without positives); the cues that name
  them still count as false positives in the micro precision.
* Also reported: micro precision / recall / F1 over all (frame, category) pairs, and per category its
  positives, predictions, hits, precision, recall and AP.
* Where the truth is per second (SynthAVS), the **silent-object cue rate**: the share of the scored
  cue slots that name a category visible in that frame but silent in that second (:class:`SlotCounts`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from teso.cues.slots import seen_cues  # the one slot rule (also imported from here)
from teso.errors import TesoError


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Non-interpolated AP of ``scores`` against binary ``labels``; ``None`` when no label is 1."""
    pos = sum(1 for y in labels if y)
    if pos == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ap, tp, seen, prev_recall = 0.0, 0, 0, 0.0
    i = 0
    while i < len(order):
        # All items tied at this score enter together: a threshold cannot split them.
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:
            tp += 1 if labels[order[j]] else 0
            seen += 1
            j += 1
        recall = tp / pos
        ap += (recall - prev_recall) * (tp / seen)
        prev_recall = recall
        i = j
    return ap


@dataclass
class CategoryRec:
    name: str
    positives: int
    predicted: int
    hits: int
    precision: float | None
    recall: float | None
    ap: float | None


@dataclass
class RecResult:
    """REC#1 and its parts; fractions in [0, 1]."""

    rec1: float | None
    micro_precision: float | None
    micro_recall: float | None
    micro_f1: float | None
    frames: int
    categories_scored: int
    categories_absent: list[str]
    per_category: list[CategoryRec]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table: one row per category with positives, then the totals."""

        def pct(x: float | None) -> str:
            return "   -  " if x is None else f"{100 * x:6.2f}"

        rows = [f"{'category':<18} {'pos':>6} {'pred':>6} {'hit':>6} {'P%':>6} {'R%':>6} {'AP%':>6}"]
        for c in self.per_category:
            if c.positives or c.predicted:
                rows.append(
                    f"{c.name:<18} {c.positives:>6} {c.predicted:>6} {c.hits:>6} "
                    f"{pct(c.precision)} {pct(c.recall)} {pct(c.ap)}"
                )
        rows.append(
            f"REC#1 (mAP over {self.categories_scored} sounding categories, {self.frames} frames): "
            f"{pct(self.rec1).strip()}%  micro P {pct(self.micro_precision).strip()}%  "
            f"R {pct(self.micro_recall).strip()}%  F1 {pct(self.micro_f1).strip()}%"
        )
        return "\n".join(rows)


def clip_level(per_clip: Iterable[Sequence[tuple[set[str], set[str]]]]) -> list[tuple[set[str], set[str]]]:
    """Per clip, ``(cued, sounding)`` over all its frames: how AVSBench's a_obj labels a clip.

    ``per_clip``: each clip's frame pairs ``(cued categories, sounding categories)``; empty clips
    are left out."""
    return [(set().union(*(c for c, _ in f)), set().union(*(g for _, g in f))) for f in per_clip if f]


def rec1(frames: Iterable[tuple[set[str], set[str]]], categories: Sequence[str]) -> RecResult:
    """REC#1 from ``(cued categories, sounding categories)`` per frame (see the module docstring)."""
    frames = list(frames)
    known = set(categories)
    for cued, truth in frames:
        stray = (cued | truth) - known
        if stray:
            raise TesoError(f"REC: categories {sorted(stray)} are not in the vocabulary")
    per = []
    tp_all = pred_all = pos_all = 0
    for c in categories:
        labels = [1 if c in truth else 0 for _, truth in frames]
        scores = [1.0 if c in cued else 0.0 for cued, _ in frames]
        pos, pred = sum(labels), int(sum(scores))
        hits = sum(1 for y, s in zip(labels, scores) if y and s)
        per.append(
            CategoryRec(
                c, pos, pred, hits,
                hits / pred if pred else None,
                hits / pos if pos else None,
                average_precision(scores, labels),
            )
        )  # fmt: skip
        tp_all += hits
        pred_all += pred
        pos_all += pos
    aps = [c.ap for c in per if c.ap is not None]
    p = tp_all / pred_all if pred_all else None
    r = tp_all / pos_all if pos_all else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
    return RecResult(
        rec1=sum(aps) / len(aps) if aps else None,
        micro_precision=p,
        micro_recall=r,
        micro_f1=f1,
        frames=len(frames),
        categories_scored=len(aps),
        categories_absent=[c.name for c in per if c.positives == 0],
        per_category=per,
    )


def read_truth(clip_dir: Path) -> dict:
    """A SynthAVS ``truth.json`` (``{"objects": [...], ...}``); a one-line error naming the file."""
    path = Path(clip_dir) / "truth.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        objects = data["objects"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise TesoError(
            f"{path}: cannot read the ground truth ({err}); expected {{'objects': [...]}}"
        ) from err
    if not isinstance(objects, list) or not all(isinstance(o, dict) and "category" in o for o in objects):
        raise TesoError(f"{path}: 'objects' must be a list of objects with a 'category'")
    return data


def _flags(path: Path, obj: dict, key: str, num_frames: int) -> list:
    flags = obj.get(key)
    if not isinstance(flags, list) or len(flags) < num_frames:
        raise TesoError(f"{path}: object {obj.get('category')!r} needs {num_frames} {key!r} flags")
    return flags


def synth_frames(clip_dir: Path, num_frames: int) -> tuple[list[set[str]], list[set[str]]]:
    """Per frame, from ``truth.json``: (sounding categories, visible categories).

    An object is visible in frame t unless its ``visible_pixels[t]`` says 0 (the generator keeps
    every object visible; the field is optional so hand-made trees may leave it out).
    """
    path = Path(clip_dir) / "truth.json"
    objects = read_truth(clip_dir)["objects"]
    sounding: list[set[str]] = [set() for _ in range(num_frames)]
    visible: list[set[str]] = [set() for _ in range(num_frames)]
    for obj in objects:
        flags = _flags(path, obj, "sounding", num_frames)
        pixels = obj.get("visible_pixels")
        for t in range(num_frames):
            if flags[t]:
                sounding[t].add(str(obj["category"]))
            if not isinstance(pixels, list) or t >= len(pixels) or pixels[t]:
                visible[t].add(str(obj["category"]))
    return sounding, visible


def synth_truth(clip_dir: Path, num_frames: int) -> list[set[str]]:
    """Sounding categories per frame from a SynthAVS ``truth.json``."""
    return synth_frames(clip_dir, num_frames)[0]


@dataclass
class SlotCounts:
    """What the cue slots the model sees name, where the truth is known (SynthAVS).

    Each filled slot is counted once, by the categories its cue maps onto: ``sounding`` if one of
    them sounds in that second; else ``silent`` if one of them is visible in that frame but silent
    (a quiet dog, a lamp); else ``absent`` (a category not in the picture); ``unmapped`` if the cue
    maps onto no category (a scene word such as "wall"). ``silent_rate`` = silent / slots: the
    share of cue slots that point the model at a visible object that makes no sound.
    """

    slots: int = 0
    sounding: int = 0
    silent: int = 0
    absent: int = 0
    unmapped: int = 0

    def add(self, slot_categories: Iterable[Sequence[str]], sounding: set[str], visible: set[str]) -> None:
        """Count one frame: ``slot_categories`` holds, per seen cue slot, the categories it names."""
        for cats in slot_categories:
            self.slots += 1
            if not cats:
                self.unmapped += 1
            elif any(c in sounding for c in cats):
                self.sounding += 1
            elif any(c in visible for c in cats):
                self.silent += 1
            else:
                self.absent += 1

    @property
    def silent_rate(self) -> float | None:
        return self.silent / self.slots if self.slots else None

    def to_dict(self) -> dict:
        return {**asdict(self), "silent_rate": self.silent_rate}


def rec2(
    cues: dict[tuple[str, int], Sequence[str]],
    kept: dict[str, list[list[bool]]],
    truth: dict[str, list[set[str]]],
    vocab,
    categories: Sequence[str],
    visible: dict[str, list[set[str]]] | None = None,
    map_first: bool = False,
) -> RecResult:
    """REC#2 (paper Table 3): REC#1 of the cues that survived the dynamic mask.

    ``cues`` (uid, t) -> the frame's cue words (the store's, in order); ``kept`` uid -> per frame one
    bool per real cue slot the model saw (``evaluate``'s ``kept_by_frame``: slot i is the i-th of the
    first N_T cues, :func:`teso.cues.slots.seen_cues`); ``truth`` uid -> per frame the sounding
    categories; ``vocab`` maps a cue onto categories (:class:`teso.cues.parse.Vocabulary`).
    ``map_first``: the features were built with ``encode --map-vocab`` (slots hold the mapped
    categories). With ``visible`` (uid -> per frame the visible categories, SynthAVS) the kept slots
    are also sorted by what they name: ``extra["slots"]`` and ``extra["silent_cue_rate"]`` of the
    kept cues. A kept list longer than the frame's cues means the features were not built from
    these cues: an error, not a guess.
    """
    frames = []
    slots = SlotCounts()
    for uid, per_frame in kept.items():
        if uid not in truth:
            raise TesoError(f"REC#2: no ground truth for clip {uid}")
        for t, keep in enumerate(per_frame):
            words = list(cues.get((uid, t), []))
            if map_first:
                words = vocab.map_all(words)[0]
            words = seen_cues(words, len(keep))
            if len(words) != len(keep):
                raise TesoError(
                    f"REC#2: clip {uid} frame {t} has {len(words)} cue(s) in the store but the model saw "
                    f"{len(keep)}: the text features were built from another cue store"
                )
            kept_cats = [vocab.map(word) for word, k in zip(words, keep) if k]
            frames.append(({c for cats in kept_cats for c in cats}, truth[uid][t]))
            if visible is not None:
                slots.add(kept_cats, truth[uid][t], visible[uid][t])
    result = rec1(frames, categories)
    if visible is not None:
        result.extra = {"slots": slots.to_dict(), "silent_cue_rate": slots.silent_rate}
    return result
