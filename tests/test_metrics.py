"""Tests for teso.metrics: hand-computed values, the reference's rules, and loop cross-checks."""

from __future__ import annotations

import math

import pytest
import torch

import teso.metrics.avsbench as avsbench_module
from teso.errors import TesoError
from teso.metrics import (
    AVSBenchMeter,
    ForegroundRateMeter,
    PreferenceRateMeter,
    SemanticMeter,
    avsbench_fscore,
    avsbench_miou,
    avss_miou_fscore,
    foreground_rate,
    per_frame_fscore,
    per_frame_iou,
    preference_rate,
    reference_thresholds,
    relative_drop,
    threshold_counts,
)

BIG = 8.0  # a logit whose sigmoid is far from every decision threshold used here


def logits(fg: list[list[int]] | torch.Tensor) -> torch.Tensor:
    """+BIG where the mask is 1, -BIG elsewhere: an unambiguous prediction, [H, W] float32."""
    return (torch.as_tensor(fg, dtype=torch.float32) * 2 - 1) * BIG


# --- straightforward loop implementations, written the way the reference is (frame loop, threshold loop)


def loop_miou(pred: torch.Tensor, gt: torch.Tensor, threshold: float = 0.5) -> float:
    total = 0.0
    for p, g in zip(torch.sigmoid(pred), gt.float()):
        b = (p > threshold).float()
        if g.sum() == 0:
            inter, union = ((1 - b) * (1 - g)).sum(), float(g.numel())
        else:
            inter, union = (b * g).sum(), torch.maximum(b, g).sum()
        total += float(inter / (union + 1e-7))
    return total / pred.shape[0]


def loop_f_curve(prob: torch.Tensor, g: torch.Tensor, num: int = 255) -> torch.Tensor:
    thresholds = torch.linspace(0, 1 - 1e-10, num)
    prec, rec = torch.zeros(num), torch.zeros(num)
    for i in range(num):
        y = (prob >= thresholds[i]).float()
        tp = (y * g).sum()
        prec[i], rec[i] = tp / (y.sum() + 1e-20), tp / (g.sum() + 1e-20)
    f = 1.3 * prec * rec / (0.3 * prec + rec)
    f[f != f] = 0
    return f


def loop_fscore(pred: torch.Tensor, gt: torch.Tensor) -> float:
    prob, g = torch.sigmoid(pred), gt.float()
    curves = [loop_f_curve(prob[i], g[i]) for i in range(pred.shape[0]) if g[i].mean() != 0]
    if not curves:
        return 0.0
    return float(torch.stack(curves).mean(0).max())


def random_batch(
    n: int, size: int, seed: int, empty: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    gt = (torch.rand(n, size, size, generator=gen) > 0.7).float()
    for i in empty:
        gt[i] = 0
    pred = torch.randn(n, size, size, generator=gen) * 1.5 + gt * 1.2 - 0.3
    return pred, gt


# --- IoU ------------------------------------------------------------------------------------------


def test_iou_hand_computed_values():
    gt = torch.tensor(
        [
            [[1, 0], [0, 0]],  # pred 2 px incl. the gt px: 1 / 2
            [[0, 0], [0, 0]],  # empty gt, nothing predicted: all background -> 1
            [[0, 0], [0, 0]],  # empty gt, half predicted foreground -> 0.5
            [[1, 1], [1, 1]],  # full gt, nothing predicted -> 0
        ]
    )
    pred = torch.stack(
        [
            logits([[1, 1], [0, 0]]),
            logits([[0, 0], [0, 0]]),
            logits([[1, 0], [1, 0]]),
            logits([[0, 0], [0, 0]]),
        ]
    )
    iou = per_frame_iou(pred, gt)
    assert iou.shape == (4,)
    assert iou.tolist() == pytest.approx([0.5, 1.0, 0.5, 0.0], abs=1e-6)
    assert float(avsbench_miou(pred, gt)) == pytest.approx(0.5, abs=1e-6)


def test_iou_3x3_and_threshold_and_probabilities():
    gt = torch.tensor([[[1, 1, 0], [1, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    # 4 predicted pixels, 2 of them on the 3 gt pixels: 2 / (3 + 4 - 2)
    pred = logits([[1, 0, 1], [1, 1, 0], [0, 0, 0]]).unsqueeze(0)
    assert float(avsbench_miou(pred, gt)) == pytest.approx(0.4, abs=1e-6)
    # probabilities 0.45 on the gt pixels: foreground at threshold 0.4 (TeSO's code), not at 0.5 (AVSBench)
    prob = gt.float() * 0.45
    assert float(avsbench_miou(prob, gt, from_logits=False, threshold=0.4)) == pytest.approx(1.0, abs=1e-6)
    assert float(avsbench_miou(prob, gt, from_logits=False, threshold=0.5)) == pytest.approx(0.0, abs=1e-6)


def test_iou_matches_loop_on_random_data():
    pred, gt = random_batch(7, 20, seed=1, empty=(2, 5))
    assert float(avsbench_miou(pred, gt)) == pytest.approx(loop_miou(pred, gt), abs=1e-6)
    assert float(avsbench_miou(pred, gt, threshold=0.4)) == pytest.approx(loop_miou(pred, gt, 0.4), abs=1e-6)


def test_bad_inputs_raise_teso_error():
    pred = torch.zeros(2, 3, 3)
    with pytest.raises(TesoError, match="gt"):
        avsbench_miou(pred, torch.full((2, 3, 3), 255))
    with pytest.raises(TesoError, match=r"\[N, H, W\]"):
        avsbench_miou(torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(TesoError, match="shape"):
        avsbench_fscore(pred, torch.zeros(2, 3, 4))
    with pytest.raises(TesoError, match="from_logits"):
        avsbench_fscore(pred - 3.0, torch.zeros(2, 3, 3), from_logits=False)
    with pytest.raises(TesoError, match="NaN"):
        avsbench_miou(torch.full((1, 2, 2), float("nan")), torch.zeros(1, 2, 2))
    with pytest.raises(TesoError, match="threshold"):
        avsbench_miou(pred, torch.zeros(2, 3, 3), threshold=1.5)
    with pytest.raises(TesoError, match="mode"):
        AVSBenchMeter(mode="batchwise")


# --- F-score --------------------------------------------------------------------------------------


def test_reference_thresholds_are_float32_linspace():
    t = reference_thresholds()
    assert t.shape == (255,) and t.dtype == torch.float32
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0  # 1 - 1e-10 rounds to 1 in float32


def test_perfectly_separable_prediction_scores_one():
    gt = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1], [0, 1, 1]]])
    pred = torch.stack([logits(gt[0]), logits(gt[1])])
    assert avsbench_fscore(pred, gt) == pytest.approx(1.0, abs=1e-9)
    assert per_frame_fscore(pred, gt).tolist() == pytest.approx([1.0, 1.0], abs=1e-9)


def test_precision_recall_counts_hand_computed():
    prob = torch.tensor([[[0.1, 0.3, 0.5], [0.7, 0.9, 0.2], [0.0, 0.05, 0.35]]])
    gt = torch.tensor([[[0, 1, 0], [0, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    thresholds = reference_thresholds()
    positive, true_positive, gt_count = threshold_counts(prob, gt, thresholds)
    k = 100  # t_100 = 100/254 ≈ 0.394: positives 0.5, 0.7, 0.9; of the gt pixels (0.3, 0.9) only 0.9
    assert 0.39 < float(thresholds[k]) < 0.40
    assert (int(positive[0, k]), int(true_positive[0, k]), int(gt_count[0])) == (3, 1, 2)
    # threshold 0 counts every pixel (prob >= 0), the last threshold (1.0) none here
    assert (int(positive[0, 0]), int(true_positive[0, 0])) == (9, 2)
    assert (int(positive[0, -1]), int(true_positive[0, -1])) == (0, 0)
    # P = 1/3, R = 1/2 -> F = 1.3 * (1/6) / (0.3/3 + 1/2)
    from teso.metrics.avsbench import fscore_from_counts

    f = fscore_from_counts(positive, true_positive, gt_count)
    assert float(f[0, k]) == pytest.approx(1.3 * (1 / 6) / (0.1 + 0.5), abs=1e-12)
    assert float(f[0, -1]) == 0.0  # P = R = 0: NaN in the formula, 0 by the reference's rule


def test_fscore_matches_loop_on_random_data():
    pred, gt = random_batch(6, 24, seed=2, empty=(3,))
    assert avsbench_fscore(pred, gt) == pytest.approx(loop_fscore(pred, gt), abs=1e-6)
    prob = torch.sigmoid(pred)
    expected = [
        float(loop_f_curve(prob[i], gt[i]).max()) if gt[i].sum() > 0 else float("nan") for i in range(6)
    ]
    got = per_frame_fscore(pred, gt).tolist()
    assert math.isnan(got[3]) and math.isnan(expected[3])
    for i in (0, 1, 2, 4, 5):
        assert got[i] == pytest.approx(expected[i], abs=1e-6)


def test_fscore_chunked_counting_is_identical(monkeypatch):
    pred, gt = random_batch(5, 16, seed=3)
    whole = avsbench_fscore(pred, gt)
    monkeypatch.setattr(avsbench_module, "_CHUNK_ELEMENTS", 300)  # forces one frame per chunk
    assert avsbench_fscore(pred, gt) == whole


def test_empty_frames_are_skipped_by_fscore():
    pred, gt = random_batch(3, 12, seed=4)
    base = avsbench_fscore(pred, gt)
    noisy = torch.cat([pred, torch.full((1, 12, 12), BIG)])  # all-foreground prediction on an empty frame
    assert avsbench_fscore(noisy, torch.cat([gt, torch.zeros(1, 12, 12)])) == pytest.approx(base, abs=1e-12)
    assert avsbench_fscore(pred, torch.zeros_like(gt)) == 0.0  # reference: a batch with only empty gt -> 0


# --- aggregation ------------------------------------------------------------------------------------


def clips(num_clips: int, frames: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, H, W] logits and gt with a spread of quality, some empty frames."""
    gen = torch.Generator().manual_seed(seed)
    gt = (torch.rand(num_clips, frames, size, size, generator=gen) > 0.6).float()
    gt[1, 2] = 0
    gt[4, 0] = 0
    quality = torch.linspace(0.2, 3.0, num_clips).view(-1, 1, 1, 1)
    pred = torch.randn(num_clips, frames, size, size, generator=gen) + gt * quality * 2 - quality
    return pred, gt


def reference_by_hand(pred: torch.Tensor, gt: torch.Tensor, clips_per_batch: int) -> tuple[float, float]:
    """The reference test loop: per batch of clips mask_iou and Eval_Fmeasure, then the mean of batches."""
    mious, fs = [], []
    for s in range(0, pred.shape[0], clips_per_batch):
        p = pred[s : s + clips_per_batch].reshape(-1, *pred.shape[-2:])
        g = gt[s : s + clips_per_batch].reshape(-1, *gt.shape[-2:])
        mious.append(loop_miou(p, g))
        fs.append(loop_fscore(p, g))
    return sum(mious) / len(mious), sum(fs) / len(fs)


def test_reference_mode_reproduces_the_reference_loop_however_updates_are_chunked():
    pred, gt = clips(9, 5, 12, seed=5)  # 9 clips: batches of 4, 4 and a last one of 1
    expected_miou, expected_f = reference_by_hand(pred, gt, 4)

    whole = AVSBenchMeter()
    whole.update(pred, gt)
    result = whole.compute()
    assert result["num_batches"] == 3
    assert result["miou"] == pytest.approx(expected_miou, abs=1e-6)
    assert result["fscore"] == pytest.approx(expected_f, abs=1e-6)

    flat_pred, flat_gt = pred.reshape(-1, 12, 12), gt.reshape(-1, 12, 12)
    ids = [f"clip{i}" for i in range(9) for _ in range(5)]
    chunked = AVSBenchMeter()
    for start, stop in [(0, 3), (3, 17), (17, 18), (18, 40), (40, 45)]:  # splits clips and batches
        chunked.update(flat_pred[start:stop], flat_gt[start:stop], clip_ids=ids[start:stop])
    by_fpc = AVSBenchMeter(frames_per_clip=5)
    for start in range(0, 45, 7):
        by_fpc.update(flat_pred[start : start + 7], flat_gt[start : start + 7])
    for other in (chunked.compute(), by_fpc.compute()):
        assert other["miou"] == pytest.approx(result["miou"], abs=1e-12)
        assert other["fscore"] == pytest.approx(result["fscore"], abs=1e-12)
        assert other["num_batches"] == 3


def test_reference_fscore_depends_on_batching_but_per_frame_does_not():
    pred, gt = clips(8, 5, 12, seed=6)
    results = {}
    for cpb in (4, 2, 1):
        meter = AVSBenchMeter(clips_per_batch=cpb)
        meter.update(pred, gt)
        results[cpb] = meter.compute()
    ref_f = {cpb: r["by_mode"]["reference"]["fscore"] for cpb, r in results.items()}
    assert ref_f[4] == pytest.approx(reference_by_hand(pred, gt, 4)[1], abs=1e-6)
    assert ref_f[2] == pytest.approx(reference_by_hand(pred, gt, 2)[1], abs=1e-6)
    assert abs(ref_f[4] - ref_f[2]) > 1e-3 and abs(ref_f[2] - ref_f[1]) > 1e-3
    for mode in ("per-frame", "dataset"):
        values = {r["by_mode"][mode]["fscore"] for r in results.values()}
        assert max(values) - min(values) < 1e-12
    # with whole batches the reference mIoU is the plain mean over frames
    assert results[4]["miou"] == pytest.approx(results[4]["by_mode"]["per-frame"]["miou"], abs=1e-12)


def test_per_frame_and_dataset_modes_hand_computed():
    # frame 0: perfect; frame 1: empty gt with everything predicted; frame 2: predicted 4 px, 2 on a 2-px gt
    gt = torch.zeros(3, 2, 4)
    gt[0, 0, :2] = 1
    gt[2, 1, :2] = 1
    pred = torch.stack([logits(gt[0]), torch.full((2, 4), BIG), logits([[0, 0, 0, 0], [1, 1, 1, 1]])])
    meter = AVSBenchMeter(mode="per-frame")
    meter.update(pred, gt)
    r = meter.compute()
    # IoU: 1, 0 (no background predicted on an empty frame), 2/4
    assert r["miou"] == pytest.approx(0.5, abs=1e-6)
    assert r["miou_nonempty"] == pytest.approx(0.75, abs=1e-6)
    assert r["num_frames"] == 3 and r["num_nonempty_frames"] == 2
    # frame 2's best F: P = 1/2, R = 1 at every threshold between the two logits -> 1.3*0.5/(0.15+1)
    f2 = 1.3 * 0.5 / 1.15
    assert r["fscore"] == pytest.approx((1.0 + f2) / 2, abs=1e-6)
    assert r["num_batches"] is None and "reference" not in r["by_mode"]
    # dataset: pooled TP = 4, positives = 6, gt = 4 -> P = 2/3, R = 1
    pooled = 1.3 * (2 / 3) / (0.3 * 2 / 3 + 1)
    assert r["by_mode"]["dataset"]["fscore"] == pytest.approx(pooled, abs=1e-6)
    with pytest.raises(TesoError, match="clip"):
        no_clips = AVSBenchMeter(mode="reference")
        no_clips.update(pred, gt)
        no_clips.compute()


def test_meter_merge_is_exact_for_batch_independent_modes():
    pred, gt = clips(6, 5, 10, seed=7)
    single = AVSBenchMeter(mode="dataset")
    single.update(pred, gt)
    a, b = AVSBenchMeter(mode="dataset"), AVSBenchMeter(mode="dataset")
    a.update(pred[:4], gt[:4])
    b.update(pred[4:], gt[4:])
    a.merge(b)
    ra, rs = a.compute(), single.compute()
    for mode in ("per-frame", "dataset", "reference"):  # 4 + 2 clips: shards hold whole batches here
        assert ra["by_mode"][mode]["fscore"] == pytest.approx(rs["by_mode"][mode]["fscore"], abs=1e-12)
        assert ra["by_mode"][mode]["miou"] == pytest.approx(rs["by_mode"][mode]["miou"], abs=1e-12)
    with pytest.raises(TesoError, match="no frames"):
        AVSBenchMeter().compute()


# --- AVSS semantic ---------------------------------------------------------------------------------


def semantic_example() -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.tensor([[[0, 0, 1], [0, 1, 1]], [[2, 2, 0], [0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1], [0, 0, 1]], [[2, 0, 0], [0, 0, 1]]])
    return pred, gt


def test_semantic_hand_computed_three_classes_plus_an_absent_one():
    pred, gt = semantic_example()
    meter = SemanticMeter(num_classes=4)
    meter.update(pred, gt)
    r = meter.compute()
    # per frame IoU: class 0: 2/4, 3/5; class 1: 2/4, 0/1; class 2: -, 1/2; class 3 never occurs
    assert r["per_class_iou"] == pytest.approx([0.55, 0.25, 0.5, 0.0], abs=1e-9)
    assert r["class_frames"] == [2, 2, 1, 0]
    f_c2 = 1.3 * 1 * 0.5 / (0.3 + 0.5)  # P = 1, R = 1/2
    per_class_f = [(2 / 3 + 0.75) / 2, (2 / 3 + 0.0) / 2, f_c2, 0.0]
    assert r["per_class_fscore"] == pytest.approx(per_class_f, abs=1e-9)
    assert r["miou"] == pytest.approx(1.3 / 4, abs=1e-9)  # reference: absent classes count as 0
    assert r["miou_present"] == pytest.approx(1.3 / 3, abs=1e-9)
    assert r["fscore"] == pytest.approx(sum(per_class_f) / 4, abs=1e-9)
    assert r["fscore_present"] == pytest.approx(sum(per_class_f) / 3, abs=1e-9)
    # pooled: class 0: 5 / 9; class 1: 2 / 5; class 2: 1 / 2
    assert r["per_class_iou_pooled"] == pytest.approx([5 / 9, 0.4, 0.5, 0.0], abs=1e-9)
    assert r["miou_pooled"] == pytest.approx((5 / 9 + 0.4 + 0.5) / 3, abs=1e-9)
    pooled_f1 = 1.3 * 0.5 * (2 / 3) / (0.3 * 0.5 + 2 / 3)
    assert r["fscore_pooled"] == pytest.approx((5 / 7 + pooled_f1 + f_c2) / 3, abs=1e-9)
    assert avss_miou_fscore(pred, gt, num_classes=4) == pytest.approx((r["miou"], r["fscore"]), abs=1e-12)


def test_semantic_scores_chunking_and_ignore_index():
    pred, gt = semantic_example()
    scores = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 3.0
    whole = SemanticMeter(num_classes=4)
    whole.update(scores, gt)
    framewise = SemanticMeter(num_classes=4)
    for i in range(2):
        framewise.update(pred[i : i + 1], gt[i : i + 1])
    assert framewise.compute() == whole.compute()
    # a pixel labelled 255 leaves every count: mark frame 1's only class-1 prediction as ignored
    ignored_gt = gt.clone()
    ignored_gt[1, 1, 2] = 255
    m = SemanticMeter(num_classes=4)
    m.update(pred, ignored_gt)
    assert m.compute()["per_class_iou"][1] == pytest.approx(0.5, abs=1e-9)  # class 1 only in frame 0 now
    with pytest.raises(TesoError, match="gt"):
        SemanticMeter(num_classes=4).update(pred, gt + 4)
    with pytest.raises(TesoError, match="pred"):
        SemanticMeter(num_classes=4).update(pred.float(), gt)
    with pytest.raises(TesoError, match="5 class scores"):
        SemanticMeter(num_classes=5).update(scores, gt)


# --- audio control ----------------------------------------------------------------------------------


def test_relative_drop():
    assert relative_drop(0.6602, 0.3789) == pytest.approx((0.6602 - 0.3789) / 0.6602)
    assert relative_drop(0.0, 0.2) == 0.0
    assert relative_drop(0.5, 0.6) == pytest.approx(-0.2)
    assert relative_drop(torch.tensor(0.8), 0.4) == pytest.approx(0.5)
    with pytest.raises(TesoError, match="control"):
        relative_drop(0.5, float("nan"))


def test_foreground_rate_and_meter():
    pred = torch.stack([logits([[1, 0], [0, 0]]), logits([[1, 1], [1, 0]])])
    assert foreground_rate(pred[:1]) == pytest.approx(0.25)
    assert foreground_rate(pred) == pytest.approx(4 / 8)
    meter = ForegroundRateMeter()
    meter.update(pred[:1])
    meter.update(pred[1:])
    assert meter.compute() == {"foreground_rate": 0.5, "foreground_pixels": 4, "pixels": 8}
    with pytest.raises(TesoError, match="no frames"):
        ForegroundRateMeter().compute()


def test_preference_rate_pools_pixels_over_a_split():
    pred = torch.stack([logits([[1, 1, 0], [1, 0, 0]]), logits([[0, 0, 0], [0, 0, 0]])])
    silent = torch.tensor([[[1, 1, 1], [0, 0, 1]], [[0, 0, 0], [0, 1, 0]]])
    assert preference_rate(pred[:1], silent[:1]) == pytest.approx(2 / 4)
    assert preference_rate(pred[1:], silent[1:]) == 0.0
    meter = PreferenceRateMeter()
    meter.update(pred[:1], silent[:1])
    meter.update(pred[1:], silent[1:])
    r = meter.compute()
    assert (r["silent_hits"], r["silent_pixels"]) == (2, 5)
    assert r["preference_rate"] == pytest.approx(2 / 5)  # pooled, not the mean of 0.5 and 0.0
    assert math.isnan(preference_rate(pred, torch.zeros_like(silent)))
    with pytest.raises(TesoError, match="silent_audible_mask"):
        preference_rate(pred, silent[:1])


def test_reference_mode_counts_a_batch_without_foreground_as_zero_f():
    pred, gt = clips(8, 5, 10, seed=8)
    gt[4:] = 0  # the second batch of 4 clips has no sounding pixel at all
    meter = AVSBenchMeter()
    meter.update(pred, gt)
    r = meter.compute()
    first = avsbench_fscore(pred[:4].reshape(-1, 10, 10), gt[:4].reshape(-1, 10, 10))
    assert r["fscore"] == pytest.approx(first / 2, abs=1e-12)
    assert r["by_mode"]["per-frame"]["fscore"] > r["fscore"]  # the batch-independent mode skips those frames


def loop_semantic(pred: torch.Tensor, gt: torch.Tensor, nclass: int) -> tuple[float, float]:
    """The AVSS reference written out: per frame torch.histc of 1-shifted labels, sums per class."""
    ious, fs, count = torch.zeros(nclass), torch.zeros(nclass), torch.zeros(nclass)
    for p, g in zip(pred.float() + 1, gt.float() + 1):
        inter = p * (p == g).float()
        a_i = torch.histc(inter, bins=nclass, min=1, max=nclass)
        a_p = torch.histc(p, bins=nclass, min=1, max=nclass)
        a_g = torch.histc(g, bins=nclass, min=1, max=nclass)
        union = a_p + a_g - a_i
        ious += a_i / (2.220446049250313e-16 + union)
        count[torch.nonzero(union).squeeze(-1)] += 1
        prec, rec = a_i / a_p, a_i / a_g
        f = 1.3 * prec * rec / (0.3 * prec + rec)
        f[torch.isnan(f)] = 0.0
        fs += f
    miou, f = ious / count, fs / count
    miou[torch.isnan(miou)] = 0
    f[torch.isnan(f)] = 0
    return float(miou.mean()), float(f.mean())


def test_semantic_matches_the_reference_loop_on_random_data():
    gen = torch.Generator().manual_seed(9)
    gt = torch.randint(0, 6, (10, 16, 16), generator=gen)
    scores = torch.randn(10, 71, 16, 16, generator=gen)
    scores.scatter_add_(1, gt.unsqueeze(1), torch.full((10, 1, 16, 16), 2.0))  # mostly right
    meter = SemanticMeter()
    meter.update(scores[:3], gt[:3])
    meter.update(scores[3:], gt[3:])
    r = meter.compute()
    expected = loop_semantic(scores.argmax(1), gt, 71)
    assert (r["miou"], r["fscore"]) == pytest.approx(expected, abs=1e-6)
    assert sum(c > 0 for c in r["class_frames"]) > 6  # wrong predictions spread over other classes too


def test_closed_form_threshold_index_equals_bucketize_including_exact_ties():
    t = reference_thresholds()
    ties = torch.cat(
        [
            t,
            torch.nextafter(t, torch.tensor(-1.0)).clamp(min=0),
            torch.nextafter(t, torch.tensor(2.0)).clamp(max=1),
            torch.tensor([0.0, 1.0, 1e-30, 0.99999994, 0.5]),
            torch.rand(2000, generator=torch.Generator().manual_seed(10)),
        ]
    )
    gt = torch.zeros_like(ties, dtype=torch.bool)
    gt[::3] = True
    for prob in (ties, ties.double()):
        fast = threshold_counts(prob.view(1, -1), gt.view(1, -1), t)
        # a threshold tensor that is not the reference grid takes the plain bucketize path
        plain_bounds = torch.cat([t[:-1], torch.tensor([1.0 + 1e-6])])
        slow = threshold_counts(prob.view(1, -1), gt.view(1, -1), plain_bounds)
        assert torch.equal(fast[0][:, :-1], slow[0][:, :-1]) and torch.equal(fast[1][:, :-1], slow[1][:, :-1])
        exact_pos = torch.stack([(prob >= th).sum() for th in t.to(prob.dtype)])
        exact_tp = torch.stack([((prob >= th) & gt).sum() for th in t.to(prob.dtype)])
        assert torch.equal(fast[0][0], exact_pos) and torch.equal(fast[1][0], exact_tp)


def mixed_size_clips(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Six clips of 5 frames, each at its own size (as AVSS clips are), one frame empty in two of them."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, (h, w) in enumerate([(12, 16), (9, 14), (16, 12), (11, 11), (7, 20), (13, 10)]):
        gt = (torch.rand(5, h, w, generator=gen) > 0.6).float()
        if i in (1, 4):
            gt[2] = 0
        quality = 0.3 + 0.5 * i
        pred = torch.randn(5, h, w, generator=gen) + gt * quality * 2 - quality
        out.append((pred, gt))
    return out


def test_clips_of_different_sizes_aggregate_like_the_reference_and_score_alone():
    data = mixed_size_clips(seed=11)
    meter = AVSBenchMeter(per_clip=True)
    for i, (pred, gt) in enumerate(data):
        meter.update(pred, gt, clip_ids=[f"c{i}"] * 5)
    r = meter.compute()
    # the reference loop over batches of 4 clips, frame by frame (frames of a batch differ in size)
    mious, fs = [], []
    for s in range(0, len(data), 4):
        frames = [(p[t], g[t]) for p, g in data[s : s + 4] for t in range(5)]
        mious.append(sum(loop_miou(p[None], g[None]) for p, g in frames) / len(frames))
        curves = [loop_f_curve(torch.sigmoid(p), g) for p, g in frames if g.sum() > 0]
        fs.append(float(torch.stack(curves).mean(0).max()))
    # 1e-6: the loop works in float32, the meter's F curves in float64 (the tolerance of the tests above)
    assert r["num_batches"] == 2
    assert r["miou"] == pytest.approx(sum(mious) / 2, abs=1e-6)
    assert r["fscore"] == pytest.approx(sum(fs) / 2, abs=1e-6)

    per_clip = meter.per_clip()
    assert list(per_clip) == [f"c{i}" for i in range(6)]
    for i, (pred, gt) in enumerate(data):
        alone = AVSBenchMeter()
        alone.update(pred[None], gt[None])
        a = alone.compute()
        # exact: the clip's frames go through the same arithmetic as a reference batch of one clip
        assert per_clip[f"c{i}"]["miou"] == a["miou"] and per_clip[f"c{i}"]["fscore"] == a["fscore"]
        assert per_clip[f"c{i}"]["num_frames"] == 5
        assert per_clip[f"c{i}"]["num_nonempty_frames"] == (4 if i in (1, 4) else 5)
        assert a["miou"] == pytest.approx(loop_miou(pred, gt), abs=1e-6)
        assert a["fscore"] == pytest.approx(loop_fscore(pred, gt), abs=1e-6)


def test_per_clip_records_survive_chunking_and_merging_and_refuse_ambiguity():
    data = mixed_size_clips(seed=12)
    whole = AVSBenchMeter(per_clip=True)
    for i, (pred, gt) in enumerate(data):
        whole.update(pred, gt, clip_ids=[i] * 5)
    # clip 2 split over two updates; clips 0-3 in one meter and 4-5 in another, merged
    a, b = AVSBenchMeter(per_clip=True), AVSBenchMeter(per_clip=True)
    for i, (pred, gt) in enumerate(data):
        target = a if i < 4 else b
        if i == 2:
            target.update(pred[:2], gt[:2], clip_ids=[i] * 2)
            target.update(pred[2:], gt[2:], clip_ids=[i] * 3)
        else:
            target.update(pred, gt, clip_ids=[i] * 5)
    a.merge(b)
    assert a.per_clip() == whole.per_clip()
    assert a.compute()["miou"] == whole.compute()["miou"]  # whole batches on each side: exact

    pred, gt = data[0]
    with pytest.raises(TesoError, match="per_clip=True"):
        AVSBenchMeter(per_clip=True).update(pred, gt)
    with pytest.raises(TesoError, match="build the meter with per_clip=True"):
        AVSBenchMeter().per_clip()
    again = AVSBenchMeter(per_clip=True)
    again.update(pred, gt, clip_ids=["x"] * 5)
    again.update(pred, gt, clip_ids=["y"] * 5)
    with pytest.raises(TesoError, match="'x' appears again"):
        again.update(pred, gt, clip_ids=["x"] * 5)
    left, right = AVSBenchMeter(per_clip=True), AVSBenchMeter(per_clip=True)
    left.update(pred, gt, clip_ids=["x"] * 5)
    right.update(pred, gt, clip_ids=["x"] * 5)
    with pytest.raises(TesoError, match="both meters hold clip"):
        left.merge(right)
    with pytest.raises(TesoError, match="per_clip"):
        left.merge(AVSBenchMeter())
