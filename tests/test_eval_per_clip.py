"""Evaluation scores every clip at its own ground-truth size (AVSS clips differ in frame size) and
upsamples frame by frame: mixed sizes in one batch, per-clip results equal to evaluating each clip
alone, the same numbers as the old batch-wide upsampling, and no batch-wide map at ground-truth size."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from teso.audio import per_second_examples
from teso.cues.features import build_clip_tensor, cues_sha, write_index
from teso.cues.store import CueStore
from teso.cues.text_encoders import build_text_encoder
from teso.data.avsbench import SAMPLE_RATE, collate
from teso.data.classes import AVSS_CLASSES, AVSS_LABEL2IDX
from teso.data.palette import colorize
from teso.engine.data import ClipDataset, open_text_features
from teso.engine.evaluate import clip_sounding_maps, evaluate, perturb
from teso.errors import TesoError
from teso.metrics import AVSBenchMeter, ForegroundRateMeter, SemanticMeter
from teso.model import build_teso, get_variant
from teso.model.postprocess import sounding_maps
from teso.model.preprocess import preprocess_frames
from tests.avsbench_fixtures import frame_red, write_wav
from tests.engine_fixtures import write_clip_features

# (H, W) of each v2 test clip: five clips, so batches of 4 hold several sizes and the last holds one.
# None of these sides is a feature-map side of the 64 px model (16, 8, 4, 2), so an interpolation
# output at one of these sizes is the evaluation's upsampling to ground truth.
MIXED = [(24, 32), (30, 40), (18, 26), (24, 32), (21, 36)]
UNIFORM = [(24, 32)] * 5
FRAMES = 10
CLASSES = [AVSS_LABEL2IDX[c] for c in ("dog", "guitar", "man", "piano", "violin")]


def write_sized_tree(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """A released-layout tree of v2 test clips, clip i at ``sizes[i]``, with labels_rgb and
    labels_semantic (a class box that moves with t, one frame of clip 1 empty) and `tiny` 32-d cue
    features (cue = the clip's class)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "label2idx.json").write_text(json.dumps({n: i for i, n in enumerate(AVSS_CLASSES)}))
    encoder = build_text_encoder("tiny")
    fdir = CueStore(root, "default").features_dir(encoder.name)
    write_index(fdir, encoder, 4)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for i, (h, w) in enumerate(sizes):
            uid, cls = f"clip{i}", CLASSES[i % len(CLASSES)]
            writer.writerow([f"yt_{uid}", uid, 0, 0, AVSS_CLASSES[cls], "test", "v2"])
            clip = root / "v2" / uid
            for sub in ("frames", "labels_rgb", "labels_semantic"):
                (clip / sub).mkdir(parents=True)
            for t in range(FRAMES):
                img = np.empty((h, w, 3), np.uint8)
                img[..., 0], img[..., 1], img[..., 2] = frame_red(t), 60 + 30 * i, 160
                Image.fromarray(img).save(clip / "frames" / f"{t}.jpg", quality=95)
                index = np.zeros((h, w), np.uint8)
                if not (i == 1 and t == 3):
                    y0, x0 = (t % 3) * h // 6, (t % 4) * w // 8
                    index[y0 : y0 + h // 2, x0 : x0 + w // 2] = cls
                Image.fromarray(colorize(index)).save(clip / "labels_rgb" / f"{t}.png")
                Image.fromarray(index).save(clip / "labels_semantic" / f"{t}.png")
            write_wav(clip / "audio.wav", float(FRAMES), 300.0 + 150 * i)
            cues = [[AVSS_CLASSES[cls]] for _ in range(FRAMES)]
            feats, counts = build_clip_tensor(cues, encoder, 4)
            write_clip_features(fdir, uid, feats, counts, cues_sha(cues, 4))
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return write_sized_tree(tmp_path_factory.mktemp("mixed"), MIXED)


@pytest.fixture(scope="module")
def uniform(tmp_path_factory) -> Path:
    return write_sized_tree(tmp_path_factory.mktemp("uniform"), UNIFORM)


def dataset(root: Path) -> ClipDataset:
    text = open_text_features(str(root), "default", "tiny", 32)
    return ClipDataset(str(root), "v2", "test", image_size=64, text=text, audio="waveform")


def only(ds: ClipDataset, index: int) -> ClipDataset:
    """The same dataset restricted to its clip ``index``."""
    single = copy.copy(ds)
    single.base = copy.copy(ds.base)
    single.base.records = [ds.base.records[index]]
    return single


def model(num_classes: int = 1):
    """The tiny variant, random weights, sharpened so that its maps straddle the threshold: as
    initialised, its mask logits barely vary (std 0.07) and the maps are constant for the metrics
    (binary: every pixel above 1 from 12 overlapping queries; semantic: none above 0.5), which would
    let a wrong upsampling pass every equality below. Mask logits x30, class logits x10 and the
    no-object class favoured by log N_Q: 30-55 % of the pixels above 0.5, values spread over [0, 8]."""
    torch.manual_seed(0)
    net = build_teso(get_variant("tiny", image_size=64, text_dim=32, num_classes=num_classes)).eval()
    m2f = net.foundation.m2f
    embed = dict(m2f.named_modules())["model.transformer_module.decoder.mask_predictor.mask_embedder.2.0"]
    with torch.no_grad():
        embed.weight.mul_(30)
        embed.bias.mul_(30)
        m2f.class_predictor.weight.mul_(10)
        m2f.class_predictor.bias[-1] += math.log(net.config.visual.num_queries)
    return net


def test_clips_of_different_sizes_are_each_scored_at_their_own_size(mixed):
    ds = dataset(mixed)
    assert {tuple(ds[i]["masks"].shape[-2:]) for i in range(len(ds))} == set(MIXED)
    with pytest.raises(TesoError, match="different shapes"):
        collate([ds[0], ds[1]])  # what evaluation did before: batch the masks of 4 clips
    net = model()
    res = evaluate(net, ds, ["normal", "mute"], batch_clips=4)["conditions"]
    for cond, row in res.items():
        assert row["num_frames"] == len(MIXED) * FRAMES
        assert list(row["per_clip"]) == [f"clip{i}" for i in range(len(MIXED))]
        for i in range(len(MIXED)):
            alone = evaluate(net, only(ds, i), [cond] if cond == "normal" else ["normal", cond])
            a = alone["conditions"][cond]
            clip = row["per_clip"][f"clip{i}"]
            # Exact: the model sees the clip's own inputs (CPU, one thread: tests/conftest.py) and its
            # frames go through the same metric arithmetic, a reference batch of one clip.
            assert clip["miou"] == a["miou"] and clip["fscore"] == a["fscore"]
            assert clip == a["per_clip"][f"clip{i}"]
            assert clip["num_frames"] == FRAMES
            assert clip["num_nonempty_frames"] == (FRAMES - 1 if i == 1 else FRAMES)
        # the split's reference mIoU: batches of 4 and 1 clips, each the mean IoU of its frames
        # (10 per clip here, so a batch's mean of clip means); float32 means summed in another order
        clips = [row["per_clip"][f"clip{i}"]["miou"] for i in range(len(MIXED))]
        assert row["miou"] == pytest.approx((sum(clips[:4]) / 4 + clips[4]) / 2, abs=1e-6)
        assert row["by_mode"]["per-frame"]["miou"] == pytest.approx(sum(clips) / len(clips), abs=1e-6)


def test_semantic_model_on_mixed_sizes_does_not_depend_on_the_batching(mixed):
    ds = dataset(mixed)
    net = model(num_classes=71)
    four = evaluate(net, ds, ["normal"], batch_clips=4)["conditions"]["normal"]
    one = evaluate(net, ds, ["normal"], batch_clips=1)["conditions"]["normal"]
    # Exact: the semantic histograms are per frame and added clip by clip in the same order either
    # way; only the model's batches differ, and on one CPU thread its per-clip outputs do not.
    assert four["semantic_miou"] == one["semantic_miou"]
    assert four["semantic_fscore"] == one["semantic_fscore"]
    assert four["per_clip"] == one["per_clip"] and four["fg_rate"] == one["fg_rate"]
    assert 0 <= four["semantic_miou"] <= 1


def old_evaluate(
    net, ds: ClipDataset, cond: str, batch_clips: int, threshold: float = 0.5, feed: str = "batch"
) -> dict:
    """The evaluation loop before per-clip scoring (one condition): collate whole batches, upsample
    every query of the batch to ground-truth size at once (``probs_at``: [B, T, N_Q, H, W]).
    ``feed="batch"`` adds each batch's maps to the meters at once, as the old loop did; ``"clip"``
    adds them clip by clip, in the order the new loop does."""
    cfg = net.config
    binary = AVSBenchMeter(
        "reference",
        clips_per_batch=batch_clips,
        frames_per_clip=FRAMES,
        threshold=threshold,
        from_logits=False,
    )
    foreground = ForegroundRateMeter(threshold=threshold, from_logits=False)
    semantic = SemanticMeter(num_classes=cfg.num_classes) if cfg.num_classes > 1 else None
    with torch.no_grad():
        for s in range(0, len(ds), batch_clips):
            block = list(range(s, min(s + batch_clips, len(ds))))
            batch = collate([ds[i] for i in block])
            b, t = batch["frames"].shape[:2]
            frames = preprocess_frames(batch["frames"], cfg.visual.image_size)
            gt = batch["masks"]
            waves = batch["audio"].reshape(b, -1)
            logmel = torch.stack(
                [per_second_examples(perturb(w, cond, i), SAMPLE_RATE, t) for w, i in zip(waves, block)]
            )
            out = net.decode(net.encode_visual(frames), logmel, batch["text"], batch["text_count"])
            probs = out.probs_at(tuple(gt.shape[-2:])).float().cpu()
            fg, classes = sounding_maps(probs, cfg.num_classes, threshold)
            parts = [slice(0, b)] if feed == "batch" else [slice(j, j + 1) for j in range(b)]
            for part in parts:
                if classes is not None:
                    semantic.update(classes[part].flatten(0, 1), batch["semantic"][part].flatten(0, 1))
                binary.update(fg[part], gt[part].float())
                foreground.update(fg[part])
    r = binary.compute()
    out = {k: r[k] for k in ("miou", "fscore", "miou_nonempty", "by_mode", "num_frames")}
    out["fg_rate"] = foreground.compute()["foreground_rate"]
    if semantic is not None:
        s = semantic.compute()
        out["semantic_miou"], out["semantic_fscore"] = s["miou"], s["fscore"]
    return out


@pytest.mark.parametrize("num_classes", [1, 71])
def test_per_frame_upsampling_gives_the_numbers_of_the_batch_wide_path(uniform, num_classes):
    ds = dataset(uniform)
    net = model(num_classes)
    new = evaluate(net, ds, ["normal", "mute"], batch_clips=4)["conditions"]
    for cond in ("normal", "mute"):
        old = old_evaluate(net, ds, cond, batch_clips=4, feed="clip")
        # Exact: frame_probs_at resizes the same N_Q logits of the frame with the same bilinear kernel
        # and combines them with the same einsum, so every map, hence every count, is the same bits.
        assert {k: new[cond][k] for k in old} == old
        # The old loop as it was: the meters summed a batch's 40 frames at once instead of 10 at a
        # time, so float sums of per-frame values (mIoU over non-empty frames, semantic F) group
        # differently; 1e-12 is far above that rounding (~1e-16) and far below any map change.
        whole = old_evaluate(net, ds, cond, batch_clips=4, feed="batch")
        for key in whole:
            if key != "by_mode":
                assert new[cond][key] == pytest.approx(whole[key], abs=1e-12, rel=0)
    # the maps themselves, clip by clip, against the batch-wide upsampling
    batch = collate([ds[i] for i in range(4)])
    logmel = torch.stack([per_second_examples(w, SAMPLE_RATE, FRAMES) for w in batch["audio"].reshape(4, -1)])
    with torch.no_grad():
        visual = net.encode_visual(preprocess_frames(batch["frames"], 64))
        out = net.decode(visual, logmel, batch["text"], batch["text_count"])
    fg_all, cls_all = sounding_maps(out.probs_at((24, 32)).float(), num_classes, 0.5)
    for j in range(4):
        fg, cls = clip_sounding_maps(out, j, FRAMES, (24, 32), num_classes, 0.5)
        assert fg.shape == (FRAMES, 24, 32) and torch.equal(fg, fg_all[j])
        assert (cls is None) == (cls_all is None)
        if cls is not None:
            assert torch.equal(cls, cls_all[j])


def test_no_batch_wide_map_at_ground_truth_size_is_ever_allocated(mixed, monkeypatch):
    """Every tensor the evaluation makes at a ground-truth size by interpolation or einsum (the
    upsampling and the class combination) holds one frame: [1, N_Q, H, W] and [1, 1, N_C, H, W]."""
    ds = dataset(mixed)
    net = model(num_classes=71)
    n_q = net.config.visual.num_queries
    gt_sizes = set(MIXED)
    seen: list[tuple[str, tuple[int, ...]]] = []
    interpolate, einsum = torch.nn.functional.interpolate, torch.einsum

    def record(name, fn):
        def wrapped(*args, **kwargs):
            y = fn(*args, **kwargs)
            if isinstance(y, torch.Tensor) and y.dim() >= 2 and tuple(y.shape[-2:]) in gt_sizes:
                seen.append((name, tuple(y.shape)))
            return y

        return wrapped

    monkeypatch.setattr(torch.nn.functional, "interpolate", record("interpolate", interpolate))
    monkeypatch.setattr(torch, "einsum", record("einsum", einsum))
    evaluate(net, ds, ["normal", "mute"], batch_clips=4)
    monkeypatch.undo()
    upsampled = [shape for name, shape in seen if name == "interpolate"]
    combined = [shape for name, shape in seen if name == "einsum"]
    # one upsampling and one combination per frame, condition and clip: nothing is skipped unseen
    assert len(upsampled) == len(combined) == 2 * len(MIXED) * FRAMES
    assert {s[-2:] for s in upsampled} == gt_sizes
    for shape in upsampled:
        assert shape[:2] == (1, n_q)
    for shape in combined:
        assert shape[:3] == (1, 1, 71)
    largest = max(int(np.prod(s)) for _, s in seen)
    h, w = max(MIXED, key=lambda s: s[0] * s[1])
    # one frame of the largest clip: its N_C = 71 class maps (more than the tiny model's 12 queries)
    assert largest == max(n_q, 71) * h * w
