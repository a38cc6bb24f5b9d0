"""SynthAVS: layout, contents, determinism, resumability and the built-in preference statistics."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from teso.data.avsbench import AVSBenchDataset
from teso.data.check import check_tree
from teso.data.palette import colorize
from teso.data.synth import generate, split_counts
from teso.data.synth.categories import AUDIBLE, CATEGORY_BY_NAME, SILENT, label2idx
from teso.data.synth.scenes import sample_scene
from teso.errors import TesoError

AUDIO_WORDS = ("sound", "noise", "hear", "loud", "audio", "bark", "sing", "playing", "ticking", "siren")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, clips=4, seed=3, progress=False, workers=1)
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_is_read_by_the_avsbench_readers_and_passes_the_checker(synth):
    report = check_tree(synth)
    assert report.ok, [str(p) for p in report.problems]
    rows = list(csv.DictReader((synth / "metadata.csv").open()))
    assert len(rows) == 12 and {r["label"] for r in rows} == {"v1s", "v1m", "v2"}
    assert json.loads((synth / "label2idx.json").read_text()) == label2idx()
    assert len(AUDIBLE) >= 10 and len(SILENT) >= 2
    ds = AVSBenchDataset(synth, "v2", "test")
    item = ds[0]
    assert item["frames"].shape == (10, 128, 128, 3) and item["audio"].shape == (10, 1, 96, 64)
    assert item["annotated"].all() and item["semantic"].shape == (10, 128, 128)


def test_masks_are_the_union_of_the_sounding_instances(synth):
    classes = label2idx()
    for row in csv.DictReader((synth / "metadata.csv").open()):
        clip = synth / row["label"] / row["uid"]
        truth = json.loads((clip / "truth.json").read_text())
        seconds = 5 if row["label"] != "v2" else 10
        audio, sr = sf.read(clip / "audio.wav")
        assert sr == 16000 and len(audio) == seconds * 16000
        sounding_cats = {o["category"] for o in truth["objects"] if any(o["sounding"])}
        assert set(filter(None, row["a_obj"].split("_"))) == sounding_cats
        for t in range(seconds):
            inst = np.asarray(Image.open(clip / "instances" / f"{t}.png"))
            sem = np.asarray(Image.open(clip / "labels_semantic" / f"{t}.png"))
            rgb = np.asarray(Image.open(clip / "labels_rgb" / f"{t}.png").convert("RGB"))
            expected = np.zeros_like(sem)
            for o in truth["objects"]:
                assert (inst == o["instance_id"]).any(), f"{clip}: object {o['instance_id']} invisible at {t}"
                if o["sounding"][t]:
                    expected[inst == o["instance_id"]] = classes[o["category"]]
            np.testing.assert_array_equal(sem, expected)
            np.testing.assert_array_equal(rgb, colorize(expected, len(classes)))
            assert np.asarray(Image.open(clip / "frames" / f"{t}.jpg")).shape == (128, 128, 3)


def test_captions_describe_what_is_visible_and_never_the_audio(synth):
    for clip in synth.glob("v*/synth_*"):
        captions = json.loads((clip / "captions.json").read_text())
        truth = json.loads((clip / "truth.json").read_text())
        assert len(captions) == truth["seconds"]
        for t, text in enumerate(captions):
            low = text.lower()
            assert not any(w in low for w in AUDIO_WORDS), text
            for o in truth["objects"]:
                cat = CATEGORY_BY_NAME[o["category"]]
                assert cat.noun in low and o["colour"] in low
                phrases = cat.cue_on if o["cue"][t] else cat.cue_off
                assert any(p.lower() in low for p in phrases), (text, o)


def test_same_seed_same_bytes_and_resume_after_a_lost_clip(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, clips=3, seed=7, subsets=("v1s",), progress=False, workers=1)
    generate(b, clips=3, seed=7, subsets=("v1s",), progress=False, workers=2)
    assert _hashes(a) == _hashes(b)
    lost = next((a / "v1s").iterdir())
    shutil.rmtree(lost)
    summary = generate(a, clips=3, seed=7, subsets=("v1s",), progress=False, workers=1)
    assert summary.written == 1 and summary.skipped == 2
    assert _hashes(a) == _hashes(b)
    c = tmp_path / "c"
    generate(c, clips=3, seed=8, subsets=("v1s",), progress=False, workers=1)
    assert _hashes(c) != _hashes(a)


def test_out_directory_errors(tmp_path):
    generate(tmp_path / "x", clips=3, seed=1, subsets=("v1s",), progress=False, workers=1)
    with pytest.raises(TesoError, match="other parameters"):
        generate(tmp_path / "x", clips=3, seed=2, subsets=("v1s",), progress=False, workers=1)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(TesoError, match="not a SynthAVS tree"):
        generate(tmp_path / "y", clips=3, progress=False, workers=1)
    with pytest.raises(TesoError, match="at least 3"):
        split_counts(2)


def _rates(split: str, n: int) -> tuple[dict[str, float], float]:
    on: dict[str, list[int]] = {c: [0, 0] for c in AUDIBLE}
    agree = total = 0
    for i in range(n):
        scene = sample_scene(np.random.default_rng(10_000 + i), "v1s", split, i)
        for o in scene.objects:
            if o.audible:
                on[o.category][0] += sum(o.sounding)
                on[o.category][1] += len(o.sounding)
                agree += sum(s == c for s, c in zip(o.sounding, o.cue))
                total += len(o.sounding)
            else:
                assert not any(o.sounding)
    return {c: k / max(m, 1) for c, (k, m) in on.items()}, agree / total


def test_train_priors_differ_by_category_and_test_priors_do_not():
    train, agree_train = _rates("train", 400)
    test, agree_test = _rates("test", 400)
    assert max(train.values()) - min(train.values()) > 0.5
    assert train["guitar"] > 0.8 and train["car"] < 0.3
    assert all(abs(r - 0.5) < 0.12 for r in test.values()), test
    assert abs(agree_train - 0.8) < 0.03 and abs(agree_test - 0.8) < 0.03


def test_seconds_with_sounding_objects_are_louder(synth):
    loud, quiet = [], []
    for clip in synth.glob("v*/synth_*"):
        truth = json.loads((clip / "truth.json").read_text())
        audio, _ = sf.read(clip / "audio.wav")
        for t in range(truth["seconds"]):
            rms = float(np.sqrt(np.mean(audio[t * 16000 : (t + 1) * 16000] ** 2)))
            (loud if any(o["sounding"][t] for o in truth["objects"]) else quiet).append(rms)
    assert loud and quiet and min(loud) > 3 * max(quiet)
