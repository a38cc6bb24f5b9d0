"""bench/gpu_paper.py: refuses to run without CUDA, and its CPU smoke path (tiny variant) gives sane JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from teso.engine.config import load_experiment
from teso.model import get_variant

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_paper.py"


@pytest.fixture(scope="module")
def gpu_paper():
    spec = importlib.util.spec_from_file_location("gpu_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_cuda(monkeypatch):
    # Both tests describe a machine without a GPU, whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_refuses_to_run_without_cuda(gpu_paper, no_cuda, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert gpu_paper.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "needs a CUDA GPU" in captured.err
    assert not out.exists()
    # --tiny alone does not open the CPU path either
    assert gpu_paper.main(["--tiny"]) == 2


def test_measures_the_paper_shape(gpu_paper):
    exp = load_experiment("ms3", [])
    assert gpu_paper.CLIPS == exp.train.batch_size == 4  # the paper states no batch size
    assert gpu_paper.FRAMES == 5
    cfg = get_variant("swin-base-ade", image_size=384)
    assert (cfg.text.num_cues, cfg.text.dim, cfg.visual.num_queries) == (4, 1024, 100)


def test_cpu_smoke_run_of_the_tiny_variant_writes_sane_json(gpu_paper, no_cuda, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--allow-cpu", "--tiny", "--steps", "2", "--warmup", "1", "--repeats", "1", "--out", str(out)]
    assert gpu_paper.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| measure" in printed and "listen test, 4 conditions x 2 clips" in printed
    r = json.loads(out.read_text())
    assert (r["variant"], r["image_size"], r["clips"], r["frames"], r["num_cues"]) == ("tiny", 64, 2, 2, 4)
    assert r["amp"] == "off (fp32)" and r["device"].startswith("CPU")
    assert 0 < r["trainable_params_m"] <= r["params_m"]
    tr = r["train"]
    assert tr["steps"] == 2 and tr["warmup_steps"] == 1
    assert math.isfinite(tr["steps_per_s"]) and tr["steps_per_s"] > 0
    assert tr["frames_per_s"] == pytest.approx(4 * tr["steps_per_s"], rel=1e-12)  # 2 clips x 2 frames
    assert math.isfinite(tr["first_loss"]) and tr["first_loss"] > 0 and math.isfinite(tr["last_loss"])
    assert tr["peak_allocated_gib"] is None and tr["peak_reserved_gib"] is None  # no GPU to measure
    inf = r["inference"]
    assert inf["frames_per_s"] > 0 and inf["frames_per_s_with_masks"] > 0 and inf["mask_size"] == [224, 224]
    li = r["listen"]
    assert li["conditions"] == ["normal", "mute", "wgn10", "wgn40"] and li["clips"] == 2
    assert li["reuse_ratio"] == li["recompute_s"] / li["reuse_s"]
    assert li["encode_s_per_clip"] > 0 and li["decode_s_per_condition"] > 0
    # Exact: on the CPU with one thread (tests/conftest.py) the cached and the recomputed visual
    # features are the same bits, so are the maps of every clip and condition.
    assert li["max_abs_diff"] == 0.0
    assert r["seconds"] > 0
