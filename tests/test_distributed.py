"""The training command under torchrun: 2 CPU processes, gloo backend, rank-0 checkpoints and logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from teso.model import load_checkpoint
from tests.engine_fixtures import fast_overrides, write_tree_with_features


def test_torchrun_two_processes_gloo(tmp_path):
    root = write_tree_with_features(tmp_path / "avs")
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "teso.cli.main", "train", "synth", *fast_overrides(root), "--out", str(run),
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    # 2 train clips, batch 1 per rank, 2 ranks: one step per epoch, logged once (rank 0 only)
    assert [r["step"] for r in train] == [1, 2]
    val = [r for r in log if r["kind"] == "val"]
    # evaluation is sharded in whole batches of 4 clips (the reference F needs them): rank 0 holds
    # both clips here, rank 1 none, and the gathered result covers both (2 x 10 frames)
    assert len(val) == 2 and all(r["num_frames"] == 20 for r in val)
    model, extra = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert extra["step"] == 2 and model.config.visual.image_size == 64
