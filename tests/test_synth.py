"""SynthAVS: layout, contents, determinism, resumability and the built-in preference statistics.

Most of these pin the v1 contract (``version=1``: per-second activity cues drawn in the pixels);
tests/test_synth_v2.py holds v2's premises."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from teso.data.avsbench import AVSBenchDataset
from teso.data.check import check_tree
from teso.data.palette import colorize
from teso.errors import TesoError
from teso.synthavs.generator import generate, split_counts
from teso.synthavs.generator.categories import AUDIBLE, CATEGORY_BY_NAME, SILENT, label2idx
from teso.synthavs.generator.scenes import sample_scene

AUDIO_WORDS = ("sound", "noise", "hear", "loud", "audio", "bark", "sing", "playing", "ticking", "siren")
AUDIO_WORD_RE = re.compile(
    r"\b(chirp\w*|talk\w*|speak\w*|music\w*|ring\w*|tick\w*|silen\w*|quiet\w*|hum|humming|honk\w*"
    r"|wail\w*|beep\w*|voice\w*|listen\w*|rev\w*|purr\w*|acoustic\w*)\b"
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, clips=4, seed=3, progress=False, workers=1, version=1)
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
            assert not AUDIO_WORD_RE.search(low), text
            for o in truth["objects"]:
                cat = CATEGORY_BY_NAME[o["category"]]
                assert cat.noun in low and o["colour"] in low
                phrases = cat.cue_on if o["cue"][t] else cat.cue_off
                assert any(p.lower() in low for p in phrases), (text, o)


@pytest.mark.parametrize("version", [1, 2])
def test_same_seed_same_bytes_and_resume_after_a_lost_clip(tmp_path, version):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, clips=3, seed=7, subsets=("v1s",), progress=False, workers=1, version=version)
    generate(b, clips=3, seed=7, subsets=("v1s",), progress=False, workers=2, version=version)
    assert _hashes(a) == _hashes(b)
    lost = next((a / "v1s").iterdir())
    shutil.rmtree(lost)
    summary = generate(a, clips=3, seed=7, subsets=("v1s",), progress=False, workers=1, version=version)
    assert summary.written == 1 and summary.skipped == 2
    assert _hashes(a) == _hashes(b)
    c = tmp_path / "c"
    generate(c, clips=3, seed=8, subsets=("v1s",), progress=False, workers=1, version=version)
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


def test_truth_matches_the_files_and_the_scene_sampler(synth):
    from teso.synthavs.generator import IMAGE_SIZE, Q, _clip_rng

    for row in csv.DictReader((synth / "metadata.csv").open()):
        clip = synth / row["label"] / row["uid"]
        truth = json.loads((clip / "truth.json").read_text())
        index = int(row["uid"].rsplit("_", 1)[1])
        scene = sample_scene(_clip_rng(3, row["label"], row["split"], index), row["label"], row["split"],
                             index, IMAGE_SIZE, Q)  # fmt: skip
        assert [o["sounding"] for o in truth["objects"]] == [o.sounding for o in scene.objects]
        assert [o["cue"] for o in truth["objects"]] == [o.cue for o in scene.objects]
        for o in truth["objects"]:
            for t in range(truth["seconds"]):
                inst = np.asarray(Image.open(clip / "instances" / f"{t}.png")) == o["instance_id"]
                ys, xs = np.nonzero(inst)
                assert o["visible_pixels"][t] == len(xs) > 0
                assert o["bbox"][t] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_subset_rules_hold_in_every_sampled_clip():
    for subset, seconds, (lo, hi) in (("v1s", 5, (1, 3)), ("v1m", 5, (2, 4)), ("v2", 10, (1, 4))):
        for split in ("train", "test"):
            for i in range(150):
                scene = sample_scene(np.random.default_rng([11, i]), subset, split, i)
                objs = scene.objects
                audible = [o for o in objs if o.audible]
                sounding = [o for o in objs if any(o.sounding)]
                assert lo <= len(objs) <= hi and scene.seconds == seconds
                assert len({o.category for o in objs}) == len(objs)
                assert all(len(o.sounding) == len(o.cue) == seconds for o in objs)
                assert not any(any(o.sounding) for o in objs if not o.audible)
                assert "_" not in "".join(o.category for o in objs)
                if subset == "v1s":
                    assert len(audible) == 1 and sounding == audible
                elif subset == "v1m":
                    assert len(audible) >= 2 and len(sounding) >= 2
                else:
                    assert len(sounding) >= 1


def test_a_category_prior_rule_is_rewarded_in_train_and_useless_in_test():
    """'Segment an object whenever its category usually sounds' versus the truth, per object-second:
    right about 70 % of the time in train, a coin flip in test, in every subset."""
    for subset in ("v1s", "v1m", "v2"):
        acc = {}
        for split in ("train", "test"):
            right = total = 0
            for i in range(300):
                for o in sample_scene(np.random.default_rng([12, i]), subset, split, i).objects:
                    if o.audible:
                        rule = CATEGORY_BY_NAME[o.category].train_prior >= 0.5
                        right += sum(s == rule for s in o.sounding)
                        total += len(o.sounding)
            acc[split] = right / total
        assert acc["train"] > 0.66 and abs(acc["test"] - 0.5) < 0.04, (subset, acc)


def test_occlusion_order_nearer_objects_hide_farther_ones():
    from dataclasses import replace

    from teso.synthavs.generator.render import render_background, render_frame

    overlaps = 0
    for i in range(60):
        scene = sample_scene(np.random.default_rng([13, i]), "v2", "test", i)
        if len(scene.objects) < 3:
            continue
        bg = render_background(scene)
        _, full = render_frame(scene, 0, bg, np.random.default_rng(0))
        for obj in scene.objects:
            _, solo = render_frame(replace(scene, objects=[obj]), 0, bg, np.random.default_rng(0))
            own = solo == obj.instance_id
            assert not ((full == obj.instance_id) & ~own).any()  # an object never spills outside itself
            covered = full[own & (full != obj.instance_id)]
            # What hides it was drawn after it (nearer): a larger id, or a nearer object's prop (id 0).
            assert not ((covered > 0) & (covered < obj.instance_id)).any()
            overlaps += int((covered > obj.instance_id).any())
    assert overlaps >= 3


def test_each_category_sounds_distinct_in_log_mel():
    """A linear classifier on pooled VGGish log-mel tells held-out voices of the ten sounds apart."""
    import torch

    from teso.audio import log_mel_examples
    from teso.synthavs.generator.sounds import noise_floor, object_voice, sounding_second

    def examples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        mels, labels = [], []
        for ci, cat in enumerate(AUDIBLE):
            for _ in range(n):
                wave = sounding_second(cat, object_voice(cat, rng), rng) + noise_floor(rng)
                mels.append(log_mel_examples(wave, 16000)[0, 0])
                labels.append(ci)
        m = torch.stack(mels)  # [N, 96, 64]
        pooled = torch.nn.functional.avg_pool2d(m[:, None], (16, 8)).flatten(1)
        return torch.cat([m.mean(1), m.std(1), pooled], 1), torch.tensor(labels)

    xa, ya = examples(12, 0)
    xb, yb = examples(6, 1)
    mu, sd = xa.mean(0), xa.std(0) + 1e-3
    torch.manual_seed(0)
    lin = torch.nn.Linear(xa.shape[1], len(AUDIBLE))
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin((xa - mu) / sd), ya).backward()
        opt.step()
    acc = (lin((xb - mu) / sd).argmax(1) == yb).float().mean().item()
    assert acc >= 0.85, acc


def test_captions_vary_and_place_objects_where_they_are():
    from teso.synthavs.generator.captions import caption_frame

    texts = set()
    for i in range(40):
        scene = sample_scene(np.random.default_rng([14, i]), "v1m", "train", i)
        text = caption_frame(scene, 0, np.random.default_rng(i))
        texts.add(text.split(",")[0])
        for o in scene.objects:
            cat = CATEGORY_BY_NAME[o.category]
            side = (
                "on the left"
                if o.x[0] < 0.36 * 128
                else "on the right"
                if o.x[0] > 0.64 * 128
                else "in the middle"
            )
            prefix = {"air": "in the air ", "wall": "on the wall "}.get(cat.placement, "")
            assert f"a {o.colour} {cat.noun} {prefix}{side}" in text, (text, o.category, o.x[0])
    assert len(texts) >= 5


def test_cli_generates_and_checks(tmp_path, capsys):
    from teso.cli.main import main

    rc = main(
        ["data", "synth", "--out", str(tmp_path / "s"), "--clips", "3", "--subsets", "v1m", "--seed", "2"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "v1m: train 1, val 1, test 1" in out and "OK" in out
    assert len(list((tmp_path / "s" / "v1m").iterdir())) == 3
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["parameters"]["version"] == "2.0"
    rc = main(["data", "synth", "--out", str(tmp_path / "s1"), "--clips", "3", "--subsets", "v1m",
               "--version", "1"])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "s1" / "synth.json").read_text())["parameters"]["version"] == "1.0"


def test_no_caption_building_block_mentions_audio():
    from teso.synthavs.generator import captions
    from teso.synthavs.generator.categories import CATEGORIES

    blocks = [p for c in CATEGORIES for p in (*c.cue_on, *c.cue_off, c.noun, *(n for n, _ in c.colours))]
    blocks += [
        *captions.LEAD,
        *captions.NEXT,
        *(i for pair in captions.INTRO.values() for i in pair),
    ]
    for text in blocks:
        low = text.lower()
        assert not any(w in low for w in AUDIO_WORDS) and not AUDIO_WORD_RE.search(low), text


# sha256 over (relative path, bytes) of every file but synth.json of a tiny v1 tree, as made by the
# generator before v2 existed (commit e8ecacd) with the numeric stack of constraints.txt: v1 stays
# v1, byte for byte (its findings in the README rest on these bytes).
V1_TINY_SHA256 = "f8550310f9e1d511e62cd33454e895bb3de62ce4a8ad7caeca41feef303c9c17"


def test_v1_is_the_v1_of_before_v2_byte_for_byte(tmp_path):
    root = tmp_path / "v1"
    generate(root, clips=3, seed=7, subsets=("v1s",), progress=False, workers=1, version=1)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == V1_TINY_SHA256
