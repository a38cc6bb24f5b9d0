"""The training command under torchrun: 2 CPU processes, gloo backend, rank-0 checkpoints and logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import torch
from safetensors.torch import load_file

from teso.model import build_teso, load_checkpoint
from tests.engine_fixtures import fast_overrides, write_tree_with_features

# Each rank runs `teso train` through teso.cli.main, keeping the model the trainer built (the
# trainer saves on rank 0 only), then writes that rank's final weights and whether the command
# ended the process group.
WORKER = """
import json, os, sys
import torch.distributed as dist
from safetensors.torch import save_file
import teso.engine.trainer as trainer
from teso.cli.main import main

built = []
build = trainer.build_teso
trainer.build_teso = lambda cfg: built.append(build(cfg)) or built[-1]
rank = os.environ["RANK"]
code = main(sys.argv[2:])
save_file({k: v.detach().contiguous() for k, v in built[0].state_dict().items()},
          os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"code": code, "group_alive": dist.is_initialized()}, f)
sys.exit(code)
"""


def test_torchrun_two_processes_gloo(tmp_path):
    root = write_tree_with_features(tmp_path / "avs")
    run = tmp_path / "run"
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    # Rendezvous on loopback, port 0: the agent's TCP store binds a port the kernel picks and the
    # workers reuse that store (no fixed 29400/29500, no "find a free port, close it, hope" race);
    # --local-addr and GLOO_SOCKET_IFNAME keep the hostname (which may not resolve) out of it.
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", uuid.uuid4().hex,
        "--local-addr", "127.0.0.1", "--max-restarts", "0",
        str(worker), str(tmp_path),
        "train", "synth", *fast_overrides(root), "--out", str(run), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
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
    # DDP: both ranks apply the same all-reduced gradients, so their weights stay bit-identical
    # (gloo's all-reduce hands every rank the same bits), and rank 0's checkpoint holds them.
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    ckpt = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert r0.keys() == r1.keys() == ckpt.keys()
    assert all(torch.equal(r0[k], r1[k]) and torch.equal(r0[k], ckpt[k]) for k in r0)
    # ... and they did train: tensors whose initial value is the same for every seed (zero biases,
    # unit norms) moved, so the equality above is not that of untouched weights
    init = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        init.append(build_teso(model.config).state_dict())
    constant = [k for k in r0 if torch.equal(init[0][k], init[1][k])]
    assert len(constant) > 50
    assert sum(not torch.equal(init[0][k], r0[k]) for k in constant) > len(constant) // 2
    # the command ended the process group on every rank
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {"code": 0, "group_alive": False}
