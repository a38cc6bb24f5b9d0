"""TeSOLoss against values worked out by hand: 2 queries, 1 target, every term written out in numpy.

The set-prediction loss samples points at random (the matcher's uniform points, then the loss's
oversampled candidates and its uniform share). To make it exact, ``torch.rand`` is replaced for the
call by a function that returns pixel centres of the 4×4 maps, every pixel equally often. At a pixel
centre, ``grid_sample`` (bilinear, ``align_corners=False``) hits the pixel exactly (the coordinates
(2j+1)/4 are exact in float32), so every sampled value is a pixel value and every point-sampled mean
is a count-weighted mean over pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from teso.model.config import LossConfig
from teso.model.losses import TeSOLoss

H = W = 4  # pixels per map; every "random" point is one of these 16 pixel centres
POINTS = 64  # train_num_points; a multiple of 16, and so is its uniform quarter (16)
OVERSAMPLE = 3.0  # Mask2Former default: 192 candidates = 12 per pixel
IMPORTANCE = 0.75  # Mask2Former default: 48 points by uncertainty, 16 uniform

# Target: the left half of the frame (8 foreground pixels, 8 background).
TARGET = np.zeros((H, W))
TARGET[:, :2] = 1.0
N_FG = N_BG = 8

# Query 1 is the good one: its mask agrees with the target and its class says "object". Query 0 is
# the opposite on both counts. The good query is the second one, so "match query 0" would fail.
GOOD_FG, GOOD_BG = 2.0, -1.0  # query 1 mask logits on target fg / bg
BAD_FG, BAD_BG = -3.0, 1.5  # query 0 mask logits on target fg / bg
GOOD_CLS = [1.5, -0.5]  # query 1 class logits [class 0, no object]
BAD_CLS = [-1.0, 2.0]  # query 0 class logits

# Relative tolerance: the library works in float32 (eps ≈ 1.2e-7); each term is a few softplus/sigmoid/
# log-softmax evaluations, a sum over at most 64 points and one or two divisions, which lands within a
# few ulps of the float64 value computed here (observed ≤ 2.6e-7 relative). 1e-6 leaves about 4× room
# for another summation order, while any wrong count, weight, matching or formula moves a term by ≥ 1e-2.
REL = 1e-6


def _masks(fg: float, bg: float) -> np.ndarray:
    return np.where(TARGET > 0, fg, bg)


def _inputs(swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [1, 2, 2] and mask logits [1, 2, H, W]; ``swap`` puts the good query first."""
    cls = [BAD_CLS, GOOD_CLS]
    msk = [_masks(BAD_FG, BAD_BG), _masks(GOOD_FG, GOOD_BG)]
    if swap:
        cls, msk = cls[::-1], msk[::-1]
    return (
        torch.tensor([cls], dtype=torch.float32),
        torch.tensor(np.stack(msk)[None], dtype=torch.float32),
    )


@pytest.fixture
def pixel_centre_rand(monkeypatch):
    """``torch.rand(b, n, 2)`` → the 16 pixel centres (x, y) repeated n/16 times, for each of b rows."""
    ys, xs = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W, indexing="ij")
    centres = torch.tensor(np.stack([xs.ravel(), ys.ravel()], axis=1), dtype=torch.float32)
    calls = []

    def fake(*size, device=None, **kwargs):
        if len(size) == 1 and not isinstance(size[0], int):
            size = tuple(size[0])
        b, n, two = size
        assert two == 2 and n % (H * W) == 0, f"unexpected torch.rand{size}"
        calls.append(tuple(size))
        return centres.repeat(b, n // (H * W), 1).to(device)

    monkeypatch.setattr(torch, "rand", fake)
    return calls


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x: float, y: float) -> float:
    """Binary cross-entropy of logit x against label y: softplus(x) − x·y."""
    return _softplus(x) - x * y


def _point_terms(points: list[tuple[int, float, float]]) -> tuple[float, float]:
    """BCE mean and Dice of (count, logit, label) groups of sampled points (one target: num_masks = 1)."""
    n = sum(c for c, _, _ in points)
    bce = sum(c * _bce(x, y) for c, x, y in points) / n
    inter = sum(c * _sigmoid(x) * y for c, x, y in points)
    denom = sum(c * _sigmoid(x) for c, x, _ in points) + sum(c * y for c, _, y in points)
    dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)  # Mask2Former's Dice, +1 smoothing
    return bce, dice


def _ce(logits: list[float], target: int) -> float:
    """−log softmax(logits)[target]."""
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(v - m) for v in logits)))


def _hand_terms(match_good: bool) -> dict[str, float]:
    """The weighted terms when the good (``True``) or the bad query is the one matched to the target."""
    fg, bg = (GOOD_FG, GOOD_BG) if match_good else (BAD_FG, BAD_BG)
    matched_cls, other_cls = (GOOD_CLS, BAD_CLS) if match_good else (BAD_CLS, GOOD_CLS)
    # Importance sampling: 192 candidates (12 per pixel); the 48 with the largest uncertainty −|logit|
    # are kept. Background pixels have the smaller |logit| for both queries and 96 candidates, so all
    # 48 are background points (ties are between equal values: which ones does not matter). Then 16
    # uniform points: every pixel once. Total: 48 + 8 background, 8 foreground.
    assert abs(bg) < abs(fg)
    n_unc = int(IMPORTANCE * POINTS)
    n_uniform = POINTS - n_unc
    assert (n_unc, n_uniform) == (48, 16) and n_unc <= 12 * N_BG
    bce, dice = _point_terms([(n_unc + N_BG * n_uniform // 16, bg, 0.0), (N_FG * n_uniform // 16, fg, 1.0)])
    # Cross-entropy, weighted mean over queries: the matched query's target is class 0 (weight 1), the
    # other's is "no object" (index 1, weight 0.1); the mean divides by the sum of the weights.
    ce = (1.0 * _ce(matched_cls, 0) + 0.1 * _ce(other_cls, 1)) / (1.0 + 0.1)
    return {"mask": 5.0 * bce, "dice": 5.0 * dice, "class": 2.0 * ce}


def _loss(**overrides) -> TeSOLoss:
    config = LossConfig(
        train_num_points=POINTS, oversample_ratio=OVERSAMPLE, importance_sample_ratio=IMPORTANCE, **overrides
    )
    return TeSOLoss(config, num_classes=1)


def test_hand_values_are_what_the_test_assumes():
    """Spot-check the hand formulas on plain numbers, so a slip in the helpers cannot hide."""
    assert _bce(0.0, 1.0) == pytest.approx(math.log(2))
    assert _bce(2.0, 1.0) == pytest.approx(math.log(1 + math.exp(-2)))
    assert _ce([0.0, 0.0], 1) == pytest.approx(math.log(2))
    good = _hand_terms(True)
    # 56 background points at logit −1, 8 foreground at logit 2:
    bce = (56 * math.log(1 + math.e**-1) + 8 * math.log(1 + math.e**-2)) / 64
    p_bg, p_fg = 1 / (1 + math.e), 1 / (1 + math.e**-2)
    dice = 1 - (2 * 8 * p_fg + 1) / (56 * p_bg + 8 * p_fg + 8 + 1)
    ce = (math.log(1 + math.e**-2) + 0.1 * math.log(1 + math.e**-3)) / 1.1
    assert good["mask"] == pytest.approx(5 * bce, rel=1e-12)
    assert good["dice"] == pytest.approx(5 * dice, rel=1e-12)
    assert good["class"] == pytest.approx(2 * ce, rel=1e-12)
    # ... which are, to 7 digits:
    assert (5 * bce, 5 * dice, 2 * ce) == pytest.approx((1.4498499, 2.5740659, 0.2396123), abs=1e-7)


def test_matcher_picks_the_good_query(pixel_centre_rand):
    """Matching cost (5·BCE + 5·Dice − 2·p(class) over 64 uniform points = 4 per pixel) by hand, and
    the library's Hungarian matcher agreeing: the target goes to query 1."""
    class_logits, mask_logits = _inputs()
    loss = _loss()

    def cost(fg: float, bg: float, cls: list[float]) -> float:
        bce, dice = _point_terms([(4 * N_BG, bg, 0.0), (4 * N_FG, fg, 1.0)])
        p_obj = math.exp(cls[0]) / (math.exp(cls[0]) + math.exp(cls[1]))
        return 5.0 * bce + 5.0 * dice - 2.0 * p_obj

    good, bad = cost(GOOD_FG, GOOD_BG, GOOD_CLS), cost(BAD_FG, BAD_BG, BAD_CLS)
    assert good < bad - 10  # unambiguous: ≈ 0.23 against ≈ 16.45
    target = torch.tensor(TARGET, dtype=torch.float32)[None]
    ((src, tgt),) = loss.criterion.matcher(
        mask_logits, class_logits, [target], [torch.zeros(1, dtype=torch.long)]
    )
    assert src.tolist() == [1] and tgt.tolist() == [0]
    assert pixel_centre_rand == [(1, POINTS, 2)]


def test_set_prediction_loss_matches_hand_computation(pixel_centre_rand):
    class_logits, mask_logits = _inputs()
    aux_class, aux_mask = _inputs(swap=True)  # the intermediate layer has the good query first
    masks = torch.tensor(TARGET, dtype=torch.float32)[None]  # one annotated binary frame
    infonce = torch.tensor(0.25)
    out = _loss(deep_supervision=True, infonce_weight=0.5)(
        [aux_class, class_logits], [aux_mask, mask_logits], masks, infonce
    )
    want = _hand_terms(match_good=True)
    wrong = _hand_terms(match_good=False)
    assert all(abs(want[k] - wrong[k]) > 0.1 for k in want)  # the matching decides every term

    assert out["loss_mask"].item() == pytest.approx(want["mask"], rel=REL)
    assert out["loss_dice"].item() == pytest.approx(want["dice"], rel=REL)
    assert out["loss_class"].item() == pytest.approx(want["class"], rel=REL)
    # Deep supervision: the intermediate layer is matched on its own (its good query is query 0) and
    # gives the same three terms, summed.
    final = sum(want.values())
    assert out["loss_aux"].item() == pytest.approx(final, rel=REL)
    assert out["loss_seg"].item() == pytest.approx(2 * final, rel=REL)
    assert out["loss"].item() == pytest.approx(2 * final + 0.5 * 0.25, rel=REL)
    # Per layer: matcher points, then the loss's candidates and uniform points.
    candidates = int(POINTS * OVERSAMPLE)
    per_layer = [(1, POINTS, 2), (1, candidates, 2), (1, POINTS - int(IMPORTANCE * POINTS), 2)]
    assert pixel_centre_rand == per_layer * 2


def test_without_deep_supervision_only_the_final_layer_counts(pixel_centre_rand):
    class_logits, mask_logits = _inputs()
    masks = torch.tensor(TARGET, dtype=torch.float32)[None]
    garbage = torch.full_like(class_logits, 7.0), torch.full_like(mask_logits, -9.0)
    out = _loss(deep_supervision=False)(
        [garbage[0], class_logits], [garbage[1], mask_logits], masks, torch.tensor(0.0)
    )
    want = _hand_terms(match_good=True)
    assert out["loss_aux"].item() == 0.0
    assert out["loss_seg"].item() == pytest.approx(sum(want.values()), rel=REL)


def test_empty_frame_pushes_every_query_to_no_object(pixel_centre_rand):
    """No target: no mask terms; the class term is the plain mean of −log p(no object) (weights all 0.1)."""
    class_logits, mask_logits = _inputs()
    masks = torch.zeros(1, H, W)
    out = _loss(deep_supervision=False)([class_logits], [mask_logits], masks, torch.tensor(0.0))
    ce = (_ce(GOOD_CLS, 1) + _ce(BAD_CLS, 1)) / 2  # ≈ (2.1269 + 0.0486) / 2
    assert out["loss_mask"].item() == 0.0 and out["loss_dice"].item() == 0.0
    assert out["loss_class"].item() == pytest.approx(2.0 * ce, rel=REL)
