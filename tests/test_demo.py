"""`teso demo` end to end on a tiny SynthAVS: pre-train -> freeze -> cues -> train (fixed steps, two
seeds) -> evaluate -> Table 3/4 -> verdict; the same seed twice gives the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from teso.data.identity import dataset_identity
from teso.synthavs.demo import DemoPlan, beyond_spread, mean_sd, run_demo
from teso.utils.environment import machine_line
from teso.utils.numerics import PINNED_ENV

TINY = DemoPlan(
    clips=10,  # v1m: train 7, val 1, test 2
    image_size=64,
    pretrain_visual_steps=2,
    pretrain_audio_steps=2,
    steps=3,
    batch_size=2,
    seeds=(0, 1),
    threads=1,  # the suite's own thread count (conftest): run_demo sets it for the process
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "a"
    return out, run_demo(out, plan=TINY, progress=False)


def test_every_compared_run_trains_the_same_steps_on_frozen_foundations(demo):
    out, report = demo
    runs = report["runs"]
    assert sorted(runs["teso"]) == sorted(runs["av_baseline"]) == [0, 1] and list(runs["visual_only"]) == [0]
    for by_seed in runs.values():
        for r in by_seed.values():
            assert r["steps"] == 3 and r["examples"] == 3 * 2 * 5
    from teso.model import read_checkpoint_metadata

    cfg, extra = read_checkpoint_metadata(runs["teso"][0]["checkpoint"])
    assert cfg.freeze_foundation and cfg.visual.pretrained.endswith("visual")
    assert extra["experiment"]["data"]["cues"] == "reasoned"
    assert extra["foundations"]  # the foundation's record (scores, steps, dataset hash) rides along
    md = (out / "report.md").read_text()
    assert "Verdict:" in md and "Table 3" in md and "± " in md
    # The heat-map figure (the pre-threshold probability) beside the thresholded overlays, same layout.
    from PIL import Image

    heat, masks = Image.open(report["figures"]["heatmaps"]), Image.open(report["figures"]["overlays"])
    assert heat.size == masks.size and heat.tobytes() != masks.tobytes()
    assert "report_heatmaps.png" in md


def test_tables_hold_every_condition_source_and_a_verdict(demo):
    out, report = demo
    t4 = report["table4"]
    for name in ("teso", "av_baseline", "visual_only"):
        assert set(t4[name]) == {"normal", "mute", "wgn10", "wgn40"}
    assert t4["teso"]["normal"]["miou"]["n"] == 2 and t4["visual_only"]["normal"]["miou"]["sd"] is None
    assert set(report["table3"]) == {"reasoned", "nouns", "oracle"}
    assert report["table3"]["oracle"]["rec1"] == 1.0  # the truth recognises itself
    assert 0.0 <= report["mute_floor_miou"] <= 1.0
    assert report["verdict"].startswith("Verdict: TeSO with reasoned cues")
    n = report["numerics"]
    assert n["threads"] == 1 and set(n["env"]) == set(PINNED_ENV)
    md = (out / "report.md").read_text()
    assert ("CPU numerics pinned" if n["pinned"] else "not pinned") in md
    # What produced the numbers: software, CPU, numerics, and the dataset's bytes.
    env = report["environment"]
    assert env["packages"]["torch"] == torch.__version__ and env["numerics"] == n
    assert set(env["packages"]) >= {"torch", "transformers", "numpy", "scipy", "av", "safetensors"}
    assert report["dataset"] == dataset_identity(out / "synthavs")
    assert report["dataset"]["method"] == "content" and report["dataset"]["sha256"][:16] in md
    assert f"Machine: {machine_line(env)}" in md


def test_the_same_seed_twice_gives_identical_numbers(demo, tmp_path):
    _, first = demo
    again = run_demo(tmp_path / "b", plan=TINY, progress=False)
    assert json.dumps(again["table4"], sort_keys=True) == json.dumps(first["table4"], sort_keys=True)
    assert json.dumps(again["table3"], sort_keys=True) == json.dumps(first["table3"], sort_keys=True)


def test_spread_rule():
    a, b = mean_sd([0.2, 0.3, 0.25]), mean_sd([0.5, 0.6, 0.55])
    assert a["mean"] == pytest.approx(0.25) and a["sd"] == pytest.approx(0.05)
    assert beyond_spread(a, b) is True
    assert beyond_spread(a, mean_sd([0.3, 0.35, 0.32])) is False
    assert beyond_spread(mean_sd([0.2]), b) is None  # one seed: no spread, no call


def test_ablate_cue_rows_train_on_their_cue_store():
    from teso.engine.ablate import row_label, row_overrides
    from teso.errors import TesoError

    assert row_overrides("cues-oracle") == ["data.cues=oracle"]
    assert row_overrides("no-text") == ["model.ablation.text=false"]
    assert row_label("cues-nouns") == ("TeSO-n (vocabulary-mapped nouns)", 63.31)
    with pytest.raises(TesoError, match="cues-llm"):
        row_overrides("cues-gpt")


def test_eval_and_predict_work_from_another_folder_after_the_run_folder_moved(demo, tmp_path, monkeypatch):
    import shutil

    from teso.cli.main import main
    from teso.utils.numerics import pin_numerics

    out, report = demo
    pin_numerics(TINY.threads)  # the state the demo evaluated in: the same numbers are expected
    ckpt_rel = Path(report["runs"]["teso"][0]["checkpoint"]).relative_to(out)
    summary_rel = Path(report["predict"]["summary"]).relative_to(out)
    moved = tmp_path / "archive" / "demo-copy"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    try:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        # An empty user cache: found from the checkpoint's own place, not from what pretrain registered.
        monkeypatch.setenv("TESO_CACHE", str(tmp_path / "empty-cache"))
        ckpt = moved / ckpt_rel
        res_path = tmp_path / "e.json"
        argv = ["eval", str(ckpt), str(moved / "synthavs"), "--audio", "mute", "--out", str(res_path)]
        assert main([*argv, "--no-progress"]) == 0  # the demo's own device choice (auto)
        res = json.loads(res_path.read_text())
        before = json.loads((ckpt.parents[1] / "eval-test.json").read_text())
        for cond in ("normal", "mute"):
            assert res["conditions"][cond]["miou"] == before["conditions"][cond]["miou"]
        uid = summary_rel.parent.name
        video, cues = moved / "predict" / f"{uid}.mp4", moved / "predict" / f"{uid}.cues.json"
        argv = [
            "predict",
            str(video),
            "--checkpoint",
            str(ckpt),
            "--cues",
            str(cues),
            "--out",
            str(tmp_path / "p"),
        ]
        assert main([*argv, "--device", "cpu"]) == 0
        got = json.loads((tmp_path / "p" / "summary.json").read_text())["per_second"]
        want = json.loads((moved / summary_rel).read_text())["per_second"]
        assert [s["sounding_area"] for s in got] == [s["sounding_area"] for s in want]
        # A checkpoint sent alone, its foundations in another folder: --foundations names it.
        lone = tmp_path / "lone.safetensors"
        shutil.copy(ckpt, lone)
        shelf = tmp_path / "shelf"
        shutil.move(str(moved / "synthavs" / "foundations"), str(shelf))
        argv = ["eval", str(lone), str(moved / "synthavs"), "--audio", "normal", "--out", str(res_path)]
        assert main([*argv, "--no-progress"]) == 1  # nowhere to be found without it
        assert main([*argv, "--foundations", str(shelf), "--no-progress"]) == 0
        again = json.loads(res_path.read_text())["conditions"]["normal"]["miou"]
        assert again == res["conditions"]["normal"]["miou"]
        assert main([*argv, "--foundations", str(tmp_path / "typo")]) == 1
    finally:
        if (tmp_path / "shelf").exists():
            shutil.move(str(tmp_path / "shelf"), str(moved / "synthavs" / "foundations"))
        shutil.move(str(moved), str(out))


def test_a_study_plan_reads_its_split_and_trains_the_visual_only_model_on_each_seed(tmp_path):
    """The study's dress rehearsal reads val everywhere (evaluation, floor, Table 3 REC, charts) and
    its report says so; the visual-only model trains on ``visual_only_seeds`` seeds."""
    from dataclasses import replace

    from teso.data.avsbench import list_clips
    from teso.synthavs.demo import empty_floor

    plan = replace(TINY, name="study", split="val", visual_only_seeds=2)
    out = tmp_path / "study"
    report = run_demo(out, plan=plan, progress=False)
    assert sorted(report["runs"]["visual_only"]) == [0, 1]
    assert report["table4"]["visual_only"]["normal"]["miou"]["n"] == 2
    teso_dir = Path(report["runs"]["teso"][0]["dir"])
    evaluated = json.loads((teso_dir / "eval-val.json").read_text())
    assert evaluated["split"] == "val" and not (teso_dir / "eval-test.json").exists()
    assert list_clips(out / "synthavs", ["v1m"], ["val"])  # the split the tiny tree has a clip in
    assert report["mute_floor_miou"] == empty_floor(out / "synthavs", "val")
    ratio = report["p3"]["visual_av_miou_ratio"]
    av = report["table4"]["av_baseline"]["normal"]["miou"]["mean"]
    vis = report["table4"]["visual_only"]["normal"]["miou"]["mean"]
    assert ratio == (round(vis / av, 2) if av else None)
    md = (out / "report.md").read_text()
    assert md.startswith("# teso study report") and "v1m val split" in md and "study protocol" in md
    assert "SEG: val mIoU" in md and "one val video" in md


def test_run_study_refuses_the_train_split_and_run_demo_a_plan_it_cannot_report(tmp_path):
    from dataclasses import replace

    from teso.errors import TesoError
    from teso.synthavs.study import STUDY, run_study

    with pytest.raises(TesoError, match="--split"):
        run_study(tmp_path, split="train")
    for bad, match in (
        (replace(TINY, split="train"), "plan split"),
        (replace(TINY, name="paper"), "plan name"),
        (replace(TINY, visual_only_seeds=3), "visual_only_seeds"),
        (replace(TINY, visual_only_seeds=0), "visual_only_seeds"),  # the report needs one
    ):
        with pytest.raises(TesoError, match=match):
            run_demo(tmp_path, plan=bad, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was generated
    assert STUDY.name == "study" and STUDY.version == 2 and len(STUDY.seeds) >= 3
