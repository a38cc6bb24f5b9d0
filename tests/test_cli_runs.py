"""The success paths of the commands users run — `teso train`, `teso eval`, `teso predict` and
`teso ablate` — through ``teso.cli.main.main`` on the tiny fixture tree, checked on the files they
write and the values in them."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from teso.audio import load_audio
from teso.cli.main import main
from teso.data.avsbench import list_clips
from teso.data.identity import dataset_identity
from teso.engine.config import load_experiment
from teso.model import load_checkpoint
from teso.utils.environment import cpu_record, machine_line
from teso.utils.numerics import numerics_record
from teso.video import read_frames
from teso.video.writer import write_mp4
from tests.engine_fixtures import fast_overrides, write_tree_with_features


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree_with_features(tmp_path_factory.mktemp("avs"))


@pytest.fixture(scope="module")
def train_run(tree, tmp_path_factory) -> tuple[Path, str]:
    """`teso train synth ... train.max_steps=2`: one epoch (2 clips at batch 1), one validation."""
    run = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "synth", *fast_overrides(tree, **{"train.max_steps": "2"})]
    code, out, err = run_cli([*argv, "--out", str(run), "--device", "cpu", "--no-progress"])
    assert code == 0, err
    return run, out


def test_train_writes_a_loadable_checkpoint_logs_and_the_resolved_config(tree, train_run):
    run, out = train_run
    ckpt = run / "checkpoints"
    val = [r for r in read_log(run) if r["kind"] == "val"]
    assert [r["step"] for r in read_log(run) if r["kind"] == "train"] == [1, 2]
    assert len(val) == 1 and 0 <= val[0]["miou"] <= 1
    assert out.splitlines()[-1] == (
        f"max_steps: 2 steps, 1 epochs; best val mIoU {100 * val[0]['miou']:.2f}; "
        f"last {ckpt / 'last.safetensors'}; best {ckpt / 'best.safetensors'}"
    )
    model, extra = load_checkpoint(ckpt / "last.safetensors")  # strict: every weight is there
    assert (extra["step"], extra["epoch"]) == (2, 1)
    assert model.config.visual.image_size == 64 and model.config.text.dim == 32
    assert extra["text_features"]["encoder"] == "tiny"
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    resolved = json.loads(json.dumps(exp.to_dict()))
    assert yaml.safe_load((run / "config.yaml").read_text()) == resolved == extra["experiment"]
    # one validation: the best checkpoint is the last one
    assert (ckpt / "best.safetensors").read_bytes() == (ckpt / "last.safetensors").read_bytes()


def test_train_resume_continues_the_log_and_the_step_count(tree, train_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(train_run[0], run)
    argv = ["train", "synth", *fast_overrides(tree, **{"train.max_steps": "3"}), "--out", str(run)]
    code, out, err = run_cli([*argv, "--resume", "--device", "cpu", "--no-progress"])
    assert code == 0, err
    assert out.splitlines()[-1].startswith("max_steps: 3 steps, 1 epochs;")
    assert [r["step"] for r in read_log(run) if r["kind"] == "train"] == [1, 2, 3]
    assert load_checkpoint(run / "checkpoints" / "last.safetensors")[1]["step"] == 3


def test_eval_writes_every_condition_and_agrees_with_validation(tree, train_run, tmp_path):
    run, _ = train_run
    best = run / "checkpoints" / "best.safetensors"
    out_json = tmp_path / "e.json"
    argv = ["eval", str(best), str(tree), "--audio", "mute,wgn10", "--out", str(out_json)]
    code, out, err = run_cli([*argv, "--device", "cpu", "--no-progress"])
    assert code == 0, err
    res = json.loads(out_json.read_text())
    assert list(res["conditions"]) == ["normal", "mute", "wgn10"]  # normal first: drops need it
    assert (res["subset"], res["split"], res["text_encoder"], res["threshold"]) == ("v2", "test", "tiny", 0.5)
    # What produced the numbers: software, CPU, numerics in effect, and the data it read.
    assert res["environment"]["packages"]["torch"] == torch.__version__
    assert res["environment"]["numerics"] == numerics_record()
    assert res["dataset"] == dataset_identity(tree) and res["dataset"]["method"] == "csv+listing"
    normal = res["conditions"]["normal"]
    for cond, r in res["conditions"].items():
        for key in ("miou", "fscore", "miou_nonempty", "fg_rate", "cues_kept"):
            assert 0 <= r[key] <= 1, (cond, key)
        assert r["num_frames"] == 20 and r["pref_rate"] is None  # no SynthAVS truth here
        drop = (normal["miou"] - r["miou"]) / normal["miou"] if cond != "normal" else 0.0
        assert r["delta_m"] == drop
        row = next(line for line in out.splitlines() if line.startswith(f"{cond} "))
        assert f"{100 * r['miou']:6.2f} {100 * r['fscore']:6.2f}" in row
    # the same weights, data, threshold and batches as the run's validation: the same numbers
    val = next(r for r in read_log(run) if r["kind"] == "val")
    assert (normal["miou"], normal["fscore"]) == (val["miou"], val["fscore"])
    assert out.splitlines()[-1] == f"written: {out_json}"
    # without --out the JSON goes beside the checkpoint
    code, out, err = run_cli(["eval", str(best), str(tree), "--audio", "normal", "--device", "cpu"])
    assert code == 0, err
    default = best.with_suffix(".eval-v2-test.json")
    assert json.loads(default.read_text())["conditions"]["normal"]["miou"] == val["miou"]


def test_predict_writes_one_mask_per_second_an_overlay_and_a_summary(tree, train_run, tmp_path):
    best = train_run[0] / "checkpoints" / "best.safetensors"
    clip = list_clips(tree, ["v2"], ["test"])[0]
    frames = read_frames(clip.clip_dir / "frames")
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=1, audio=load_audio(clip.audio_path))
    cues = [["man"], [], ["dog", "car"]] + [["piano"]] * 7
    (tmp_path / "cues.json").write_text(json.dumps(cues))
    out_dir = tmp_path / "out"
    argv = ["predict", str(video), "--checkpoint", str(best), "--cues", str(tmp_path / "cues.json")]
    code, out, err = run_cli([*argv, "--out", str(out_dir), "--device", "cpu"])
    assert code == 0, err
    names = sorted(p.name for p in (out_dir / "masks").iterdir())
    assert names == sorted(f"{t}.png" for t in range(10))
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["seconds"] == 10 and [s["second"] for s in summary["per_second"]] == list(range(10))
    assert [s["cues"] for s in summary["per_second"]] == cues
    for t, second in enumerate(summary["per_second"]):
        mask = np.asarray(Image.open(out_dir / "masks" / f"{t}.png"))
        assert mask.shape == frames.shape[1:3] and set(np.unique(mask)) <= {0, 255}
        assert second["sounding_area"] == (mask == 255).mean()  # both: sounding pixels / pixels
        assert set(second["cues_kept"]) <= set(second["cues"])
        line = out.splitlines()[t]
        assert line.split()[0] == f"{t}s" and f"{100 * second['sounding_area']:5.1f}%" in line
    with av.open(str(out_dir / "overlay.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        assert c.streams.video[0].frames == 10


def test_ablate_trains_evaluates_resumes_and_refuses_stale_rows(tree, tmp_path):
    out = tmp_path / "ablate"
    rows = ["teso", "no-text"]

    def ablate(*extra: str, steps: str = "1", audio: str = "mute") -> tuple[int, str, str]:
        over = fast_overrides(tree, **{"train.max_steps": steps})
        argv = ["ablate", "synth", *over, *extra, "--rows", ",".join(rows), "--audio", audio]
        return run_cli([*argv, "--out", str(out), "--device", "cpu", "--no-progress"])

    def state() -> dict:
        """What retraining or re-evaluating a row would change."""
        return {
            row: (
                (out / row / "checkpoints" / "last.safetensors").stat().st_mtime_ns,
                (out / row / "log.jsonl").read_text(),
                (out / row / "eval-test.json").read_text(),
            )
            for row in rows
        }

    code, stdout, err = ablate()
    assert code == 0, err
    table = json.loads((out / "table.json").read_text())
    assert list(table) == rows
    md = (out / "table.md").read_text().splitlines()
    assert len(md) == 2 + len(rows) + 2 and md[-1] == f"Machine: {machine_line(table['teso']['environment'])}"
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == table and report["dataset"] == dataset_identity(tree)
    assert report["environment"]["cpu"] == cpu_record()
    for row, label, paper in (("teso", "TeSO", "66.02"), ("no-text", "(−) text", "62.28")):
        res = table[row]
        assert res == json.loads((out / row / "eval-test.json").read_text())
        assert [r["step"] for r in read_log(out / row) if r["kind"] == "train"] == [1]
        c = res["conditions"]
        assert list(c) == ["normal", "mute"] and all(0 <= c[k]["miou"] <= 1 for k in c)
        cells = " | ".join(f"{100 * c[k]['miou']:.2f} | {100 * c[k]['fscore']:.2f}" for k in c)
        assert f"| {label} | {cells} | {100 * c['mute']['delta_m']:.1f}% | {paper} |" in md
        model, _ = load_checkpoint(out / row / "checkpoints" / "last.safetensors")
        assert model.config.ablation.text == (row == "teso")
        assert res["row_config"]["experiment"]["model"].get("ablation", {}) == (
            {} if row == "teso" else {"text": False}
        )
    assert table["no-text"]["conditions"]["normal"]["cues_kept"] is None  # no text, no cues
    # The audio-only prompt keeps every latent: no frame decodes as the visual-only model.
    assert all(c["unprompted"] == 0.0 for c in table["no-text"]["conditions"].values())

    # the same command again: every row is finished, nothing is retrained or re-evaluated
    before = state()
    assert ablate()[0] == 0
    assert state() == before and json.loads((out / "table.json").read_text()) == table

    # other audio conditions: re-evaluated, not retrained
    assert ablate(audio="normal")[0] == 0
    for row in rows:
        res = json.loads((out / row / "eval-test.json").read_text())
        assert list(res["conditions"]) == ["normal"]
        assert res["conditions"]["normal"] == table[row]["conditions"]["normal"]
        assert state()[row][:2] == before[row][:2]

    # a changed training setting would make every finished row stale: refused, nothing touched
    mid = state()
    code, _, err = ablate("train.lr=0.5")
    assert code == 1 and "trained with another config" in err and "train.lr" in err
    assert state() == mid

    # a longer budget (a key a run may resume with): the rows continue training and are re-evaluated
    assert ablate(steps="2")[0] == 0
    table2 = json.loads((out / "table.json").read_text())
    for row in rows:
        assert [r["step"] for r in read_log(out / row) if r["kind"] == "train"] == [1, 2]
        assert load_checkpoint(out / row / "checkpoints" / "last.safetensors")[1]["step"] == 2
        assert table2[row]["row_config"]["experiment"]["train"]["max_steps"] == 2
        assert table2[row] == json.loads((out / row / "eval-test.json").read_text())
    # ... and a smaller one cannot be honoured by weights that have already trained further
    code, _, err = ablate(steps="1")
    assert code == 1 and "already trained 2 steps" in err
