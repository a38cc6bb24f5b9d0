"""Foundation pre-training on SynthAVS: artifacts, loading, freezing, caching, resume, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Mask2FormerForUniversalSegmentation

from teso.cli.main import main
from teso.engine.config import load_experiment
from teso.engine.trainer import Trainer, model_config_for
from teso.errors import TesoError
from teso.model import AudioConfig, AudioEncoder, build_teso, get_variant, load_checkpoint
from teso.model.foundation import load_mask2former
from teso.model.foundation_sources import foundation_provenance
from teso.synthavs.foundations import (
    AUDIO_FILE,
    RECORD_NAME,
    VISUAL_DIR,
    average_precision,
    dataset_hash,
    load_foundation_data,
    pretrain_foundations,
    tagging_map,
)
from teso.synthavs.generator import generate

SIZE = 64
KW = {"steps_visual": 6, "steps_audio": 6, "image_size": SIZE, "seed": 0, "progress": False}


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain") / "synth"
    generate(root, clips=4, seed=1, subsets=("v1m",), progress=False, workers=1)  # train 2, val 1, test 1
    return root


@pytest.fixture(scope="module")
def pretrained(root) -> dict:
    """One uninterrupted run into the default directory, with the per-step losses it reported."""
    losses: dict[str, list[float]] = {"visual": [], "audio": []}
    res = pretrain_foundations(
        root, checkpoint_every=2, callback=lambda stage, step, loss: losses[stage].append(loss), **KW
    )
    return dict(res, step_losses=losses)


def _tiny(pretrained_dir: str | None = None, weights: str | None = None, freeze: bool = False):
    config = get_variant("tiny", image_size=SIZE)
    config.visual.pretrained = pretrained_dir
    config.audio.weights = weights
    config.freeze_foundation = freeze
    return config


def test_artifacts_record_and_default_directory(root, pretrained):
    out = Path(pretrained["dir"])
    assert out.parent == root / "foundations"
    assert out.name.startswith(dataset_hash(root)[:16] + "-")
    assert (out / VISUAL_DIR / "config.json").is_file() and (out / AUDIO_FILE).is_file()
    assert not (out / "state").exists()  # training states are removed once the record is written
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["dataset"]["hash"] == dataset_hash(root)
    assert record["steps"] == {"visual": 6, "audio": 6} and record["image_size"] == SIZE
    assert 0.0 <= record["scores"]["all_object_miou"] <= 1.0 and 0.0 < record["scores"]["tagging_map"] <= 1.0
    assert record["visual"]["categories"][:2] == ["guitar", "emergency-car"]
    assert len(record["visual"]["categories"]) == 12 and len(record["audio"]["tags"]) == 10
    assert pretrained["overrides"] == [
        f"model.visual.pretrained={out / VISUAL_DIR}",
        f"model.audio.weights={out / AUDIO_FILE}",
        "model.freeze_foundation=true",
    ]
    assert not pretrained["cached"] and len(pretrained["step_losses"]["visual"]) == 6


def test_data_targets_come_from_the_truth(root):
    data = load_foundation_data(root, "test", SIZE)
    assert data.frames.shape == (5, SIZE, SIZE, 3) and data.frames.dtype == torch.uint8
    assert data.objects.shape == (5, 128, 128) and data.audio.shape == (5, 1, 96, 64)
    truth = json.loads(next((root / "v1m").glob("synth_v1m_test_*/truth.json")).read_text())
    for t in range(5):
        want = {data.tags.index(o["category"]) for o in truth["objects"] if o["sounding"][t]}
        assert set(torch.nonzero(data.sounding[t]).flatten().tolist()) == want
        visible = {data.categories.index(o["category"]) + 1 for o in truth["objects"]}
        assert set(torch.unique(data.objects[t]).tolist()) - {0} <= visible


def test_losses_decrease(pretrained):
    audio = pretrained["step_losses"]["audio"]  # one fixed batch (all 10 train seconds): smooth descent
    assert audio[-1] < audio[0]
    visual = pretrained["step_losses"]["visual"]
    assert all(torch.isfinite(torch.tensor(visual)))


def test_foundation_loads_as_a_pretrained_mask2former_and_into_teso(pretrained):
    out = Path(pretrained["dir"])
    saved = Mask2FormerForUniversalSegmentation.from_pretrained(str(out / VISUAL_DIR)).state_dict()
    config = _tiny(str(out / VISUAL_DIR))
    m2f = load_mask2former(config.visual, num_classes=1)
    assert m2f.config.id2label[0] == "guitar"
    assert all(torch.equal(v, saved[k]) for k, v in m2f.state_dict().items())

    exp = load_experiment(
        "synth", [*pretrained["overrides"], f"model.visual.image_size={SIZE}", "model.text.dim=32"]
    )
    model = build_teso(model_config_for(exp))
    head = model.foundation.class_head
    assert head.out_features == 2  # N_C = 1 + no-object: the 12-category head was replaced
    for k, v in model.foundation.m2f.state_dict().items():
        if not k.startswith("class_predictor."):
            assert torch.equal(v, saved[k]), k  # the mask embedder and everything else stay
    audio = load_file(str(out / AUDIO_FILE))
    assert all(torch.equal(v, audio[k]) for k, v in model.audio_encoder.net.state_dict().items())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("audio_encoder.", "foundation.m2f.model.")) for n in trainable)
    assert "foundation.m2f.class_predictor.weight" in trainable
    assert any(n.startswith("foundation.adapters.") for n in trainable)


def test_cached_second_call_does_not_train(root, pretrained):
    record = Path(pretrained["dir"]) / RECORD_NAME
    mtime = record.stat().st_mtime_ns
    calls: list = []
    again = pretrain_foundations(root, callback=lambda *a: calls.append(a), **KW)
    assert again["cached"] and not calls and record.stat().st_mtime_ns == mtime
    assert again["scores"] == pretrained["scores"] and again["dir"] == pretrained["dir"]
    with pytest.raises(TesoError, match="another dataset or other settings"):
        pretrain_foundations(root, out=pretrained["dir"], **dict(KW, steps_audio=7))


def test_resume_after_interruptions_gives_the_uninterrupted_weights(root, pretrained, tmp_path):
    out = tmp_path / "resumed"
    seen: list[tuple[str, int]] = []

    def stop_at(stage: str, at: int):
        def callback(s: str, step: int, _loss: float) -> None:
            seen.append((s, step))
            if (s, step) == (stage, at):
                raise Interrupt

        return callback

    with pytest.raises(Interrupt):
        pretrain_foundations(root, out=out, checkpoint_every=2, callback=stop_at("visual", 3), **KW)
    assert (out / "state" / "visual.pt").is_file() and not (out / RECORD_NAME).exists()
    with pytest.raises(TesoError, match="unfinished pre-training of another dataset or other settings"):
        pretrain_foundations(root, out=out, **dict(KW, seed=1))
    seen.clear()
    with pytest.raises(Interrupt):
        pretrain_foundations(root, out=out, checkpoint_every=2, callback=stop_at("audio", 5), **KW)
    assert seen[0] == ("visual", 3)  # resumed from the state saved after step 2
    seen.clear()
    res = pretrain_foundations(root, out=out, checkpoint_every=2, callback=stop_at("none", 0), **KW)
    assert seen == [("audio", 5), ("audio", 6)] and not res["cached"]

    ref = Path(pretrained["dir"])
    a = load_file(str(ref / VISUAL_DIR / "model.safetensors"))
    b = load_file(str(out / VISUAL_DIR / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_file(str(ref / AUDIO_FILE)), load_file(str(out / AUDIO_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res["scores"] == pretrained["scores"]
    assert res["visual"]["loss_curve"] == pretrained["visual"]["loss_curve"]


def test_frozen_foundations_stay_bit_identical_under_teso_training(root, pretrained, tmp_path):
    out = Path(pretrained["dir"])
    overrides = [
        *pretrained["overrides"],
        f"data.root={root}",
        "data.subset=v1m",
        "data.val_split=test",
        "model.ablation.text=false",  # the audio-visual baseline: no text features needed
        f"model.visual.image_size={SIZE}",
        "train.batch_size=1",
        "train.max_steps=2",
        "train.epochs=1",
        "train.log_every=1",
    ]
    result = Trainer(load_experiment("synth", overrides), tmp_path / "run", progress=False).fit()
    assert result.steps == 2
    model, extra = load_checkpoint(result.last)
    saved = Mask2FormerForUniversalSegmentation.from_pretrained(str(out / VISUAL_DIR)).state_dict()
    for k, v in model.foundation.m2f.state_dict().items():
        if not k.startswith("class_predictor."):
            assert torch.equal(v, saved[k]), k
    audio = load_file(str(out / AUDIO_FILE))
    assert all(torch.equal(v, audio[k]) for k, v in model.audio_encoder.net.state_dict().items())
    (entry,) = extra["foundations"]
    assert entry["used_for"] == ["visual", "audio"] and entry["dataset"]["hash"] == dataset_hash(root)
    assert entry["scores"] == pretrained["scores"] and entry["steps"] == {"visual": 6, "audio": 6}
    assert foundation_provenance(get_variant("tiny")) == []  # random foundations: nothing to record


def test_cli(root, pretrained, capsys, tmp_path):
    args = ["pretrain", str(root), "--steps-visual", "6", "--steps-audio", "6", "--image-size", str(SIZE)]
    assert main([*args, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "cached" in text and "all-object mIoU" in text and "tagging mAP" in text
    assert " ".join(pretrained["overrides"]) in text
    assert main(["pretrain", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "not a SynthAVS tree" in err


def test_audio_weights_load_strictly_and_name_the_file(pretrained, tmp_path):
    good = Path(pretrained["dir"]) / AUDIO_FILE
    enc = AudioEncoder(AudioConfig(encoder="cnn", weights=str(good)))
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.net.training  # a frozen encoder computes its inference features
    assert not AudioEncoder(AudioConfig(encoder="cnn", weights=str(good), freeze=False)).frozen
    scratch = AudioEncoder(AudioConfig(encoder="cnn"))  # no weights: trains whatever freeze says
    assert not scratch.frozen and all(p.requires_grad for p in scratch.parameters())

    state = load_file(str(good))
    bad = tmp_path / "renamed.safetensors"
    save_file({("net." + k if k.startswith("proj") else k): v for k, v in state.items()}, str(bad))
    with pytest.raises(TesoError, match="renamed.safetensors.*missing keys \\['proj.bias', 'proj.weight'\\]"):
        AudioEncoder(AudioConfig(encoder="cnn", weights=str(bad)))
    with pytest.raises(TesoError, match=f"{tmp_path / 'absent.safetensors'}: not found"):
        AudioEncoder(AudioConfig(encoder="cnn", weights=str(tmp_path / "absent.safetensors")))
    with pytest.raises(TesoError, match=f"{good}: shapes differ"):
        AudioEncoder(AudioConfig(encoder="cnn", weights=str(good), cnn_channels=[8, 16, 32]))
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file")
    with pytest.raises(TesoError, match="notes.safetensors: not a readable safetensors file"):
        AudioEncoder(AudioConfig(encoder="cnn", weights=str(text)))
    # A model rebuilt from a checkpoint follows the same rule without reading the file.
    assert AudioEncoder(AudioConfig(encoder="cnn", weights=str(text)), load_weights=False).frozen


def test_average_precision_by_hand():
    # positives at ranks 1 and 3: AP = 1/2 · 1 + 1/2 · 2/3
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])) == pytest.approx(
        5 / 6
    )
    # tied scores are one threshold: (0.9: P 1, R 1/2), (0.5: P 2/3, R 1) -> 1/2 + 1/2 · 2/3
    assert average_precision(torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(
        5 / 6
    )
    assert average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 1])) == 1.0
    scores = torch.tensor([[0.9, 0.2, 0.3], [0.8, 0.7, 0.1], [0.1, 0.4, 0.2]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]]).bool()
    mean_ap, per = tagging_map(scores, labels)
    # class 0: positives at ranks 1 and 3 -> 5/6; class 1: its only positive ranks first -> 1; class 2: none
    assert per[0] == pytest.approx(5 / 6) and per[1] == 1.0 and per[2] is None
    assert mean_ap == pytest.approx((5 / 6 + 1) / 2)
    with pytest.raises(TesoError, match="no positive"):
        average_precision(torch.tensor([0.5]), torch.tensor([0]))
