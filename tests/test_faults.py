"""Checkpoints under faults: disk full or a crash at any byte of a checkpoint write, damaged files.

Faults are injected where every checkpoint byte and rename passes (``teso.utils.files.write_fd`` /
``rename``): mounting a small tmpfs would need root. A crash is simulated in-process by copying the
checkpoint directory at the chosen byte (what a SIGKILL leaves: every ``os.write`` so far is in the
page cache) and, once, by a real SIGKILL of a training process stopped inside its save.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import teso.engine.trainer as trainer_module
import teso.utils.files as files
from teso.cli.main import main
from teso.engine.config import load_experiment
from teso.engine.trainer import Trainer
from teso.errors import TesoError
from teso.model import build_teso, get_variant, load_checkpoint
from teso.model.checkpoint import (
    CheckpointIntegrityError,
    CheckpointWriteError,
    commit_journal_path,
    load_checkpoint_into,
    load_training_state,
    read_checkpoint_metadata,
    recover_checkpoint_pair,
    save_checkpoint_pair,
    training_state_path,
)
from tests.engine_fixtures import fast_overrides, write_tree_with_features


class _Killed(BaseException):
    """Stands for the process dying: not an Exception, so no ``except Exception`` handles it."""


def _inject(monkeypatch, at_byte: int | None = None, at_rename: int | None = None, action=None):
    """Call ``action()`` (which raises) once ``at_byte`` bytes have been written through
    ``files.write_fd``, after writing exactly those, or instead of the ``at_rename``-th rename
    (1-based). Returns the byte count at which each file began (one ``Sink`` per file written)."""
    real_write, real_rename, real_sink = files.write_fd, files.rename, files.Sink.__init__
    starts: list[int] = []
    count = {"bytes": 0, "renames": 0}

    def sink_init(self, fd):
        starts.append(count["bytes"])
        real_sink(self, fd)

    def write_fd(fd, data):
        view = memoryview(data).cast("B")
        start = count["bytes"]
        if at_byte is not None and start + len(view) > at_byte:
            real_write(fd, view[: at_byte - start])
            count["bytes"] = at_byte
            action()
        real_write(fd, view)
        count["bytes"] += len(view)

    def rename(src, dst):
        count["renames"] += 1
        if at_rename is not None and count["renames"] == at_rename:
            action()
        real_rename(src, dst)

    monkeypatch.setattr(files, "write_fd", write_fd)
    monkeypatch.setattr(files, "rename", rename)
    monkeypatch.setattr(files.Sink, "__init__", sink_init)
    return SimpleNamespace(starts=starts, count=count)


def _disk_full():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ----- one checkpoint unit, every boundary ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_teso(get_variant("tiny", image_size=64)).eval()


def _save(model, ckpt: Path, step: int) -> None:
    with torch.no_grad():
        model.text_proj.net[0].bias.fill_(float(step))  # the weights say which save they are
    save_checkpoint_pair(
        model, ckpt, {"step": step}, {"step": step}, copies=[ckpt.with_name("best.safetensors")]
    )


def _assert_complete_set(model, ckpt: Path, step: int) -> None:
    """last.* and best.* verify, belong together and are those of save ``step``; nothing is left over."""
    d = ckpt.parent
    assert sorted(p.name for p in d.iterdir()) == ["best.safetensors", "last.safetensors", "last.train.pt"]
    for path in (ckpt, d / "best.safetensors"):
        extra = load_checkpoint_into(model, path)  # verifies the content hash
        assert extra["step"] == step and torch.all(model.text_proj.net[0].bias == step)
    assert load_training_state(ckpt)["step"] == step  # verifies its hash and its tie to last.*


def _unit_events(model, tmp_path, monkeypatch) -> tuple[list[int], int]:
    """Byte offsets worth stopping at in a save of the unit (of each file, the journal included)
    and the number of renames; leaves the step-1 set in ``tmp_path / "probe-1"``."""
    ckpt = tmp_path / "probe" / "last.safetensors"
    _save(model, ckpt, 1)
    shutil.copytree(ckpt.parent, tmp_path / "probe-1")
    with monkeypatch.context() as m:
        log = _inject(m)
        _save(model, ckpt, 2)
    bounds = [*log.starts, log.count["bytes"]]
    files_at = list(zip(bounds[:-1], bounds[1:]))  # (first byte, last byte + 1) per file
    # weights, training state, best, journal
    assert len(files_at) == 4 and all(b > a for a, b in files_at), files_at
    # first byte, inside a header (safetensors: its 8-byte length, then JSON), middle, last byte
    offsets = sorted({o for a, b in files_at for o in (a, a + 9, (a + b) // 2, b - 1)})
    return offsets, 3  # three renames: last.safetensors, last.train.pt, best.safetensors


def test_a_crash_at_any_byte_leaves_the_previous_or_the_new_complete_set(tiny_model, tmp_path, monkeypatch):
    """Stopped at each file's first byte, inside its header, in its middle and at its last byte (the
    weights, the training state, best.safetensors, the journal) and at each rename."""
    offsets, renames = _unit_events(tiny_model, tmp_path, monkeypatch)
    cases = [("byte", o) for o in offsets] + [("rename", r) for r in range(1, renames + 1)]
    for i, (kind, at) in enumerate(cases):
        ckpt = tmp_path / f"run{i}" / "last.safetensors"
        shutil.copytree(tmp_path / "probe-1", ckpt.parent)  # the step-1 set
        snapshot = tmp_path / f"crash{i}"

        def crash(src=ckpt.parent, dst=snapshot):
            shutil.copytree(src, dst)  # what the disk holds when the process dies here
            raise _Killed

        with monkeypatch.context() as m, pytest.raises(_Killed):
            _inject(m, **{f"at_{kind}": at}, action=crash)
            _save(tiny_model, ckpt, 2)
        left = {p.name for p in snapshot.iterdir()}
        # the crash happened inside the write: its partial files are there
        assert left - {"best.safetensors", "last.safetensors", "last.train.pt"}, left
        outcome = recover_checkpoint_pair(
            snapshot / "last.safetensors", copies=[snapshot / "best.safetensors"]
        )
        # before the journal is in place nothing was replaced; after, the renames are replayed
        committed = kind == "rename"
        assert outcome == ("completed" if committed else "discarded"), (kind, at, left)
        _assert_complete_set(tiny_model, snapshot / "last.safetensors", 2 if committed else 1)


def test_disk_full_at_any_byte_keeps_the_previous_set_and_says_why(tiny_model, tmp_path, monkeypatch):
    offsets, _ = _unit_events(tiny_model, tmp_path, monkeypatch)
    for i, at in enumerate(offsets):
        ckpt = tmp_path / f"run{i}" / "last.safetensors"
        shutil.copytree(tmp_path / "probe-1", ckpt.parent)  # the step-1 set
        with monkeypatch.context() as m, pytest.raises(CheckpointWriteError) as err:
            _inject(m, at_byte=at, action=_disk_full)
            _save(tiny_model, ckpt, 2)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and "no space left on device" in msg
        assert "the write needs" in msg and "free in" in msg and "last.safetensors" in msg
        assert "previous last.safetensors (step 1) is kept" in msg
        _assert_complete_set(tiny_model, ckpt, 1)  # and no partial file is left
    # a later save (space freed) goes through
    _save(tiny_model, ckpt, 2)
    _assert_complete_set(tiny_model, ckpt, 2)


def test_too_little_free_space_is_refused_before_writing(tiny_model, tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "last.safetensors"
    _save(tiny_model, ckpt, 1)
    usage = shutil.disk_usage(ckpt.parent)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage._replace(free=123_456))
    log = _inject(monkeypatch)
    with pytest.raises(CheckpointWriteError, match=r"needs \d+\.\d MB \(last\.safetensors .*123\.5 kB free"):
        _save(tiny_model, ckpt, 2)
    assert log.starts == [] and log.count["bytes"] == 0  # nothing written
    monkeypatch.undo()
    _assert_complete_set(tiny_model, ckpt, 1)


# ----- damaged files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree_with_features(tmp_path_factory.mktemp("avs"))


def _exp(tree: Path, **extra: str):
    return load_experiment("synth", fast_overrides(tree, **extra))


@pytest.fixture(scope="module")
def uninterrupted(tree, tmp_path_factory) -> Path:
    """4 steps (2 epochs x 2 clips), never interrupted: what every resumed run must end with."""
    run = tmp_path_factory.mktemp("a")
    assert Trainer(_exp(tree), run, device="cpu", progress=False).fit().steps == 4
    return run / "checkpoints" / "last.safetensors"


def _same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    # Exact: training on CPU with one thread is a pure function of the state a resume restores
    # (tests/test_engine.py::test_resume_gives_the_weights_of_an_uninterrupted_run).
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []


def test_damaged_checkpoints_are_one_line_errors(tree, uninterrupted, tmp_path, capsys):
    good = uninterrupted.read_bytes()
    size = len(good)
    header = 8 + int.from_bytes(good[:8], "little")
    cases = {
        "zeroed-near-end": lambda b: b[: size - 4100] + bytes(4000) + b[size - 100 :],
        "data-bit": lambda b: b[: header + 5000] + bytes([b[header + 5000] ^ 0x10]) + b[header + 5001 :],
        # a digit of the config ("image_size":64 -> 65): still valid JSON, another model
        "config-digit": lambda b: b.replace(b'\\"image_size\\": 64', b'\\"image_size\\": 65', 1),
        "truncated": lambda b: b[: size - 1000],
    }
    for name, damage in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(damage(good))
        assert bad.read_bytes() != good, name
        with pytest.raises(CheckpointIntegrityError if name != "truncated" else TesoError):
            load_checkpoint(bad)
        assert main(["eval", str(bad), str(tree), "--device", "cpu", "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err, err
        expected = "not a readable safetensors checkpoint" if name == "truncated" else "corrupt checkpoint"
        assert expected in err, err
    # readers of the metadata alone (predict, ablate) check its own hash: no other config is read
    with pytest.raises(
        CheckpointIntegrityError, match="config-digit.safetensors: corrupt checkpoint: metadata"
    ):
        read_checkpoint_metadata(tmp_path / "config-digit.safetensors")
    state = training_state_path(uninterrupted).read_bytes()
    run = tmp_path / "run"
    shutil.copytree(uninterrupted.parent.parent, run)
    (run / "checkpoints" / "last.train.pt").write_bytes(state[:-500] + bytes(400) + state[-100:])
    with pytest.raises(CheckpointIntegrityError, match=r"last\.train\.pt: corrupt training state"):
        Trainer(_exp(tree), run, resume=True, device="cpu", progress=False).fit()


# ----- training runs: disk full, SIGKILL ------------------------------------------------------------
def _arm_on_save(monkeypatch, save: int, **inject) -> None:
    """Inject the fault into the ``save``-th checkpoint write of the trainer (1-based)."""
    real = trainer_module.save_checkpoint_pair
    calls = []

    def save_pair(*args, **kwargs):
        calls.append(1)
        if len(calls) == save:
            with monkeypatch.context() as m:
                _inject(m, **inject)
                return real(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint_pair", save_pair)


def test_disk_full_during_training_keeps_the_last_pair_and_resume_matches(
    tree, uninterrupted, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "b"
    argv = ["train", "synth", *fast_overrides(tree), "--out", str(run), "--device", "cpu", "--no-progress"]
    # the second save (end of epoch 2) runs out of space inside last.train.pt.new: last.safetensors.new
    # is complete by then — the state that used to leave a new last.safetensors beside an old state
    weights_size = (uninterrupted).stat().st_size
    _arm_on_save(monkeypatch, 2, at_byte=weights_size + 300, action=_disk_full)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{run / 'checkpoints' / 'last.train.pt'}: no space left on device" in err
    assert "previous last.safetensors (step 2) is kept" in err
    monkeypatch.undo()
    ckpt = run / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "last.safetensors", "last.train.pt"]
    assert load_training_state(ckpt / "last.safetensors")["step"] == 2
    assert main([*argv, "--resume"]) == 0
    assert load_checkpoint(ckpt / "last.safetensors")[1]["step"] == 4
    _same_weights(uninterrupted, ckpt / "last.safetensors")


_WORKER = r"""
import json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)  # as tests/conftest.py: the bits must match the in-process runs
import teso.engine.trainer as trainer
import teso.utils.files as files
from teso.cli.main import main

mode, marker, argv = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
saves = [0]
real_pair = trainer.save_checkpoint_pair


def save_pair(*args, **kwargs):
    saves[0] += 1
    return real_pair(*args, **kwargs)


def stop():
    marker.write_text("inside the save")  # the parent kills this process once it sees the file
    while True:
        time.sleep(3600)


real_write, real_rename = files.write_fd, files.rename
written, renamed = [0], [0]


def write_fd(fd, data):
    view = memoryview(data).cast("B")
    if saves[0] == 2 and mode == "write":
        if written[0] + len(view) > 5000:  # byte 5000 of the second save: inside last.safetensors.new
            real_write(fd, view[: 5000 - written[0]])
            stop()
        written[0] += len(view)
    real_write(fd, view)


def rename(src, dst):
    if saves[0] == 2 and mode == "rename":
        renamed[0] += 1
        if renamed[0] == 2:  # committed, last.safetensors replaced, last.train.pt not yet
            stop()
    real_rename(src, dst)


trainer.save_checkpoint_pair, files.write_fd, files.rename = save_pair, write_fd, rename
sys.exit(main(argv))
"""


def test_sigkill_inside_a_checkpoint_write_then_resume(tree, uninterrupted, tmp_path, mode="rename"):
    """Killed between the renames of a committed save — where the old code left a new
    last.safetensors beside the old last.train.pt (and --resume refused). ``mode="write"`` (killed
    inside last.safetensors.new) passes too; the in-process sweep above covers every byte of it."""
    run, marker, worker = tmp_path / "c", tmp_path / "inside", tmp_path / "worker.py"
    worker.write_text(_WORKER)
    argv = ["train", "synth", *fast_overrides(tree), "--out", str(run), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    stderr = open(tmp_path / "stderr", "wb")  # noqa: SIM115 (a file, not a pipe: a full pipe would block)
    proc = subprocess.Popen(
        [sys.executable, str(worker), mode, str(marker), json.dumps(argv)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 300  # generous: only a broken worker comes near it
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker never reached its second save"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert proc.returncode == -signal.SIGKILL
    ckpt = run / "checkpoints"
    left = {p.name for p in ckpt.iterdir()}
    if mode == "write":  # killed mid-file: the partial weights are there, the journal is not
        assert "last.safetensors.new" in left and "last.commit.json" not in left
    else:  # killed between the renames: the journal is there, last.train.pt is still step 2's
        assert commit_journal_path(ckpt / "last.safetensors").name in left and "last.train.pt.new" in left
    assert Trainer(_exp(tree), run, resume=True, device="cpu", progress=False).fit().steps == 4
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "last.safetensors", "last.train.pt"]
    _same_weights(uninterrupted, ckpt / "last.safetensors")
    assert load_training_state(ckpt / "last.safetensors")["step"] == 4
