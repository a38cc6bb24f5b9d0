"""Binary AVSBench metrics (S4, MS3, AVSS-binary): mIoU and the 255-threshold F-score.

The numbers match AVSBench's reference evaluation (``mask_iou``, ``Eval_Fmeasure`` and ``_eval_pr`` in
``avs_scripts/avs_s4/utils/utility.py``), rule for rule, but are computed without a Python loop over
frames or thresholds:

* IoU per frame: prediction = ``sigmoid(logit) > threshold`` (0.5 in AVSBench); ``|P∩G| / (|P∪G| + 1e-7)``.
  A frame whose ground truth is empty scores ``(#pixels predicted background) / (#pixels)`` — the
  reference replaces the intersection by the count of pixels that are background in both and the union
  by the number of pixels.
* F per frame and threshold: probabilities ``sigmoid(logit)`` against the 255 thresholds
  ``linspace(0, 1 - 1e-10, 255)`` built in float32 (so the last one is exactly 1.0), a pixel is positive
  when ``prob >= threshold``; ``precision = TP / (#positive + 1e-20)``, ``recall = TP / (#gt + 1e-20)``,
  ``F = (1 + β²)·P·R / (β²·P + R)`` with β² = 0.3 and NaN (P = R = 0) replaced by 0. Frames with an empty
  ground truth are skipped.
* The reference F of one evaluation batch is ``max over thresholds of (mean over the batch's non-empty
  frames of the per-frame F curves)``, 0 when the batch has no non-empty frame. Note: the mean is taken of
  the F *curves*, not of the precision / recall curves.

See ``docs/metrics.md`` for the aggregations over a split (``teso.metrics.aggregate``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from teso.errors import TesoError

REFERENCE_THRESHOLD = 0.5
REFERENCE_BETA2 = 0.3
REFERENCE_NUM_THRESHOLDS = 255
REFERENCE_IOU_EPS = 1e-7
REFERENCE_PR_EPS = 1e-20

# bucketize + bincount allocate a few int64 buffers of this many elements; bounds peak memory.
_CHUNK_ELEMENTS = 1 << 22
# closed-form threshold index on the reference grid: values this close (in grid steps) to a threshold are
# bucketized exactly; the float32 error of prob·(K-1) is about K·6e-8 steps, so K stays far below 1e3/6e-8.
_GRID_BAND = 1e-3
_MAX_UNIFORM_THRESHOLDS = 4096


def reference_thresholds(
    num_thresholds: int = REFERENCE_NUM_THRESHOLDS, device: torch.device | str | None = None
) -> Tensor:
    """The reference's F-score thresholds ``linspace(0, 1 - 1e-10, K)`` as float32, shape ``[K]``.

    float32 is deliberate: it is what the reference builds, and ``1 - 1e-10`` rounds to 1.0 there, so the
    last threshold only counts pixels whose probability is exactly 1.
    """
    if not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise TesoError(f"num_thresholds: expected an integer >= 2, got {num_thresholds!r}")
    return torch.linspace(0, 1 - 1e-10, num_thresholds, dtype=torch.float32, device=device)


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    if not isinstance(pred, Tensor) or not isinstance(gt, Tensor):
        raise TesoError(f"pred/gt: expected torch tensors, got {type(pred).__name__} and {type(gt).__name__}")
    if pred.dim() != 3:
        raise TesoError(f"pred: expected shape [N, H, W], got {list(pred.shape)}")
    if pred.shape != gt.shape:
        raise TesoError(f"gt: expected the shape of pred {list(pred.shape)}, got {list(gt.shape)}")
    if not pred.is_floating_point():
        raise TesoError(f"pred: expected floating-point logits or probabilities, got dtype {pred.dtype}")


def binary_gt(gt: Tensor, name: str = "gt") -> Tensor:
    """Validate a binary ground truth (bool, or numbers that are all 0 or 1) and return it as bool."""
    if gt.dtype == torch.bool:
        return gt
    bad = (gt != 0) & (gt != 1)
    if bool(bad.any()):
        value = gt[bad].flatten()[0].item()
        raise TesoError(
            f"{name}: expected a binary mask with values 0/1 (or bool), found the value {value}; "
            "convert colour or 0/255 masks to 0/1 first"
        )
    return gt != 0


def to_probabilities(pred: Tensor, *, from_logits: bool, name: str = "pred") -> Tensor:
    """Logits → ``sigmoid`` probabilities (or check given probabilities), float32 or float64, same shape.

    Half-precision inputs are promoted to float32 first; comparisons against the float32 thresholds are
    then the ones the reference makes after type promotion.
    """
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()
    if bool(torch.isnan(pred).any()):
        raise TesoError(f"{name}: contains NaN; expected finite logits or probabilities")
    if from_logits:
        return torch.sigmoid(pred)
    if pred.numel() and (float(pred.min()) < 0.0 or float(pred.max()) > 1.0):
        raise TesoError(
            f"{name}: from_logits=False expects probabilities in [0, 1], found values in "
            f"[{float(pred.min()):.4g}, {float(pred.max()):.4g}] (pass from_logits=True for logits)"
        )
    return pred


def _check_threshold(threshold: float) -> None:
    if not (0.0 <= float(threshold) < 1.0):
        raise TesoError(f"threshold: expected a value in [0, 1), got {threshold!r}")


def iou_from_probabilities(prob: Tensor, gt: Tensor, threshold: float = REFERENCE_THRESHOLD) -> Tensor:
    """Per-frame IoU from probabilities ``[N, H, W]`` and a bool ground truth ``[N, H, W]`` → ``[N]`` float64.

    Empty ground truth: ``#(pred background) / #pixels`` (the reference rule).
    """
    n = prob.shape[0]
    num_pixels = prob.shape[-1] * prob.shape[-2]
    positive = (prob > threshold).reshape(n, -1)
    target = gt.reshape(n, -1)
    inter = (positive & target).sum(1)
    union = (positive | target).sum(1)
    gt_count = target.sum(1)
    empty = gt_count == 0
    # For an empty ground truth the reference's intersection of the complements is the background count.
    background = num_pixels - positive.sum(1)
    inter = torch.where(empty, background, inter).double()
    union = torch.where(empty, torch.full_like(union, num_pixels), union).double()
    return inter / (union + REFERENCE_IOU_EPS)


def per_frame_iou(
    pred: Tensor,
    gt: Tensor,
    *,
    threshold: float = REFERENCE_THRESHOLD,
    from_logits: bool = True,
) -> Tensor:
    """IoU of each frame, ``[N]`` float64.

    Args:
        pred: ``[N, H, W]`` logits (``from_logits=True``: ``sigmoid`` then ``> threshold``) or
            probabilities in [0, 1] (``from_logits=False``: ``> threshold``).
        gt: ``[N, H, W]`` binary ground truth (bool or 0/1 numbers).
        threshold: 0.5 in AVSBench; the official TeSO code uses 0.4.

    A frame with an empty ground truth scores the fraction of its pixels predicted background (1.0 when
    nothing is predicted), exactly as AVSBench's ``mask_iou``.
    """
    _check_pair(pred, gt)
    _check_threshold(threshold)
    target = binary_gt(gt)
    prob = to_probabilities(pred, from_logits=from_logits)
    return iou_from_probabilities(prob, target, threshold)


def avsbench_miou(
    pred: Tensor,
    gt: Tensor,
    *,
    threshold: float = REFERENCE_THRESHOLD,
    from_logits: bool = True,
) -> Tensor:
    """Mean IoU over the ``N`` frames of ``pred``/``gt`` ``[N, H, W]``: a scalar float64 tensor.

    This is the reference's ``mask_iou`` for one evaluation batch (empty frames included with the
    background rule, see :func:`per_frame_iou`).
    """
    return per_frame_iou(pred, gt, threshold=threshold, from_logits=from_logits).mean()


def _thresholds_passed(prob: Tensor, bounds: Tensor, uniform: bool) -> Tensor:
    """``#{k : bounds[k] <= prob}`` per element, int64, same shape as ``prob``.

    For the reference grid ``t_k ≈ k / (K - 1)`` the count is ``floor(prob · (K - 1)) + 1`` except for
    values within rounding distance of a threshold; those few (a 1e-3 band in grid units, far wider than
    the float32 error of t_k and of the product) are settled by an exact ``bucketize``. Three times faster
    than bucketizing every pixel, with identical results.
    """
    if not uniform:
        return torch.bucketize(prob, bounds, right=True)
    k = bounds.numel()
    scaled = prob * (k - 1)
    whole = scaled.floor()
    frac = scaled - whole
    near = (frac < _GRID_BAND) | (frac > 1 - _GRID_BAND)
    passed = whole.to(torch.long).add_(1).clamp_(max=k)
    index = near.nonzero(as_tuple=True)
    passed[index] = torch.bucketize(prob[index], bounds, right=True)
    return passed


def threshold_counts(prob: Tensor, gt: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame positive and true-positive pixel counts at each threshold.

    Args:
        prob: ``[N, H, W]`` (or ``[N, P]``) probabilities, float32 or float64.
        gt: bool ground truth of the same shape.
        thresholds: ``[K]`` increasing thresholds; a pixel is positive at threshold k when ``prob >= t_k``.

    Returns:
        ``positive [N, K]``, ``true_positive [N, K]`` and ``gt_count [N]``, all int64.

    The number of thresholds each pixel passes (see ``_thresholds_passed``); a histogram of it (per frame,
    and per frame restricted to ground-truth pixels) read as a reversed cumulative sum gives the counts for
    all thresholds at once — exact, the comparisons are the reference's ``prob >= t``.
    """
    n = prob.shape[0]
    k = thresholds.numel()
    flat_prob = prob.reshape(n, -1)
    flat_gt = gt.reshape(n, -1)
    bounds = thresholds.to(device=prob.device, dtype=prob.dtype)
    uniform = (
        2 <= k <= _MAX_UNIFORM_THRESHOLDS
        and thresholds.dtype == torch.float32
        and torch.equal(thresholds.cpu(), reference_thresholds(k))
    )
    per_frame = max(1, _CHUNK_ELEMENTS // max(1, flat_prob.shape[1]))
    hists = []
    for start in range(0, n, per_frame):
        p = flat_prob[start : start + per_frame]
        g = flat_gt[start : start + per_frame]
        m = p.shape[0]
        passed = _thresholds_passed(p, bounds, uniform)  # [m, P] in 0..K: how many t_k <= prob
        # one bin per (frame, passed, is-gt) triple, so a single bincount gives both histograms
        offsets = torch.arange(m, device=p.device).unsqueeze(1) * (2 * (k + 1))
        index = passed.mul_(2).add_(g).add_(offsets)
        hists.append(torch.bincount(index.reshape(-1), minlength=m * 2 * (k + 1)).view(m, k + 1, 2))
    hist = torch.cat(hists) if hists else torch.zeros(0, k + 1, 2, dtype=torch.long, device=prob.device)
    # count(prob >= t_i) = number of pixels that passed more than i thresholds
    at_least = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # [N, K, 2]
    true_positive = at_least[..., 1]
    positive = at_least[..., 0] + true_positive
    gt_count = flat_gt.sum(1)
    return positive, true_positive, gt_count


def fscore_from_counts(
    positive: Tensor, true_positive: Tensor, gt_count: Tensor, beta2: float = REFERENCE_BETA2
) -> Tensor:
    """F curves ``[..., K]`` float64 from ``positive, true_positive [..., K]`` and ``gt_count [...]``.

    Uses the reference's guards (``+1e-20`` in both denominators, NaN → 0).
    """
    tp = true_positive.double()
    precision = tp / (positive.double() + REFERENCE_PR_EPS)
    recall = tp / (gt_count.double().unsqueeze(-1) + REFERENCE_PR_EPS)
    f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    return torch.nan_to_num(f, nan=0.0)


def _check_f_args(beta2: float, num_thresholds: int) -> None:
    if not float(beta2) > 0:
        raise TesoError(f"beta2: expected a positive number, got {beta2!r}")
    reference_thresholds(num_thresholds)  # validates num_thresholds


def fscore_curves_from_probabilities(
    prob: Tensor,
    gt: Tensor,
    *,
    beta2: float = REFERENCE_BETA2,
    num_thresholds: int = REFERENCE_NUM_THRESHOLDS,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """F curves of every frame from probabilities.

    Returns ``(curves [N, K] float64, nonempty [N] bool, positive [N, K], true_positive [N, K])``; the
    curve of a frame with an empty ground truth is all zeros and must be skipped (``nonempty`` is False).
    """
    thresholds = reference_thresholds(num_thresholds, device=prob.device)
    positive, true_positive, gt_count = threshold_counts(prob, gt, thresholds)
    curves = fscore_from_counts(positive, true_positive, gt_count, beta2)
    return curves, gt_count > 0, positive, true_positive


def fscore_curves(
    pred: Tensor,
    gt: Tensor,
    *,
    from_logits: bool = True,
    beta2: float = REFERENCE_BETA2,
    num_thresholds: int = REFERENCE_NUM_THRESHOLDS,
) -> tuple[Tensor, Tensor]:
    """Per-frame F curves ``[N, K]`` float64 and the non-empty-ground-truth flags ``[N]`` bool.

    ``pred``/``gt`` as in :func:`avsbench_fscore`.
    """
    _check_pair(pred, gt)
    _check_f_args(beta2, num_thresholds)
    target = binary_gt(gt)
    prob = to_probabilities(pred, from_logits=from_logits)
    curves, nonempty, _, _ = fscore_curves_from_probabilities(
        prob, target, beta2=beta2, num_thresholds=num_thresholds
    )
    return curves, nonempty


def batch_fscore_from_curves(curves: Tensor, nonempty: Tensor) -> float:
    """The reference's F of one batch: max over thresholds of the mean curve of its non-empty frames.

    ``curves [N, K]``, ``nonempty [N]``. A batch without a non-empty frame scores 0.0, as in the reference
    (its running score stays at ``zeros(K)``).
    """
    if not bool(nonempty.any()):
        return 0.0
    return float(curves[nonempty].mean(0).max())


def avsbench_fscore(
    pred: Tensor,
    gt: Tensor,
    *,
    from_logits: bool = True,
    beta2: float = REFERENCE_BETA2,
    num_thresholds: int = REFERENCE_NUM_THRESHOLDS,
) -> float:
    """AVSBench's F-score of one evaluation batch (``Eval_Fmeasure``).

    Args:
        pred: ``[N, H, W]`` logits (``from_logits=True``) or probabilities in [0, 1].
        gt: ``[N, H, W]`` binary ground truth.

    Frames with an empty ground truth are skipped; the per-frame F curves of the others are averaged and
    the maximum over the thresholds is returned (0.0 when every frame is empty). The value depends on
    which frames are evaluated together; see :func:`per_frame_fscore` for a batch-independent variant.
    """
    curves, nonempty = fscore_curves(
        pred, gt, from_logits=from_logits, beta2=beta2, num_thresholds=num_thresholds
    )
    return batch_fscore_from_curves(curves, nonempty)


def per_frame_fscore(
    pred: Tensor,
    gt: Tensor,
    *,
    from_logits: bool = True,
    beta2: float = REFERENCE_BETA2,
    num_thresholds: int = REFERENCE_NUM_THRESHOLDS,
) -> Tensor:
    """Each frame's own best F (max over thresholds of its F curve), ``[N]`` float64.

    Frames with an empty ground truth have no F (the reference skips them): their entry is NaN, so that a
    careless mean fails loudly; average with ``values[~values.isnan()]`` or use ``AVSBenchMeter``.
    """
    curves, nonempty = fscore_curves(
        pred, gt, from_logits=from_logits, beta2=beta2, num_thresholds=num_thresholds
    )
    best = curves.max(1).values if curves.shape[0] else curves.new_zeros(0)
    return torch.where(nonempty, best, torch.full_like(best, float("nan")))
