"""AVSS semantic metrics (71 classes, background = class 0), as AVSBench-semantic evaluates them.

Reference: ``_batch_miou_fscore`` / ``calc_color_miou_fscore`` of the AVSBench-semantic code and its
``eval`` script. For every frame and class the reference takes histograms (``torch.histc``, one bin per
class) of the predicted, ground-truth and correctly predicted pixels, and from them

* ``IoU[f, c] = inter / (union + 2.220446049250313e-16)``, ``union = pred + gt - inter``;
* ``F[f, c] = (1 + β²)·P·R / (β²·P + R)`` with ``P = inter / pred``, ``R = inter / gt``, β² = 0.3, NaN → 0;
* ``count[c]`` = the number of frames in which class ``c`` occurs in the prediction or the ground truth.

Over the split it sums ``IoU`` and ``F`` per class and divides by ``count`` (per-class mean over the frames
where the class occurs); a class that never occurs gets 0/0 = NaN, set to 0, and the final mIoU / F is the
mean over **all** classes — absent classes pull it down. ``teso.metrics.aggregate.SemanticMeter`` also
reports the mean over the classes that occur and a pooled (dataset-level) variant.

Here the histograms are one ``torch.bincount`` over (frame, class) indices for the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from teso.errors import TesoError

AVSS_NUM_CLASSES = 71
SEMANTIC_BETA2 = 0.3
# the float64 machine epsilon the reference adds to the union
SEMANTIC_IOU_EPS = 2.220446049250313e-16


def class_map(pred: Tensor, num_classes: int, name: str = "pred") -> Tensor:
    """Predicted class indices ``[N, H, W]`` int64 from scores ``[N, C, H, W]`` (argmax over C) or indices.

    Ties go to the lowest class index, as ``torch.argmax`` in the reference.
    """
    if not isinstance(pred, Tensor):
        raise TesoError(f"{name}: expected a torch tensor, got {type(pred).__name__}")
    if pred.dim() == 4:
        if pred.shape[1] != num_classes:
            raise TesoError(
                f"{name}: expected {num_classes} class scores in dimension 1 of [N, C, H, W], "
                f"got shape {list(pred.shape)}"
            )
        if not pred.is_floating_point():
            raise TesoError(f"{name}: [N, C, H, W] class scores must be floating point, got {pred.dtype}")
        return pred.argmax(1)
    if pred.dim() == 3:
        if pred.is_floating_point() or pred.dtype == torch.bool:
            raise TesoError(
                f"{name}: a [N, H, W] prediction must hold integer class indices, got dtype {pred.dtype}"
            )
        pred = pred.long()
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
            raise TesoError(
                f"{name}: class indices must lie in [0, {num_classes - 1}], found "
                f"[{int(pred.min())}, {int(pred.max())}]"
            )
        return pred
    raise TesoError(
        f"{name}: expected class scores [N, C, H, W] or class indices [N, H, W], got {list(pred.shape)}"
    )


def semantic_histograms(
    pred: Tensor,
    gt: Tensor,
    *,
    num_classes: int = AVSS_NUM_CLASSES,
    ignore_index: int | None = 255,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame, per-class pixel counts.

    Args:
        pred: ``[N, C, H, W]`` class scores or ``[N, H, W]`` class indices.
        gt: ``[N, H, W]`` integer class indices in ``[0, C)``; pixels equal to ``ignore_index`` are left
            out of every count (prediction included). The AVSBench-semantic masks have no ignore label.

    Returns:
        ``inter, area_pred, area_gt``: each ``[N, C]`` int64.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise TesoError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    labels = class_map(pred, num_classes)
    if not isinstance(gt, Tensor) or gt.dim() != 3:
        shape = list(gt.shape) if isinstance(gt, Tensor) else type(gt).__name__
        raise TesoError(f"gt: expected integer class indices [N, H, W], got {shape}")
    if gt.shape != labels.shape:
        raise TesoError(f"gt: expected shape {list(labels.shape)} to match pred, got {list(gt.shape)}")
    if gt.is_floating_point() or gt.dtype == torch.bool:
        raise TesoError(f"gt: expected integer class indices, got dtype {gt.dtype}")
    target = gt.long()
    n = target.shape[0]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if bool(((target[valid] < 0) | (target[valid] >= num_classes)).any()):
        bad = target[valid & ((target < 0) | (target >= num_classes))].flatten()[0].item()
        ignore = "" if ignore_index is None else f" or the ignore index {ignore_index}"
        raise TesoError(f"gt: class indices must lie in [0, {num_classes - 1}]{ignore}, found {bad}")
    offsets = torch.arange(n, device=target.device).view(n, 1, 1) * num_classes
    size = n * num_classes
    pred_index = (labels + offsets)[valid]
    gt_index = (target + offsets)[valid]
    area_pred = torch.bincount(pred_index, minlength=size).view(n, num_classes)
    area_gt = torch.bincount(gt_index, minlength=size).view(n, num_classes)
    hit = (labels == target)[valid]
    inter = torch.bincount(gt_index[hit], minlength=size).view(n, num_classes)
    return inter, area_pred, area_gt


def iou_and_fscore_from_histograms(
    inter: Tensor, area_pred: Tensor, area_gt: Tensor, beta2: float = SEMANTIC_BETA2
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference per-(frame, class) IoU and F, ``[..., C]`` float64, and the occurrence flags (union > 0)."""
    i = inter.double()
    p = area_pred.double()
    g = area_gt.double()
    union = p + g - i
    iou = i / (union + SEMANTIC_IOU_EPS)
    precision = i / p
    recall = i / g
    f = torch.nan_to_num((1 + beta2) * precision * recall / (beta2 * precision + recall), nan=0.0)
    return iou, f, union > 0


def avss_miou_fscore(
    pred: Tensor,
    gt: Tensor,
    *,
    num_classes: int = AVSS_NUM_CLASSES,
    ignore_index: int | None = 255,
    beta2: float = SEMANTIC_BETA2,
) -> tuple[float, float]:
    """AVSS mIoU and F of a set of frames, with the reference's averaging (absent classes count as 0).

    ``pred [N, C, H, W]`` scores or ``[N, H, W]`` indices, ``gt [N, H, W]``. For a whole split use
    ``teso.metrics.aggregate.SemanticMeter``, which gives the same numbers without holding every frame.
    """
    inter, area_pred, area_gt = semantic_histograms(
        pred, gt, num_classes=num_classes, ignore_index=ignore_index
    )
    iou, f, present = iou_and_fscore_from_histograms(inter, area_pred, area_gt, beta2)
    count = present.sum(0).double()
    per_class_iou = torch.nan_to_num(iou.sum(0) / count, nan=0.0)
    per_class_f = torch.nan_to_num(f.sum(0) / count, nan=0.0)
    return float(per_class_iou.mean()), float(per_class_f.mean())
