"""Training, resume, evaluation under audio controls and prediction, end to end on a tiny tree."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from teso.audio import load_audio
from teso.cli.main import main
from teso.data.avsbench import list_clips
from teso.engine.config import load_experiment, parse_overrides
from teso.engine.evaluate import evaluate, evaluate_checkpoint, parse_conditions, perturb
from teso.engine.predict import predict_video, windows
from teso.engine.sampling import epoch_batches
from teso.engine.trainer import Trainer
from teso.errors import TesoError
from teso.video import read_frames
from teso.video.writer import write_mp4
from tests.engine_fixtures import fast_overrides, write_tree_with_features


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree_with_features(tmp_path_factory.mktemp("avs"))


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    result = Trainer(exp, run, progress=False).fit()
    assert result.steps == 2 and result.stopped == "max_steps"
    return run


def test_two_training_steps_write_logs_and_checkpoints(trained):
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert {"loss_mask", "loss_dice", "loss_class", "loss_infonce", "grad_norm", "lr"} <= set(train[0])
    val = [r for r in log if r["kind"] == "val"]
    assert len(val) == 1 and 0.0 <= val[0]["miou"] <= 1.0
    assert (trained / "checkpoints" / "last.safetensors").is_file()
    assert (trained / "checkpoints" / "best.safetensors").is_file()
    assert (trained / "checkpoints" / "last.train.pt").is_file()
    assert list((trained / "tb").glob("events.out.tfevents.*"))


def test_resume_gives_the_weights_of_an_uninterrupted_run(tree, tmp_path):
    def trainer(run: str, resume: bool = False, **extra: str) -> Trainer:
        exp = load_experiment("synth", fast_overrides(tree, **extra))
        return Trainer(exp, tmp_path / run, resume=resume, device="cpu", progress=False)

    assert trainer("a").fit().steps == 4  # 2 epochs x 2 clips at batch 1
    assert trainer("b", **{"train.max_steps": "3"}).fit().steps == 3  # killed mid-epoch 2
    assert trainer("b", resume=True).fit().steps == 4
    a = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    # Exact: on CPU with one thread (tests/conftest.py) training is a pure function of weights, optimiser,
    # schedule, RNG and data position, so a resume that restores all of them gives the same bits on
    # any machine. (The run stopped at step 3 validates there and the uninterrupted one does not;
    # transformers 5.0's decoder draws from the global RNG in eval, so the trainer restores the RNG
    # around every validation — without that, 5.0 drifted ~1e-6 apart here.)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_resume_refuses_a_changed_config_and_a_reused_directory(tree, trained):
    changed = load_experiment("synth", fast_overrides(tree, **{"train.lr": "0.5", "train.max_steps": "2"}))
    with pytest.raises(TesoError, match=r"differs .* train\.lr"):
        Trainer(changed, trained, resume=True, progress=False).fit()
    same = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    with pytest.raises(TesoError, match="--resume"):
        Trainer(same, trained, progress=False).fit()


def test_resume_after_a_default_changed_continues_the_stored_model(tree, tmp_path, monkeypatch, capsys):
    """The same experiment resolves to another model when teso's defaults change between the start
    of a run and its resume (here: ``text.padding``). The resume continues the model the checkpoint
    holds, says so, and ends with that model; ``teso ablate`` refuses such a row instead of mixing
    it into a table with rows trained under the new defaults."""
    import teso.engine.ablate as ablate_mod
    import teso.engine.trainer as trainer_mod
    from teso.model import load_checkpoint

    over = fast_overrides(tree, **{"train.max_steps": "2"})
    run = tmp_path / "ablate" / "teso"
    Trainer(load_experiment("synth", over), run, progress=False).fit()  # today's default: zero rows
    real = trainer_mod.model_config_for

    def old_defaults(exp):  # as if the run had started under the other default
        config = real(exp)
        config.text.padding = "mask"
        return config

    monkeypatch.setattr(trainer_mod, "model_config_for", old_defaults)
    resumed = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "3"}))
    assert Trainer(resumed, run, resume=True, progress=False).fit().steps == 3
    assert "text.padding as it was trained" in capsys.readouterr().out
    model, _ = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert model.config.text.padding == "zero"

    monkeypatch.setattr(ablate_mod, "model_config_for", old_defaults)
    with pytest.raises(
        TesoError, match=r"row 'teso' was trained as another model \(differs in text\.padding"
    ):
        ablate_mod.run_ablations("synth", over, tmp_path / "ablate", rows=["teso"], progress=False)


def test_epoch_batches_are_deterministic_sharded_and_complete():
    a = epoch_batches(10, 2, seed=1, epoch=3)
    assert a == epoch_batches(10, 2, seed=1, epoch=3) and a != epoch_batches(10, 2, seed=1, epoch=4)
    assert sorted(i for b in a for i in b) == list(range(10))
    r0 = epoch_batches(10, 2, seed=1, epoch=0, rank=0, world_size=2)
    r1 = epoch_batches(10, 2, seed=1, epoch=0, rank=1, world_size=2)
    assert len(r0) == len(r1) == 2 and not set(sum(r0, [])) & set(sum(r1, []))


def test_audio_conditions():
    assert parse_conditions("mute,wgn10") == ["normal", "mute", "wgn10"]
    with pytest.raises(TesoError, match="unknown condition 'loud'"):
        parse_conditions("normal,loud")
    w = torch.sin(torch.arange(16000) / 5.0)
    assert torch.equal(perturb(w, "mute", 0), torch.zeros_like(w))
    noise = perturb(w, "wgn10", 0)
    # The noise is scaled to the target power exactly in float64; what is left is its float32 cast
    # and these float32 means (relative error < 1e-5, i.e. < 1e-4 dB). Amplitude instead of power
    # (20 log10) would be 10 dB off; noise drawn without rescaling, ~0.05 dB.
    assert abs(10 * torch.log10(w.pow(2).mean() / noise.pow(2).mean()).item() - 10) < 1e-3
    assert torch.equal(noise, perturb(w, "wgn10", 0)) and not torch.equal(noise, perturb(w, "wgn10", 1))


def test_eval_reports_every_condition_and_reuse_changes_nothing(tree, trained, tmp_path):
    ckpt = trained / "checkpoints" / "best.safetensors"
    res = evaluate_checkpoint(
        ckpt, tree, audio="normal,mute,wgn10,wgn40", out=tmp_path / "r.json", progress=False
    )
    assert json.loads((tmp_path / "r.json").read_text())["conditions"].keys() == {
        "normal",
        "mute",
        "wgn10",
        "wgn40",
    }
    normal, mute = res["conditions"]["normal"], res["conditions"]["mute"]
    assert normal["delta_m"] == 0.0 and normal["num_frames"] == 20
    for r in res["conditions"].values():
        assert 0 <= r["miou"] <= 1 and 0 <= r["fg_rate"] <= 1 and r["pref_rate"] is None
    assert mute["delta_m"] == pytest.approx((normal["miou"] - mute["miou"]) / normal["miou"])
    from teso.engine.data import ClipDataset, open_text_features
    from teso.model import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    ds = ClipDataset(
        str(tree),
        "v2",
        "test",
        image_size=64,
        text=open_text_features(str(tree), "default", "tiny", 32),
        audio="waveform",
    )
    a = evaluate(model, ds, ["normal", "mute"], reuse_visual=True)["conditions"]
    b = evaluate(model, ds, ["normal", "mute"], reuse_visual=False)["conditions"]
    # Exact: with and without reuse the same encode_visual runs on the same frames, so the
    # probabilities, hence every count behind the metrics, are the same bits.
    for cond in a:
        for key in ("miou", "fscore", "miou_nonempty", "fg_rate"):
            assert a[cond][key] == b[cond][key], (cond, key)


def test_predict_writes_masks_overlay_and_summary(tree, trained, tmp_path):
    clip = list_clips(tree, ["v2"], ["test"])[0]
    video = tmp_path / "clip.mp4"
    write_mp4(video, read_frames(clip.clip_dir / "frames"), fps=1, audio=load_audio(clip.audio_path))
    from teso.cues.features import build_clip_tensor
    from teso.cues.text_encoders import build_text_encoder

    enc = build_text_encoder("tiny")
    cues = [["man"], [], ["dog", "car"]] + [["piano"]] * 7
    summary = predict_video(
        video,
        trained / "checkpoints" / "best.safetensors",
        tmp_path / "out",
        cues=cues,
        encode_cues=lambda c: build_clip_tensor(c, enc, 4),
    )
    assert summary["seconds"] == 10 and summary["window"] == 10
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == sorted(
        f"{t}.png" for t in range(10)
    )
    assert [s["cues"] for s in summary["per_second"][:3]] == [["man"], [], ["dog", "car"]]
    assert all(0 <= s["sounding_area"] <= 1 for s in summary["per_second"])
    with av.open(str(tmp_path / "out" / "overlay.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        assert c.streams.video[0].frames == 10


def test_windows_cover_long_videos_with_the_clip_length():
    assert windows(3, 5) == [(0, 3)]
    assert windows(10, 5) == [(0, 5), (5, 10)]
    assert windows(12, 5) == [(0, 5), (5, 10), (7, 12)]


def test_overrides_parse_and_reject():
    assert parse_overrides(["train.epochs=5", "model.ablation.text=false"]) == {
        "train": {"epochs": 5},
        "model": {"ablation": {"text": False}},
    }
    with pytest.raises(TesoError, match="KEY=VALUE"):
        parse_overrides(["epochs"])
    with pytest.raises(TesoError, match="unknown key"):
        load_experiment("synth", ["train.epoch=5"])
    with pytest.raises(TesoError, match="expected a number"):
        load_experiment("synth", ["train.lr=fast"])


def test_cli_error_paths(tree, trained, tmp_path, capsys):
    def err(argv: list[str]) -> str:
        assert main(argv) == 1
        return capsys.readouterr().err

    assert "unknown config 'nope'" in err(["train", "nope"])
    ckpt = str(trained / "checkpoints" / "best.safetensors")
    assert "checkpoint not found" in err(["eval", str(tmp_path / "none.safetensors"), str(tree)])
    assert "unknown condition" in err(["eval", ckpt, str(tree), "--audio", "normal,loud"])
    assert "no such video file" in err(["predict", str(tmp_path / "none.mp4"), "--checkpoint", ckpt])
    silent = tmp_path / "silent.mp4"
    write_mp4(silent, np.zeros((3, 32, 32, 3), np.uint8), fps=1)
    assert "no audio stream" in err(["predict", str(silent), "--checkpoint", ckpt])
    short = tmp_path / "short.mp4"
    write_mp4(short, np.zeros((1, 32, 32, 3), np.uint8), fps=2, audio=np.zeros(8000, np.float32))
    assert "at least 1.000 s" in err(["predict", str(short), "--checkpoint", ckpt])
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert "video stream" in err(["predict", str(audio_only), "--checkpoint", ckpt])
    cues = tmp_path / "cues.json"
    cues.write_text(json.dumps([["man"]]))
    clip = list_clips(tree, ["v2"], ["test"])[0]
    video = tmp_path / "ok.mp4"
    write_mp4(video, read_frames(clip.clip_dir / "frames"), fps=1, audio=load_audio(clip.audio_path))
    assert "cues for 1 seconds" in err(["predict", str(video), "--checkpoint", ckpt, "--cues", str(cues)])


def test_resuming_a_stopped_run_trains_nothing_more(tree, trained):
    before = (trained / "log.jsonl").read_text()
    ckpt = (trained / "checkpoints" / "last.safetensors").read_bytes()
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    result = Trainer(exp, trained, resume=True, progress=False).fit()
    assert result.steps == 2 and result.stopped == "max_steps"
    assert (trained / "log.jsonl").read_text() == before
    assert (trained / "checkpoints" / "last.safetensors").read_bytes() == ckpt


def test_fewer_clips_than_processes_is_an_error():
    with pytest.raises(TesoError, match="1 clip"):
        epoch_batches(1, 4, seed=0, epoch=0, rank=0, world_size=2)


def test_eval_refuses_a_split_with_unannotated_frames(tree, trained):
    with pytest.raises(TesoError, match="frame 0 only"):
        evaluate_checkpoint(
            trained / "checkpoints" / "best.safetensors", tree, subset="v1s", split="train", progress=False
        )


def test_semantic_model_trains_evaluates_and_predicts(tree, tmp_path):
    run = tmp_path / "sem"
    over = fast_overrides(tree, **{"model.num_classes": "71", "train.max_steps": "1"})
    result = Trainer(load_experiment("synth", over), run, progress=False).fit()
    assert result.best is not None
    res = evaluate_checkpoint(result.best, tree, audio="normal,mute", out=tmp_path / "e.json", progress=False)
    normal = res["conditions"]["normal"]
    assert 0 <= normal["semantic_miou"] <= 1 and 0 <= normal["fg_rate"] <= 1
    from teso.model import load_checkpoint, sounding_maps

    model, _ = load_checkpoint(result.best)
    assert model.config.num_classes == 71
    # background is never a target: a pixel with no class above the threshold is background
    probs = torch.zeros(1, 71, 2, 2)
    probs[0, 5, 0, 0] = 0.9
    probs[0, 0] = 0.95  # a high background channel carries no evidence either way
    fg, cls = sounding_maps(probs, 71)
    assert cls.tolist() == [[[5, 0], [0, 0]]] and fg[0, 0, 0] == pytest.approx(0.9)


def _write_truth(clip_dir: Path, inst: np.ndarray, objects: list[dict]) -> None:
    """SynthAVS truth for a fixture clip: one instance-id PNG per frame and truth.json."""
    from PIL import Image

    (clip_dir / "instances").mkdir(exist_ok=True)
    for t in range(len(objects[0]["sounding"])):
        Image.fromarray(inst).save(clip_dir / "instances" / f"{t}.png")
    (clip_dir / "truth.json").write_text(json.dumps({"objects": objects}))


class _FixedMaps(torch.nn.Module):
    """A stand-in model whose sounding probability for second t is ``maps[t]``, whatever the input."""

    def __init__(self, config, maps: np.ndarray) -> None:
        super().__init__()
        self.config = config
        self.maps = torch.from_numpy(maps)  # [T, H, W] float32
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # evaluate reads the device from it

    def encode_visual(self, frames: torch.Tensor) -> tuple[int, int]:
        return frames.shape[:2]

    def decode(self, visual, audio, text, count):
        from types import SimpleNamespace

        b, t = visual

        def probs_at(size):
            assert tuple(size) == tuple(self.maps.shape[-2:]) and t == self.maps.shape[0]
            return self.maps[None, :, None].expand(b, -1, -1, -1, -1).clone()

        def frame_probs_at(clip, frame, size):
            assert tuple(size) == tuple(self.maps.shape[-2:]) and 0 <= clip < b
            return self.maps[frame][None].clone()  # [N_C = 1, H, W]

        return SimpleNamespace(
            probs_at=probs_at,
            frame_probs_at=frame_probs_at,
            cue_keep=torch.zeros(b, t, 0, dtype=torch.bool),
            prompt_keep=None,  # a visual-only stand-in: nothing prompts
        )


def test_preference_and_foreground_rates_of_known_maps(tree, tmp_path):
    """Hand-made truth and probabilities: the rates are counted here by hand, with SPEC's `p > 0.5`."""
    import shutil

    from teso.engine.data import ClipDataset
    from teso.engine.trainer import model_config_for

    root = tmp_path / "avs"
    shutil.copytree(tree, root)
    clips = list_clips(root, ["v2"], ["test"])
    h, w = 24, 32  # the fixture's frame size (tests/avsbench_fixtures.SIZE)
    inst = np.zeros((h, w), np.uint8)
    inst[:12] = 1  # object 1: the top half
    inst[12:, :16] = 2  # object 2: bottom left, never audible
    inst[12:, 16:] = 3  # object 3: bottom right, audible and always silent
    early = [t < 5 for t in range(10)]
    obj = lambda i, audible, sounding: {  # noqa: E731
        "instance_id": i,
        "category": "dog",
        "audible": audible,
        "sounding": sounding,
    }
    # clip A: object 1 audible, silent in seconds 0-4 and sounding in 5-9; clip B: object 1 inaudible
    truths = [
        [obj(1, True, [not e for e in early]), obj(2, False, [False] * 10), obj(3, True, [False] * 10)],
        [obj(1, False, [False] * 10), obj(2, False, [False] * 10), obj(3, True, [False] * 10)],
    ]
    for clip, objects in zip(clips, truths):
        _write_truth(clip.clip_dir, inst, objects)
    from PIL import Image

    for t in (3, 8):  # clip A: nothing sounds in these seconds (an all-background ground truth)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(clips[0].clip_dir / "labels_rgb" / f"{t}.png")
        sem = clips[0].clip_dir / "labels_semantic" / f"{t}.png"
        if sem.is_file():
            Image.fromarray(np.zeros((h, w), np.uint8)).save(sem)
    maps = np.full((10, h, w), 0.2, np.float32)
    maps[:, :6] = 0.9  # the top quarter: sounding
    maps[:, 6:12] = 0.5  # exactly at the threshold: not sounding (AVSBench: sigmoid(logit) > 0.5)
    maps[:, 12:15, :8] = 1.3  # overlapping queries sum above 1 (clamped): sounding, object 2
    maps[0::2, 12:, 16:24] = 0.7  # object 3, even seconds: sounding
    maps[9, 12:, 24:26] = np.nextafter(np.float32(0.5), np.float32(1))  # just above: sounding

    # by hand: A's silent pixels are object 1 in seconds 0-4 (5 x 384) and object 3 (10 x 192); of
    # them, rows 0-5 of object 1 (5 x 192), object 3's even seconds (5 x 96) and 24 px at second 9
    # are above 0.5. B's silent pixels are object 3 only.
    hits_a, silent_a = 5 * 192 + 5 * 96 + 24, 5 * 384 + 10 * 192
    hits_b, silent_b = 5 * 96 + 24, 10 * 192
    fg_per_clip = 10 * 192 + 10 * 24 + 5 * 96 + 24  # of 10 x 768 pixels
    # the same counts from the masks, independently of the evaluator
    above = maps > 0.5
    silent = np.zeros((2, 10, h, w), bool)
    silent[0, :5] = inst == 1
    silent[:, :] |= inst == 3
    assert int((above & silent[0]).sum()) == hits_a and int(silent[0].sum()) == silent_a
    assert int((above & silent[1]).sum()) == hits_b and int(silent[1].sum()) == silent_b
    assert int(above.sum()) == fg_per_clip

    model = _FixedMaps(model_config_for(load_experiment("synth", fast_overrides(root))), maps)
    ds = ClipDataset(str(root), "v2", "test", image_size=64, text=None, audio="waveform")
    normal = evaluate(model, ds, ["normal"])["conditions"]["normal"]
    # (`>=` would count the 0.5 band too: 2928 / 5760 and 4584 / 7680)
    assert normal["pref_rate"] == (hits_a + hits_b) / (silent_a + silent_b)  # 1968 / 5760
    assert normal["fg_rate"] == 2 * fg_per_clip / (2 * 10 * h * w)  # 2664 / 7680
    # Over the frames where something sounds (non-empty ground truth) only, from the masks themselves.
    gts = [ds[i]["masks"].numpy() for i in range(len(ds))]
    assert [ds[i]["uid"] for i in range(len(ds))] == [c.uid for c in clips] and gts[0].shape == (10, h, w)
    sounding = [g.reshape(10, -1).any(1) for g in gts]
    empty = sum(int((~s).sum()) for s in sounding)
    assert empty == 2  # both kinds of frame occur: the restriction is tested
    hits_s = sum(int((above & silent[c])[sounding[c]].sum()) for c in range(2))
    silent_s = sum(int(silent[c][sounding[c]].sum()) for c in range(2))
    assert normal["pref_rate_sounding"] == hits_s / silent_s != normal["pref_rate"]
    assert normal["empty_gt_share"] == empty / 20
    # without truth.json (AVSBench) the rate is not measurable: None, not 0
    (clips[1].clip_dir / "truth.json").unlink()
    assert evaluate(model, ds, ["normal"])["conditions"]["normal"]["pref_rate"] is None


def test_preference_rate_of_a_trained_model_when_every_pixel_is_silent(tree, trained, tmp_path):
    """One audible object covering every frame, silent throughout: the silent pixels are all the
    pixels, so the share of them predicted sounding is the foreground rate, exactly."""
    import shutil

    root = tmp_path / "avs"
    shutil.copytree(tree, root)
    for clip in list_clips(root, ["v2"], ["test"]):
        objects = [{"instance_id": 7, "category": "dog", "audible": True, "sounding": [False] * 10}]
        _write_truth(clip.clip_dir, np.full((24, 32), 7, np.uint8), objects)
    for threshold in (0.5, 0.99):  # two steps in, nearly every pixel passes 0.5; fewer pass 0.99
        res = evaluate_checkpoint(
            trained / "checkpoints" / "best.safetensors",
            root,
            audio="normal,mute",
            threshold=threshold,
            out=tmp_path / "p.json",
            progress=False,
        )
        for r in res["conditions"].values():
            assert r["pref_rate"] is not None and r["pref_rate"] == r["fg_rate"]


def test_a_frozen_foundation_run_saves_small_checkpoints_and_resumes_exactly(tree, tmp_path):
    """`teso pretrain`-style foundations (a save_pretrained directory + a CNN file), frozen: every
    checkpoint holds only what trains, resume restores it bit for bit, and a foundation changed
    under a run is refused instead of resumed on other weights."""
    import shutil

    from transformers import Mask2FormerForUniversalSegmentation

    from teso.engine.trainer import model_config_for
    from teso.model import load_checkpoint
    from teso.model.audio_encoder import TinyAudioCNN, save_cnn_weights
    from teso.model.checkpoint import FoundationMismatchError
    from teso.model.foundation import mask2former_config

    config = model_config_for(load_experiment("synth", fast_overrides(tree)))

    def foundation(out: Path, seed: int) -> None:
        torch.manual_seed(seed)
        Mask2FormerForUniversalSegmentation(mask2former_config(config.visual, 1)).save_pretrained(
            out / "visual"
        )
        save_cnn_weights(
            TinyAudioCNN(list(config.audio.cnn_channels), config.audio.dim), out / "audio.safetensors"
        )

    foundation(tmp_path / "f", seed=0)
    frozen = {
        "model.freeze_foundation": "true",
        "model.visual.pretrained": str(tmp_path / "f" / "visual"),
        "model.audio.weights": str(tmp_path / "f" / "audio.safetensors"),
    }

    def trainer(run: str, resume: bool = False, **extra: str) -> Trainer:
        exp = load_experiment("synth", fast_overrides(tree, **frozen, **extra))
        return Trainer(exp, tmp_path / run, resume=resume, device="cpu", progress=False)

    assert trainer("a").fit().steps == 4
    assert trainer("b", **{"train.max_steps": "3"}).fit().steps == 3
    assert trainer("b", resume=True).fit().steps == 4
    a_path, b_path = (tmp_path / r / "checkpoints" / "last.safetensors" for r in ("a", "b"))
    a, b = load_file(str(a_path)), load_file(str(b_path))
    model, _ = load_checkpoint(b_path)
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert fixed and a.keys() == b.keys() == set(model.state_dict()) - fixed
    # Exact, as in test_resume_gives_the_weights_of_an_uninterrupted_run.
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    shutil.rmtree(tmp_path / "f")
    foundation(tmp_path / "f", seed=1)  # other weights where the run's foundation was
    with pytest.raises(FoundationMismatchError, match=r"last\.safetensors: trained on frozen visual weights"):
        trainer("b", resume=True, **{"train.epochs": "3"}).fit()


def test_init_from_starts_a_fresh_run_from_another_runs_weights(tree, trained, tmp_path, capsys):
    """``--init-from``: the new run's weights at step 0 are the checkpoint's (not a fresh build), its
    optimiser and schedule start over, its checkpoints record where it began; another model or a
    missing file is refused before training."""
    from teso.model.checkpoint import read_checkpoint_metadata

    src = trained / "checkpoints" / "last.safetensors"
    out = tmp_path / "ft"
    argv = [
        "train",
        "synth",
        *fast_overrides(tree, **{"train.max_steps": "1", "train.lr": "0", "train.lr_visual_adapters": "0"}),
    ]
    # lr 0: one step changes nothing, so the saved weights are exactly where the run began.
    assert main([*argv, "--init-from", str(src), "--out", str(out), "--no-progress"]) == 0
    a, b = load_file(str(src)), load_file(str(out / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = tmp_path / "fresh"
    assert main([*argv, "--out", str(fresh), "--no-progress"]) == 0
    c = load_file(str(fresh / "checkpoints" / "last.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)  # without it the run starts from a fresh build
    _, extra = read_checkpoint_metadata(out / "checkpoints" / "last.safetensors")
    assert extra["init_from"]["path"] == str(src) and extra["init_from"]["step"] == 2 and extra["step"] == 1
    assert extra["experiment"]["train"]["init_from"] == str(src)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1]  # a new run: its own step count
    other = fast_overrides(tree, **{"train.max_steps": "1", "model.pmqs.num_layers": "1"})
    capsys.readouterr()
    assert main(["train", "synth", *other, "--init-from", str(src), "--out", str(tmp_path / "x")]) == 1
    assert "pmqs.num_layers" in capsys.readouterr().err
    assert main([*argv, "--init-from", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "y")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists() and not (tmp_path / "y" / "checkpoints").exists()
    # A path YAML would misread ("#" starts a comment) reaches the trainer as written.
    import shutil

    odd = tmp_path / "ckpt #1" / "2024-01-01.safetensors"
    odd.parent.mkdir()
    shutil.copy(src, odd)
    assert main([*argv, "--init-from", str(odd), "--out", str(tmp_path / "z"), "--no-progress"]) == 0
    _, extra = read_checkpoint_metadata(tmp_path / "z" / "checkpoints" / "last.safetensors")
    assert extra["init_from"]["path"] == str(odd)
