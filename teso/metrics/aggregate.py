"""Accumulators that turn per-batch metrics into split-level numbers.

``AVSBenchMeter`` (binary masks) computes three aggregations from the same per-frame statistics; its
``mode`` picks which one is reported as ``miou`` / ``fscore``, and ``by_mode`` holds all of them:

* ``"reference"`` — AVSBench's test scripts: frames are grouped into evaluation batches of
  ``clips_per_batch`` clips (4 in AVSBench's ``test.sh``), each batch gets ``mask_iou`` (mean IoU over its
  frames) and ``Eval_Fmeasure`` (max over thresholds of the mean F curve of its non-empty frames, 0 for a
  batch without one), and the split value is the plain mean over batches. The F (and, through a smaller
  last batch, the mIoU) depends on the batch size. The meter buffers frames into those groups itself, so
  the result is the same however the caller chunks its ``update`` calls.
* ``"per-frame"`` — batch-independent: mIoU = mean IoU over all frames; F = mean over the frames with a
  non-empty ground truth of each frame's own best F (max over thresholds).
* ``"dataset"`` — mIoU as in ``per-frame``; F = max over thresholds of the F of the pooled precision /
  recall (true-positive, positive and ground-truth pixel counts summed over the non-empty frames).

``miou_nonempty`` (mean IoU over frames whose ground truth is not empty) is reported by every mode: the
empty-frame rule scores a frame by the share of pixels predicted background, which flatters a model that
segments everything less than it should.

Every statistic is per frame, so the frames of one split may have different sizes (AVSS clips do): feed
each clip at its own resolution. With ``per_clip=True`` the meter also keeps each clip's own numbers
(``per_clip()``): the reference mIoU / F of the clip as a batch of one, the same arithmetic as evaluating
that clip alone.

``SemanticMeter`` accumulates the AVSS per-class histograms (see ``teso.metrics.semantic``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from teso.errors import TesoError
from teso.metrics.avsbench import (
    REFERENCE_BETA2,
    REFERENCE_NUM_THRESHOLDS,
    REFERENCE_THRESHOLD,
    _check_f_args,
    _check_threshold,
    binary_gt,
    fscore_curves_from_probabilities,
    fscore_from_counts,
    iou_from_probabilities,
    to_probabilities,
)
from teso.metrics.semantic import (
    AVSS_NUM_CLASSES,
    SEMANTIC_BETA2,
    iou_and_fscore_from_histograms,
    semantic_histograms,
)

AVSBENCH_MODES = ("reference", "per-frame", "dataset")
AVSBENCH_CLIPS_PER_BATCH = 4


class AVSBenchMeter:
    """Split-level AVSBench mIoU and F-score for binary masks.

    Args:
        mode: ``"reference"`` (default, AVSBench-compatible), ``"per-frame"`` or ``"dataset"``; see the
            module docstring.
        clips_per_batch: evaluation batch size of the reference mode, in clips (AVSBench: 4).
        frames_per_clip: how many consecutive frames form a clip when ``update`` receives ``[N, H, W]``
            without ``clip_ids`` (S4 / MS3: 5, AVSS: 10).
        threshold: binarisation threshold of the mIoU (AVSBench 0.5; official TeSO code 0.4).
        from_logits: ``pred`` holds logits (``sigmoid`` is applied) rather than probabilities.
        beta2, num_thresholds: the F-score's β² and number of thresholds (0.3 and 255 in AVSBench).
        per_clip: also keep every clip's own mIoU and F (``per_clip()``); needs ``clip_ids`` in every
            ``update``, and the ids name the clips there.

    The clip structure is needed by the reference mode only; without it (no ``clip_ids``, 3-D input and
    no ``frames_per_clip``) the other modes still work and ``by_mode`` omits ``"reference"``.
    """

    def __init__(
        self,
        mode: str = "reference",
        *,
        clips_per_batch: int = AVSBENCH_CLIPS_PER_BATCH,
        frames_per_clip: int | None = None,
        threshold: float = REFERENCE_THRESHOLD,
        from_logits: bool = True,
        beta2: float = REFERENCE_BETA2,
        num_thresholds: int = REFERENCE_NUM_THRESHOLDS,
        per_clip: bool = False,
    ) -> None:
        if mode not in AVSBENCH_MODES:
            raise TesoError(f"mode: expected one of {', '.join(AVSBENCH_MODES)}, got {mode!r}")
        if not isinstance(clips_per_batch, int) or clips_per_batch < 1:
            raise TesoError(f"clips_per_batch: expected a positive integer, got {clips_per_batch!r}")
        if frames_per_clip is not None and (not isinstance(frames_per_clip, int) or frames_per_clip < 1):
            raise TesoError(f"frames_per_clip: expected a positive integer or None, got {frames_per_clip!r}")
        _check_threshold(threshold)
        _check_f_args(beta2, num_thresholds)
        self.mode = mode
        self.clips_per_batch = clips_per_batch
        self.frames_per_clip = frames_per_clip
        self.threshold = float(threshold)
        self.from_logits = from_logits
        self.beta2 = float(beta2)
        self.num_thresholds = num_thresholds
        self.keep_clips = bool(per_clip)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        k = self.num_thresholds
        self._num_frames = 0
        self._iou_sum = 0.0
        self._nonempty_frames = 0
        self._nonempty_iou_sum = 0.0
        self._best_f_sum = 0.0
        self._pooled_positive = torch.zeros(k, dtype=torch.float64)
        self._pooled_true_positive = torch.zeros(k, dtype=torch.float64)
        self._pooled_gt = 0.0
        # reference-mode state: finished batches and the one still open
        self._clip_scheme: str | None = None
        self._clips_started = 0
        self._last_clip_key: Hashable | None = None
        self._batch_mious: list[float] = []
        self._batch_fscores: list[float] = []
        self._open_batch: int | None = None
        self._open_ious: list[Tensor] = []
        self._open_curves: list[Tensor] = []
        # per-clip state (per_clip=True): finished clips and the one still open
        self._clips: dict[Hashable, dict[str, float | int]] = {}
        self._open_clip: Hashable | None = None
        self._open_clip_ious: list[Tensor] = []
        self._open_clip_curves: list[Tensor] = []

    # ----------------------------------------------------------------------------------------------
    def _global_clip_index(
        self, n: int, clips_in_input: int | None, clip_ids: Sequence[Hashable] | Tensor | None
    ) -> Tensor | None:
        """Index of the clip each of the ``n`` frames belongs to, counted over the whole split: ``[n]``."""
        if clip_ids is not None:
            scheme = "clip_ids"
        elif clips_in_input is not None:
            scheme = "4d"
        elif self.frames_per_clip is not None:
            scheme = "frames_per_clip"
        else:
            if self._clip_scheme is not None:
                raise TesoError(
                    "clip_ids: earlier updates carried the clip structure; every update must (pass clip_ids, "
                    "[B, T, H, W] input, or frames_per_clip to the meter)"
                )
            self._clip_scheme = "none"
            return None
        if self._clip_scheme not in (None, scheme):
            raise TesoError(
                f"clip_ids: this meter was fed with the {self._clip_scheme!r} clip scheme and now "
                f"{scheme!r}; use one way of describing clips per meter"
            )
        self._clip_scheme = scheme
        if scheme == "4d":
            t = n // clips_in_input if clips_in_input else 0
            index = self._clips_started + torch.arange(clips_in_input).repeat_interleave(t)
            self._clips_started += clips_in_input
            return index
        if scheme == "frames_per_clip":
            # _clips_started counts frames here; clips are whole runs of frames_per_clip frames
            index = (self._clips_started + torch.arange(n)) // self.frames_per_clip
            self._clips_started += n
            return index
        keys = clip_ids.tolist() if isinstance(clip_ids, Tensor) else list(clip_ids)
        if len(keys) != n:
            raise TesoError(f"clip_ids: expected one id per frame ({n}), got {len(keys)}")
        # a clip is a run of equal consecutive ids; a run may continue from the previous update
        starts = [
            (keys[i] != keys[i - 1]) if i else (self._last_clip_key is None or keys[0] != self._last_clip_key)
            for i in range(n)
        ]
        index = self._clips_started - 1 + torch.tensor(starts, dtype=torch.long).cumsum(0)
        if n:
            self._clips_started = int(index[-1]) + 1
            self._last_clip_key = keys[-1]
        return index

    def _close_open_batch(self) -> None:
        miou, fscore = self._open_batch_values()
        self._batch_mious.append(miou)
        self._batch_fscores.append(fscore)
        self._open_ious, self._open_curves = [], []

    def _open_batch_values(self) -> tuple[float, float]:
        return _group_values(self._open_ious, self._open_curves)

    def _open_clip_record(self) -> dict[str, float | int]:
        miou, fscore = _group_values(self._open_clip_ious, self._open_clip_curves)
        return {
            "miou": miou,
            "fscore": fscore,
            "num_frames": sum(int(x.shape[0]) for x in self._open_clip_ious),
            "num_nonempty_frames": sum(int(x.shape[0]) for x in self._open_clip_curves),
        }

    def _close_open_clip(self) -> None:
        self._clips[self._open_clip] = self._open_clip_record()
        self._open_clip, self._open_clip_ious, self._open_clip_curves = None, [], []

    def _add_to_clips(
        self, keys: list[Hashable], clip_index: Tensor, ious: Tensor, curves: Tensor, nonempty: Tensor
    ) -> None:
        """Route the frames of one update to their clips' records (``clip_index`` [n], consecutive runs)."""
        _, counts = torch.unique_consecutive(clip_index, return_counts=True)
        start = 0
        for c in counts.tolist():
            key = keys[start]
            if key != self._open_clip or not self._open_clip_ious:
                if self._open_clip_ious:
                    self._close_open_clip()
                if key in self._clips:
                    raise TesoError(
                        f"clip_ids: clip {key!r} appears again after other clips; with per_clip=True "
                        "the frames of a clip must be consecutive and its id unique"
                    )
                self._open_clip = key
            part = slice(start, start + c)
            self._open_clip_ious.append(ious[part])
            self._open_clip_curves.append(curves[part][nonempty[part]])
            start += c

    # ----------------------------------------------------------------------------------------------
    def update(self, pred: Tensor, gt: Tensor, clip_ids: Sequence[Hashable] | Tensor | None = None) -> None:
        """Add frames.

        Args:
            pred: ``[N, H, W]`` or ``[B, T, H, W]`` logits (or probabilities with ``from_logits=False``).
            gt: binary ground truth of the same shape.
            clip_ids: optional, one id per frame for ``[N, H, W]`` input; consecutive equal ids form a
                clip, and a clip may continue across calls. ``[B, T, H, W]`` input is B whole clips.
        """
        if not isinstance(pred, Tensor) or not isinstance(gt, Tensor):
            raise TesoError("pred/gt: expected torch tensors")
        if pred.shape != gt.shape:
            raise TesoError(f"gt: expected the shape of pred {list(pred.shape)}, got {list(gt.shape)}")
        clips_in_input = None
        if pred.dim() == 4:
            if clip_ids is not None:
                raise TesoError("clip_ids: not accepted with [B, T, H, W] input, whose clips are its B rows")
            clips_in_input = pred.shape[0]
            pred = pred.reshape(-1, *pred.shape[-2:])
            gt = gt.reshape(-1, *gt.shape[-2:])
        elif pred.dim() != 3:
            raise TesoError(f"pred: expected shape [N, H, W] or [B, T, H, W], got {list(pred.shape)}")
        if not pred.is_floating_point():
            raise TesoError(f"pred: expected floating-point logits or probabilities, got dtype {pred.dtype}")
        target = binary_gt(gt)
        prob = to_probabilities(pred, from_logits=self.from_logits)
        n = prob.shape[0]
        if self.keep_clips and clip_ids is None:
            raise TesoError(
                "clip_ids: AVSBenchMeter(per_clip=True) needs one id per frame in every update "
                "(they name the clips of per_clip())"
            )
        clip_index = self._global_clip_index(n, clips_in_input, clip_ids)
        if n == 0:
            return

        ious = iou_from_probabilities(prob, target, self.threshold).cpu()
        curves, nonempty, positive, true_positive = fscore_curves_from_probabilities(
            prob, target, beta2=self.beta2, num_thresholds=self.num_thresholds
        )
        curves, nonempty = curves.cpu(), nonempty.cpu()
        self._num_frames += n
        self._iou_sum += float(ious.sum())
        self._nonempty_frames += int(nonempty.sum())
        self._nonempty_iou_sum += float(ious[nonempty].sum())
        if bool(nonempty.any()):
            self._best_f_sum += float(curves[nonempty].max(1).values.sum())
        ne = nonempty.to(positive.device)
        self._pooled_positive += positive[ne].sum(0).double().cpu()
        self._pooled_true_positive += true_positive[ne].sum(0).double().cpu()
        self._pooled_gt += float(target.reshape(n, -1)[ne].sum())

        if clip_index is None:
            return
        if self.keep_clips:
            keys = clip_ids.tolist() if isinstance(clip_ids, Tensor) else list(clip_ids)
            self._add_to_clips(keys, clip_index, ious, curves, nonempty)
        batch_index = clip_index // self.clips_per_batch
        values, counts = torch.unique_consecutive(batch_index, return_counts=True)
        start = 0
        for b, c in zip(values.tolist(), counts.tolist()):
            if self._open_batch is not None and b != self._open_batch:
                self._close_open_batch()
            self._open_batch = b
            part = slice(start, start + c)
            self._open_ious.append(ious[part])
            self._open_curves.append(curves[part][nonempty[part]])
            start += c

    def merge(self, other: AVSBenchMeter) -> None:
        """Add another meter's frames (e.g. one gathered from another rank), to compute the union.

        The per-frame and dataset modes are exact. In the reference mode each meter's batches are kept as
        they were formed (both open batches are closed here), so the result equals a single reference run
        only when every shard held whole, consecutive evaluation batches — a ``DistributedSampler`` that
        interleaves clips does not; report the batch-independent modes for multi-process evaluation.
        Meant for finalising: frames added after a merge start a new evaluation batch.
        """
        if (other.num_thresholds, other.beta2, other.threshold, other.clips_per_batch, other.keep_clips) != (
            self.num_thresholds,
            self.beta2,
            self.threshold,
            self.clips_per_batch,
            self.keep_clips,
        ):
            raise TesoError(
                "AVSBenchMeter.merge: the meters differ in threshold, beta2, num_thresholds, batch "
                "or per_clip"
            )
        if self.keep_clips:
            mine, theirs = self.per_clip(), other.per_clip()
            both = sorted(str(k) for k in mine.keys() & theirs.keys())
            if both:
                raise TesoError(
                    f"AVSBenchMeter.merge: both meters hold clip(s) {both[:3]}; shards must hold whole, "
                    "distinct clips"
                )
            if self._open_clip_ious:
                self._close_open_clip()
            self._clips.update(theirs)
        schemes = {self._clip_scheme, other._clip_scheme} - {None}
        if "none" in schemes and len(schemes) > 1:
            raise TesoError("AVSBenchMeter.merge: one meter has the clip structure and the other has not")
        if self._open_ious:
            self._close_open_batch()
        self._open_batch = None
        self._num_frames += other._num_frames
        self._iou_sum += other._iou_sum
        self._nonempty_frames += other._nonempty_frames
        self._nonempty_iou_sum += other._nonempty_iou_sum
        self._best_f_sum += other._best_f_sum
        self._pooled_positive += other._pooled_positive
        self._pooled_true_positive += other._pooled_true_positive
        self._pooled_gt += other._pooled_gt
        self._batch_mious += other._batch_mious
        self._batch_fscores += other._batch_fscores
        if other._open_ious:
            miou, fscore = other._open_batch_values()
            self._batch_mious.append(miou)
            self._batch_fscores.append(fscore)
        if self._clip_scheme is None:
            self._clip_scheme = other._clip_scheme

    def per_clip(self) -> dict[Hashable, dict[str, float | int]]:
        """Each clip's own numbers, keyed by its id (``per_clip=True``): ``{id: {"miou", "fscore",
        "num_frames", "num_nonempty_frames"}}``. ``miou`` is the mean IoU of its frames and ``fscore``
        the reference F of the clip as one evaluation batch (0 without a non-empty frame): exactly the
        reference-mode result of a meter fed that clip alone."""
        if not self.keep_clips:
            raise TesoError("AVSBenchMeter.per_clip: build the meter with per_clip=True")
        clips = dict(self._clips)
        if self._open_clip_ious:
            clips[self._open_clip] = self._open_clip_record()
        return clips

    # ----------------------------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """Split-level numbers (fractions in [0, 1]).

        Returns a dict with ``miou`` and ``fscore`` of the chosen ``mode``, ``miou_nonempty``, ``mode``,
        ``threshold``, ``num_frames``, ``num_nonempty_frames``, ``num_batches`` (reference mode; ``None``
        without clip structure) and ``by_mode``: ``{mode: {"miou", "fscore"}}`` for every mode available.
        A meter that saw no frame raises ``TesoError``.
        """
        if self._num_frames == 0:
            raise TesoError("AVSBenchMeter.compute: no frames were added (call update first)")
        per_frame_miou = self._iou_sum / self._num_frames
        by_mode: dict[str, dict[str, float]] = {}
        num_batches = None
        if self._clip_scheme not in (None, "none"):
            mious = list(self._batch_mious)
            fscores = list(self._batch_fscores)
            if self._open_ious:
                miou, fscore = self._open_batch_values()
                mious.append(miou)
                fscores.append(fscore)
            num_batches = len(mious)
            by_mode["reference"] = {"miou": sum(mious) / num_batches, "fscore": sum(fscores) / num_batches}
        if self._nonempty_frames:
            per_frame_f = self._best_f_sum / self._nonempty_frames
            pooled = fscore_from_counts(
                self._pooled_positive, self._pooled_true_positive, torch.tensor(self._pooled_gt), self.beta2
            )
            dataset_f = float(pooled.max())
        else:
            # no frame has a foreground to find: F is undefined, never silently 0
            per_frame_f = dataset_f = float("nan")
        by_mode["per-frame"] = {"miou": per_frame_miou, "fscore": per_frame_f}
        by_mode["dataset"] = {"miou": per_frame_miou, "fscore": dataset_f}
        if self.mode not in by_mode:
            raise TesoError(
                "AVSBenchMeter(mode='reference') needs the clip structure: pass clip_ids to update, feed "
                "[B, T, H, W] tensors, or give frames_per_clip to the meter"
            )
        chosen = by_mode[self.mode]
        return {
            "mode": self.mode,
            "miou": chosen["miou"],
            "fscore": chosen["fscore"],
            "miou_nonempty": (
                self._nonempty_iou_sum / self._nonempty_frames if self._nonempty_frames else float("nan")
            ),
            "threshold": self.threshold,
            "num_frames": self._num_frames,
            "num_nonempty_frames": self._nonempty_frames,
            "num_batches": num_batches,
            "by_mode": by_mode,
        }


def _group_values(ious: list[Tensor], curves: list[Tensor]) -> tuple[float, float]:
    """Reference mIoU and F of a group of frames (an evaluation batch, or one clip): the mean IoU, and
    the max over thresholds of the mean F curve of the non-empty frames (0 when there is none)."""
    iou = torch.cat(ious)
    curve = torch.cat(curves)
    fscore = float(curve.mean(0).max()) if curve.shape[0] else 0.0
    return float(iou.mean()), fscore


class SemanticMeter:
    """AVSS semantic mIoU and F over a split, accumulated from per-frame class histograms.

    Args:
        num_classes: 71 for AVSS (background is class 0).
        ignore_index: ground-truth label left out of every count (the AVSBench-semantic masks have none).
        beta2: F-score β² (0.3).

    ``update(pred, gt)`` with ``pred [N, C, H, W]`` scores or ``[N, H, W]`` indices and ``gt [N, H, W]``.
    """

    def __init__(
        self,
        num_classes: int = AVSS_NUM_CLASSES,
        ignore_index: int | None = 255,
        beta2: float = SEMANTIC_BETA2,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise TesoError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
        if not float(beta2) > 0:
            raise TesoError(f"beta2: expected a positive number, got {beta2!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.beta2 = float(beta2)
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self._num_frames = 0
        self._iou_sum = torch.zeros(c, dtype=torch.float64)
        self._f_sum = torch.zeros(c, dtype=torch.float64)
        self._frames_present = torch.zeros(c, dtype=torch.long)
        self._inter = torch.zeros(c, dtype=torch.long)
        self._pred = torch.zeros(c, dtype=torch.long)
        self._gt = torch.zeros(c, dtype=torch.long)

    def update(self, pred: Tensor, gt: Tensor) -> None:
        """Add frames: ``pred [N, C, H, W]`` scores or ``[N, H, W]`` indices, ``gt [N, H, W]`` indices."""
        inter, area_pred, area_gt = semantic_histograms(
            pred, gt, num_classes=self.num_classes, ignore_index=self.ignore_index
        )
        iou, f, present = iou_and_fscore_from_histograms(inter, area_pred, area_gt, self.beta2)
        self._num_frames += inter.shape[0]
        self._iou_sum += iou.sum(0).cpu()
        self._f_sum += f.sum(0).cpu()
        self._frames_present += present.sum(0).cpu()
        self._inter += inter.sum(0).cpu()
        self._pred += area_pred.sum(0).cpu()
        self._gt += area_gt.sum(0).cpu()

    def merge(self, other: SemanticMeter) -> None:
        """Add another meter's counts (e.g. gathered from another rank)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise TesoError("SemanticMeter.merge: the meters differ in num_classes or ignore_index")
        self._num_frames += other._num_frames
        for name in ("_iou_sum", "_f_sum", "_frames_present", "_inter", "_pred", "_gt"):
            getattr(self, name).add_(getattr(other, name))

    def compute(self) -> dict[str, Any]:
        """Split-level AVSS numbers.

        Returns:
            ``miou`` / ``fscore``: the reference's — per class, the mean over the frames where the class
            occurs (in the prediction or the ground truth) of the frame's IoU / F; classes that never occur
            score 0; mean over all ``num_classes`` classes.
            ``per_class_iou`` / ``per_class_fscore``: those per-class values (lists of ``num_classes``).
            ``class_frames``: in how many frames each class occurred.
            ``miou_present`` / ``fscore_present``: the same means over the classes that occurred only.
            ``miou_pooled`` / ``fscore_pooled`` and ``per_class_iou_pooled``: dataset-level per-class IoU
            (Σ intersection / Σ union over the split) and F (from the pooled precision and recall), averaged
            over the classes that occurred; absent classes are listed as 0.
            ``num_frames``.
        """
        if self._num_frames == 0:
            raise TesoError("SemanticMeter.compute: no frames were added (call update first)")
        present = self._frames_present > 0
        count = self._frames_present.double()
        per_class_iou = torch.nan_to_num(self._iou_sum / count, nan=0.0)
        per_class_f = torch.nan_to_num(self._f_sum / count, nan=0.0)
        iou_pooled, f_pooled, _ = iou_and_fscore_from_histograms(
            self._inter, self._pred, self._gt, self.beta2
        )
        iou_pooled = torch.where(present, iou_pooled, torch.zeros_like(iou_pooled))
        any_present = bool(present.any())

        def present_mean(values: Tensor) -> float:
            return float(values[present].mean()) if any_present else float("nan")

        return {
            "miou": float(per_class_iou.mean()),
            "fscore": float(per_class_f.mean()),
            "per_class_iou": per_class_iou.tolist(),
            "per_class_fscore": per_class_f.tolist(),
            "class_frames": self._frames_present.tolist(),
            "miou_present": present_mean(per_class_iou),
            "fscore_present": present_mean(per_class_f),
            "miou_pooled": present_mean(iou_pooled),
            "fscore_pooled": present_mean(f_pooled),
            "per_class_iou_pooled": iou_pooled.tolist(),
            "num_frames": self._num_frames,
        }
