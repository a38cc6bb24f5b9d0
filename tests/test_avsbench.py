"""AVSBench readers: layouts, clip listing and the Dataset on tiny trees written by the test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from teso.data import AVSS_LABEL2IDX, AVSBenchDataset, collate, detect_layout, list_clips, parse_a_obj
from teso.errors import TesoError
from tests.avsbench_fixtures import (
    EMPTY_FRAME,
    SIZE,
    frame_red,
    wav_samples,
    write_ms3_object_tree,
    write_released_tree,
    write_s4_object_tree,
)
from tests.test_logmel import U32, assert_log_mel_matches


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return root, write_released_tree(root)


@pytest.fixture(scope="module")
def s4(tmp_path_factory):
    root = tmp_path_factory.mktemp("s4")
    return root, write_s4_object_tree(root)


@pytest.fixture(scope="module")
def ms3(tmp_path_factory):
    root = tmp_path_factory.mktemp("ms3")
    return root, write_ms3_object_tree(root)


# How far a decoded JPEG frame's mean red may be from the flat colour written (quality 95). A flat
# image has only DC coefficients, so the loss is the DC quantisation (step 2 at q95: +-1 level of Y, Cb
# and Cr; the 4:2:0 chroma subsampling of a flat image loses nothing) plus the integer RGB <-> YCbCr
# roundings (+-1 each way): at most ~3 levels. libjpeg's integer DCT gives the same bytes on every
# x86 CPU; measured: 0 on the red channel, 1 on green / blue. PNG frames are lossless: tolerance 0.
JPEG_LEVELS = 3


def _assert_frames(frames: torch.Tensor, n: int, tol: int) -> None:
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (n, *SIZE, 3)
    reds = frames[..., 0].float().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(reds, [frame_red(t) for t in range(n)], atol=tol)


def test_detect_layout(released, s4, ms3, tmp_path):
    assert detect_layout(released[0]) == "released"
    assert detect_layout(s4[0]) == "s4-object"
    assert detect_layout(ms3[0]) == "ms3-object"
    with pytest.raises(TesoError, match=r"metadata\.csv.*s4_meta_data\.csv.*ms3_meta_data\.csv"):
        detect_layout(tmp_path)
    with pytest.raises(TesoError, match="not found"):
        detect_layout(tmp_path / "nope")


def test_parse_a_obj():
    assert parse_a_obj("man_piano") == ["man", "piano"]
    assert parse_a_obj("woman, violin;woman") == ["woman", "violin"]
    assert parse_a_obj("['emergency-car', 'dog']") == ["emergency-car", "dog"]
    assert parse_a_obj("") == []


def test_list_clips_released(released):
    root, truths = released
    clips = list_clips(root)
    assert [c.uid for c in clips] == list(truths)
    by_uid = {c.uid: c for c in clips}
    s_train = by_uid["s_train"]
    assert s_train.num_frames == 5 and s_train.annotated == [True, False, False, False, False]
    assert s_train.mask_paths[0] == root / "v1s" / "s_train" / "labels_rgb" / "0.png"
    assert s_train.mask_paths[1:] == [None] * 4 and s_train.semantic_paths is None
    assert s_train.frame_paths[4] == root / "v1s" / "s_train" / "frames" / "4.jpg"
    assert s_train.audio_path == root / "v1s" / "s_train" / "audio.wav"
    assert by_uid["v2_sem"].num_frames == 10 and by_uid["v2_sem"].semantic_paths[9] is not None
    for uid, truth in truths.items():
        assert by_uid[uid].a_obj == truth.a_obj
        assert by_uid[uid].clip_dir == root / truth.label / uid
    assert [c.uid for c in list_clips(root, subsets="v2")] == ["v2_sem", "v2_rgb"]
    assert [c.uid for c in list_clips(root, subsets=["v1s", "v1m"], splits=["val", "test"])] == [
        "s_test",
        "m_val",
    ]
    with pytest.raises(TesoError, match="subsets.*'v3'"):
        list_clips(root, subsets="v3")
    with pytest.raises(TesoError, match="splits"):
        list_clips(root, splits=["training"])


def test_list_clips_object_layouts(s4, ms3):
    root, _ = s4
    a, b = list_clips(root)
    data = root / "s4_data"
    assert (a.uid, a.label, a.split, a.a_obj) == ("s4_a", "v1s", "train", ["dog_barking"])
    assert a.frame_paths[2] == data / "visual_frames" / "train" / "dog_barking" / "s4_a" / "s4_a_3.png"
    assert a.mask_paths == [data / "gt_masks" / "train" / "dog_barking" / "s4_a" / "s4_a_1.png"] + [None] * 4
    assert a.audio_path == data / "audio_wav" / "train" / "dog_barking" / "s4_a.wav"
    assert b.annotated == [True] * 5
    root, _ = ms3
    x, y = list_clips(root)
    assert (x.uid, x.label, x.a_obj) == ("ms3_x", "v1m", [])
    # one folder per video, frames named after the video file (preprocess_ms3.py), no split level
    assert x.frame_paths == [root / "visual_frames" / "ms3_x" / f"ms3_x.mp4_{k}.png" for k in range(1, 6)]
    assert x.clip_dir == root / "visual_frames" / "ms3_x"
    assert y.mask_paths[4] == root / "gt_masks" / "val" / "ms3_y" / "ms3_y_5.png"
    assert y.audio_path == root / "audio_wav" / "val" / "ms3_y.wav"


def test_ms3_id_is_the_first_column(tmp_path):
    # AVSBench's MS3Dataset reads the id as column 0 without naming it: any header name works there.
    root = tmp_path / "ms3"
    write_ms3_object_tree(root, header=["vid", "split"])
    assert [(c.uid, c.split) for c in list_clips(root)] == [("ms3_x", "train"), ("ms3_y", "val")]
    (root / "ms3_meta_data.csv").write_text("split,video_id\ntrain,ms3_x\n")
    with pytest.raises(TesoError, match=r"ms3_meta_data\.csv: the first column must hold the video id"):
        list_clips(root)
    (root / "ms3_meta_data.csv").write_text("video_id\nms3_x\n")
    with pytest.raises(TesoError, match=r"missing CSV column\(s\) split"):
        list_clips(root)


def test_a_obj_cells_as_the_csv_writes_them(tmp_path):
    # metadata.csv text written by hand, not through csv.writer: a multi-name cell quoted with
    # commas, one joined by "_" (as the public readers of the released CSV split it and SynthAVS
    # writes it), a list literal, and one unquoted comma cell that shifts the columns.
    root = tmp_path / "rel"
    write_released_tree(root)
    rows = [
        "vid,uid,s_min,s_sec,a_obj,split,label",
        'yt_q,q1,0,0,"man, guitar",test,v1m',
        "yt_u,u1,0,0,man_guitar,test,v1m",
        "yt_l,l1,0,0,\"['woman', 'emergency-car']\",test,v2",
        'yt_w,w1,0,0,"guitar,man, man",test,v1m',
    ]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    by_uid = {c.uid: c.a_obj for c in list_clips(root)}
    assert by_uid == {
        "q1": ["man", "guitar"],
        "u1": ["man", "guitar"],
        "l1": ["woman", "emergency-car"],
        "w1": ["guitar", "man"],
    }
    (root / "metadata.csv").write_text("\n".join([*rows, "yt_b,b1,0,0,man, guitar,test,v1m"]) + "\n")
    with pytest.raises(
        TesoError,
        match=r"metadata\.csv: line 6: 8 field\(s\), but the header has 7 \(an a_obj cell .* quoted",
    ):
        list_clips(root)


def test_released_dataset_values(released):
    root, truths = released
    ds = AVSBenchDataset(root, "v1s", "train")
    assert len(ds) == 1 and ds.uids == ["s_train"]
    item = ds[0]
    truth = truths["s_train"]
    _assert_frames(item["frames"], 5, tol=JPEG_LEVELS)
    assert item["audio"].shape == (5, 1, 96, 64) and item["audio"].dtype == torch.float32
    # the wav holds known 16 kHz samples (no resampling): each second against the independent float64
    # log-mel of test_logmel, within its derived float32 rounding bound
    wave = wav_samples(truth.audio_seconds, truth.freq)
    for t in range(5):
        assert_log_mel_matches(item["audio"][t], wave[t * 16000 : (t + 1) * 16000], U32)
    assert item["masks"].dtype == torch.bool
    np.testing.assert_array_equal(item["masks"].numpy(), truth.index > 0)
    assert item["masks"][1:].sum() == 0 and item["masks"][0].sum() == 48
    assert item["annotated"].tolist() == [True, False, False, False, False]
    assert "semantic" not in item and item["a_obj"] == ["dog"]

    item = AVSBenchDataset(root, "v1s", "test")[0]
    assert item["annotated"].all() and item["masks"][EMPTY_FRAME].sum() == 0
    np.testing.assert_array_equal(item["masks"].numpy(), truths["s_test"].index > 0)

    item = AVSBenchDataset(root, "v1m", "val", audio="waveform")[0]
    assert item["audio"].shape == (5, 16000) and item["audio"].dtype == torch.float32
    # exact: q / 32768 is a float32, a mono mean and a 16 kHz -> 16 kHz "resample" change nothing
    wave = wav_samples(5.0, truths["m_val"].freq)
    np.testing.assert_array_equal(item["audio"].numpy(), wave.reshape(5, 16000))
    np.testing.assert_array_equal(item["masks"].numpy(), truths["m_val"].index > 0)
    assert item["a_obj"] == ["man", "piano"]


def test_v2_semantic_from_files_and_from_colours(released):
    root, truths = released
    ds = AVSBenchDataset(root, "v2", "test")
    for i, uid in enumerate(["v2_sem", "v2_rgb"]):
        item = ds[i]
        assert item["uid"] == uid and item["semantic"].dtype == torch.int64
        assert tuple(item["semantic"].shape) == (10, *SIZE)
        np.testing.assert_array_equal(item["semantic"].numpy(), truths[uid].index)
        np.testing.assert_array_equal(item["masks"].numpy(), truths[uid].index > 0)
    assert set(np.unique(ds[0]["semantic"].numpy())) == {0, AVSS_LABEL2IDX["woman"], AVSS_LABEL2IDX["violin"]}


def test_resize_and_collate(released):
    root, truths = released
    ds = AVSBenchDataset(root, "v2", "test", image_size=(12, 16), mask_size=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert tuple(batch["frames"].shape) == (2, 10, 12, 16, 3) and batch["frames"].dtype == torch.uint8
    # A flat frame stays flat under bilinear resizing (weights summing to 1 move an integer level by far
    # less than the 0.5 that rounding back to uint8 would need): only the JPEG error remains.
    assert int(batch["frames"][0, 3, ..., 0].float().mean().round()) in range(
        frame_red(3) - JPEG_LEVELS, frame_red(3) + JPEG_LEVELS + 1
    )
    assert tuple(batch["masks"].shape) == (2, 10, 8, 8) and tuple(batch["semantic"].shape) == (2, 10, 8, 8)
    assert tuple(batch["audio"].shape) == (2, 10, 1, 96, 64)
    assert batch["uid"] == ["v2_sem", "v2_rgb"] and batch["a_obj"][1] == ["emergency-car"]
    assert set(np.unique(batch["semantic"][1].numpy())) <= {0, AVSS_LABEL2IDX["emergency-car"]}
    # Without mask_size, masks keep the dataset's own resolution.
    native = AVSBenchDataset(root, "v2", "test", image_size=12)[0]
    assert tuple(native["frames"].shape) == (10, 12, 12, 3) and tuple(native["masks"].shape) == (10, *SIZE)


def test_collate_rejects_mismatched_items(released):
    root, _ = released
    a = AVSBenchDataset(root, "v1s", "test")[0]
    b = AVSBenchDataset(root, "v2", "test")[0]
    with pytest.raises(TesoError, match="'semantic' is present"):
        collate([a, b])
    b.pop("semantic")
    with pytest.raises(TesoError, match="different shapes"):
        collate([a, b])


def test_object_layout_datasets(s4, ms3):
    root, truths = s4
    item = AVSBenchDataset(root, "v1s", "train")[0]
    _assert_frames(item["frames"], 5, tol=0)
    assert item["annotated"].tolist() == [True, False, False, False, False]
    np.testing.assert_array_equal(item["masks"].numpy(), truths["s4_a"].index > 0)
    assert item["a_obj"] == ["dog_barking"] and "semantic" not in item
    item = AVSBenchDataset(root, "v1s", "test", audio="waveform")[0]
    assert item["annotated"].all() and item["masks"].sum() == 5 * 48
    np.testing.assert_array_equal(
        item["audio"].numpy(), wav_samples(5.0, truths["s4_b"].freq).reshape(5, 16000)
    )
    root, truths = ms3
    item = AVSBenchDataset(root, "v1m", "val")[0]
    assert item["uid"] == "ms3_y" and item["audio"].shape == (5, 1, 96, 64)
    np.testing.assert_array_equal(item["masks"].numpy(), truths["ms3_y"].index > 0)
    assert item["masks"][0].sum() == 96  # two boxes of the P-mode mask, palette index 1 -> foreground


def test_dataset_argument_errors(released, tmp_path):
    root, _ = released
    with pytest.raises(TesoError, match="subset"):
        AVSBenchDataset(root, "s4", "train")
    with pytest.raises(TesoError, match="audio"):
        AVSBenchDataset(root, "v1s", "train", audio="mfcc")
    with pytest.raises(TesoError, match="image_size"):
        AVSBenchDataset(root, "v1s", "train", image_size=(0, 4))
    with pytest.raises(TesoError, match="no clips with label v1m and split test"):
        AVSBenchDataset(root, "v1m", "test")


def _copy_released(tmp_path: Path) -> Path:
    root = tmp_path / "rel"
    write_released_tree(root)
    return root


def test_bad_items_raise_naming_the_file(tmp_path):
    root = _copy_released(tmp_path)
    clip = root / "v1s" / "s_test"
    ds = AVSBenchDataset(root, "v1s", "test")

    (clip / "frames" / "3.jpg").unlink()
    with pytest.raises(TesoError, match=r"s_test/frames/3\.jpg: missing frame 3 of 5"):
        ds[0]
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(clip / "frames" / "3.jpg")

    (clip / "frames" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TesoError, match=r"frames/1\.jpg: unreadable frame image"):
        ds[0]
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(clip / "frames" / "1.jpg")

    rgb = np.zeros((SIZE[0] + 2, SIZE[1], 3), np.uint8)
    Image.fromarray(rgb).save(clip / "labels_rgb" / "4.png")
    with pytest.raises(
        TesoError, match=r"labels_rgb/4\.png: mask size 32x26 does not match its frame \(32x24\)"
    ):
        ds[0]

    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[5, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(clip / "labels_rgb" / "4.png")
    with pytest.raises(
        TesoError, match=r"labels_rgb/4\.png: unknown mask colour: 1 pixels \(first at x=7, y=5\)"
    ):
        ds[0]
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(clip / "labels_rgb" / "4.png")
    assert ds[0]["masks"][4].sum() == 0

    wave = np.zeros(int(4.5 * 16000), np.float32)
    sf.write(clip / "audio.wav", wave, 16000)
    with pytest.raises(TesoError, match=r"audio\.wav: audio shorter than the clip: 4\.500 s for 5 frames"):
        ds[0]


def test_bad_csv_raises(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    with open(root / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["vid", "uid", "split", "label"], ["a", "a", "train", "v1s"]])
    with pytest.raises(TesoError, match=r"metadata\.csv: missing CSV column\(s\) s_min, s_sec, a_obj"):
        list_clips(root)
