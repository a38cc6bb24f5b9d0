"""Straightforward loop implementations of AVSBench's mIoU and F-score, written the way the reference
evaluates (a Python loop over frames and, for F, over the 255 thresholds). They are the baseline that
``teso bench`` and ``bench/metrics.py`` time the vectorised metrics against; tests compare values."""

from __future__ import annotations

import torch


def loop_miou(pred: torch.Tensor, gt: torch.Tensor, threshold: float = 0.5) -> float:
    """mIoU frame by frame, with the reference's empty-ground-truth rule and 1e-7 guard."""
    total = 0.0
    for p, g in zip(torch.sigmoid(pred), gt):
        b = (p > threshold).float()
        if g.sum() == 0:
            inter, union = ((1 - b) * (1 - g)).sum(), float(g.numel())
        else:
            inter, union = (b * g).sum(), torch.maximum(b, g).sum()
        total += float(inter / (union + 1e-7))
    return total / pred.shape[0]


def loop_fscore(pred: torch.Tensor, gt: torch.Tensor, num: int = 255, beta2: float = 0.3) -> float:
    """F-score of one batch, frame loop and threshold loop, as the reference's Eval_Fmeasure / _eval_pr."""
    prob = torch.sigmoid(pred)
    thresholds = torch.linspace(0, 1 - 1e-10, num)
    total, frames = torch.zeros(num), 0
    for p, g in zip(prob, gt):
        if torch.mean(g) == 0.0:
            continue
        prec, rec = torch.zeros(num), torch.zeros(num)
        for i in range(num):
            y = (p >= thresholds[i]).float()
            tp = (y * g).sum()
            prec[i], rec[i] = tp / (y.sum() + 1e-20), tp / (g.sum() + 1e-20)
        f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
        f[f != f] = 0
        total += f
        frames += 1
    return float((total / frames).max()) if frames else 0.0
