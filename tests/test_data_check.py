"""`teso data check`: clean trees pass; every injected fault is reported with its path; exit code 1."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from teso.cli.main import main
from teso.data import AVSBenchDataset, check_tree
from teso.data.classes import AVSS_CLASSES
from teso.errors import TesoError
from tests.avsbench_fixtures import (
    SIZE,
    flatten_ms3_frames,
    frame_red,
    write_ms3_object_tree,
    write_released_tree,
    write_s4_object_tree,
)


def test_clean_trees_pass(tmp_path, capsys):
    write_released_tree(tmp_path / "rel")
    report = check_tree(tmp_path / "rel")
    assert report.ok and report.problems == [] and report.layout == "released"
    assert report.clips == {("v1s", "train"): 1, ("v1s", "test"): 1, ("v1m", "val"): 1, ("v2", "test"): 2}
    assert report.summary() == (
        f"{tmp_path / 'rel'}: layout released; 5 clip(s) checked "
        "(v1m/val 1, v1s/test 1, v1s/train 1, v2/test 2); OK"
    )
    assert check_tree(tmp_path / "rel", full=True, workers=1).ok
    write_s4_object_tree(tmp_path / "s4")
    write_ms3_object_tree(tmp_path / "ms3")
    for name, layout in (("s4", "s4-object"), ("ms3", "ms3-object")):
        report = check_tree(tmp_path / name)
        assert report.ok and report.layout == layout and sum(report.clips.values()) == 2
    assert main(["data", "check", str(tmp_path / "rel")]) == 0
    assert capsys.readouterr().out.strip().endswith("; OK")


def test_every_fault_is_reported(tmp_path, capsys):
    root = tmp_path / "rel"
    write_released_tree(root)
    s_test, m_val, v2_sem, v2_rgb = (
        root / "v1s/s_test",
        root / "v1m/m_val",
        root / "v2/v2_sem",
        root / "v2/v2_rgb",
    )
    faults = {}

    (s_test / "frames/3.jpg").unlink()
    faults[s_test / "frames/3.jpg"] = "missing frame 3 of 5"
    faults[s_test / "frames"] = "wrong frame count: found 4 frame(s), expected 5"
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(m_val / "frames/5.jpg")
    faults[m_val / "frames"] = "wrong frame count: found 6 frame(s), expected 5 (v1m); unexpected: 5.jpg"
    (m_val / "labels_rgb/2.png").write_bytes(b"\x89PNG garbage")
    faults[m_val / "labels_rgb/2.png"] = "unreadable mask image"
    Image.fromarray(np.zeros((SIZE[0], SIZE[1] + 4, 3), np.uint8)).save(m_val / "labels_rgb/4.png")
    faults[m_val / "labels_rgb/4.png"] = "mask size 36x24 does not match its frame (32x24)"
    rgb = np.asarray(Image.open(v2_rgb / "labels_rgb/6.png").convert("RGB")).copy()
    rgb[0:2, 0:3] = (255, 255, 254)
    Image.fromarray(rgb).save(v2_rgb / "labels_rgb/6.png")
    faults[v2_rgb / "labels_rgb/6.png"] = "unknown mask colour: 6 pixels (first at x=0, y=0)"
    Image.fromarray(np.full(SIZE, 200, np.uint8)).save(v2_sem / "labels_semantic/1.png")
    faults[v2_sem / "labels_semantic/1.png"] = "class index 200 is not below the 71 classes"
    sf.write(v2_sem / "audio.wav", np.zeros(16000 * 9, np.float32), 16000)
    faults[v2_sem / "audio.wav"] = "audio shorter than the clip: 9.000 s for 10 frames"
    Image.fromarray(np.zeros((SIZE[0] + 1, SIZE[1], 3), np.uint8)).save(v2_rgb / "frames/8.jpg")
    faults[v2_rgb / "frames/8.jpg"] = "frame size 32x25 differs from the clip's other frames (32x24)"
    (root / "v1s/s_train/audio.wav").unlink()
    faults[root / "v1s/s_train/audio.wav"] = "missing audio file"
    mapping = {name: i for i, name in enumerate(AVSS_CLASSES)}
    mapping["background"], mapping["accordion"] = 1, 0
    (root / "label2idx.json").write_text(json.dumps(mapping))
    faults[root / "label2idx.json"] = "'background' must have index 0, found 1"
    with open(root / "metadata.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["yt", "odd", 0, 0, "dog", "training", "v1s"])
    faults[root / "metadata.csv"] = "line 7: split 'training' is not one of train, val, test"

    report = check_tree(root)
    assert not report.ok
    lines = [str(p) for p in report.problems]
    for path, message in faults.items():
        assert any(line.startswith(f"{path}: {message}") for line in lines), (path, message, lines)
    assert len(report.problems) == len(faults), lines
    assert report.summary().endswith(f"; {len(faults)} problem(s)")

    assert main(["data", "check", str(root)]) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert err_lines == lines
    assert captured.out.strip() == report.summary()


def test_object_layout_faults(tmp_path):
    root = tmp_path / "s4"
    write_s4_object_tree(root)
    data = root / "s4_data"
    (data / "audio_wav/test/male_speech/s4_b.wav").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "gt_masks/test/male_speech/s4_b/s4_b_3.png")
    lines = [str(p) for p in check_tree(root).problems]
    mask = data / "gt_masks/test/male_speech/s4_b/s4_b_3.png"
    assert lines == [
        f"{mask}: mask size 10x10 does not match its frame (32x24)",
        f"{data / 'audio_wav/test/male_speech/s4_b.wav'}: missing audio file",
    ]
    shutil.rmtree(data / "visual_frames/train/dog_barking/s4_a")
    lines = [str(p) for p in check_tree(root).problems]
    assert lines[0] == (
        f"{data / 'visual_frames/train/dog_barking/s4_a'}: missing frame folder (AVSBench S4 keeps a "
        "clip's frames s4_a_1.png … s4_a_5.png in visual_frames/{split}/{category}/{name}/)"
    )
    assert len(lines) == 3  # one line for the folder, not one per frame
    root = tmp_path / "ms3"
    write_ms3_object_tree(root)
    (root / "visual_frames/ms3_y/ms3_y.mp4_5.png").unlink()
    lines = [str(p) for p in check_tree(root).problems]
    assert lines == [
        f"{root / 'visual_frames/ms3_y'}: wrong frame count: found 4 frame(s), expected 5 (v1m)",
        f"{root / 'visual_frames/ms3_y/ms3_y.mp4_5.png'}: missing frame 4 of 5 (v1m clips have 5 frames)",
    ]


def test_official_ms3_layout_checks_and_loads(tmp_path, capsys):
    # As released: Multi-sources/ms3_meta_data.csv + ms3_data/{visual_frames/{vid}/, gt_masks, audio_wav}.
    root = tmp_path / "Multi-sources"
    truths = write_ms3_object_tree(root, nested=True)
    assert (root / "ms3_data/visual_frames/ms3_x/ms3_x.mp4_1.png").is_file()
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.strip() == (
        f"{root}: layout ms3-object; 2 clip(s) checked (v1m/train 1, v1m/val 1); OK"
    )
    item = AVSBenchDataset(root, "v1m", "train")[0]
    assert item["uid"] == "ms3_x" and tuple(item["frames"].shape) == (5, *SIZE, 3)
    # PNG frames are lossless: frame k of the folder is exactly the colour written for it
    assert item["frames"][..., 0].float().mean(dim=(1, 2)).tolist() == [frame_red(t) for t in range(5)]
    np.testing.assert_array_equal(item["masks"].numpy(), truths["ms3_x"].index > 0)
    assert item["annotated"].all() and item["masks"].sum() == 5 * 96


def test_old_flat_ms3_layout_names_the_folder_expected(tmp_path, capsys):
    root = tmp_path / "Multi-sources"
    write_ms3_object_tree(root, nested=True)
    data = root / "ms3_data"
    flatten_ms3_frames(data)
    assert (data / "visual_frames/ms3_x.mp4_1.png").is_file()
    assert main(["data", "check", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{data / 'visual_frames' / vid}: missing frame folder (AVSBench MS3 keeps each video's frames "
        f"{vid}.mp4_1.png … {vid}.mp4_5.png in its own folder visual_frames/{{video_id}}/); found 5 of "
        f"them directly in {data / 'visual_frames'}, the layout older teso versions expected: move them "
        f"into {data / 'visual_frames' / vid}"
        for vid in ("ms3_x", "ms3_y")
    ]
    with pytest.raises(TesoError, match=r"visual_frames/ms3_x: missing frame folder .* move them into"):
        AVSBenchDataset(root, "v1m", "train")[0]


def test_missing_clip_folder_is_one_problem(tmp_path):
    root = tmp_path / "rel"
    write_released_tree(root)
    shutil.rmtree(root / "v2/v2_rgb")
    assert [str(p) for p in check_tree(root).problems] == [
        f"{root / 'v2/v2_rgb'}: missing clip folder (listed in metadata.csv)"
    ]


def test_tree_level_problems(tmp_path, capsys):
    report = check_tree(tmp_path / "absent")
    assert not report.ok and report.layout is None
    assert str(report.problems[0]) == f"{tmp_path / 'absent'}: dataset root not found (expected a folder)"
    root = tmp_path / "cols"
    root.mkdir()
    (root / "metadata.csv").write_text("vid,uid,split\nx,y,train\n")
    lines = [str(p) for p in check_tree(root).problems]
    assert lines[0].startswith(f"{root / 'metadata.csv'}: missing CSV column(s) s_min, s_sec, a_obj, label")
    assert (
        lines[1]
        == f"{root / 'label2idx.json'}: missing (expected a JSON object class name -> index, background = 0)"
    )
    (root / "label2idx.json").write_text('{"background": 0, "dog": 2}')
    assert any(
        "indices must be exactly 0..1 once each; missing: [1]" in line
        for line in map(str, check_tree(root).problems)
    )
    assert main(["data", "check", str(tmp_path / "absent")]) == 1
    assert "dataset root not found" in capsys.readouterr().err
