"""A small checkpoint finds its frozen foundations wherever they went (teso.model.foundation_sources):
after the run folder moved, from another working folder, through ``--foundations DIR``, the data
root and the user cache; always by hash, never by name alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from teso.errors import TesoError
from teso.model import build_teso, get_variant, load_checkpoint, save_checkpoint
from teso.model.checkpoint import FoundationMismatchError
from teso.model.foundation_sources import cache_dir, find, register, weights_sha256
from tests.test_checkpoint import _foundation_sources, _inputs


def _sources(folder: Path, config, seed: int) -> tuple[Path, Path]:
    return _foundation_sources(folder, config, seed)


def _small_checkpoint(workdir: Path, monkeypatch) -> tuple[torch.nn.Module, Path]:
    """A run as ``teso demo`` leaves it: foundations under ``run/synthavs/foundations/K`` named by a
    path relative to ``workdir`` (the folder the run was started in), checkpoint under ``run/models``."""
    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    config = get_variant("tiny", image_size=64)
    rel = Path("run/synthavs/foundations/k1")
    _sources(workdir / rel, config, seed=0)
    config.freeze_foundation = True
    config.visual.pretrained, config.audio.weights = str(rel / "visual"), str(rel / "audio.safetensors")
    torch.manual_seed(1)
    model = build_teso(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and (".up." in name or "out_proj" in name):
                p.normal_(std=0.2)
    ckpt = workdir / "run" / "models" / "teso-seed0" / "last.safetensors"
    ckpt.parent.mkdir(parents=True)
    save_checkpoint(model, ckpt)
    return model, ckpt


def _same_outputs(a, b) -> bool:
    with torch.no_grad():
        x, y = a(*_inputs()), b(*_inputs())
    return torch.equal(x.mask_logits, y.mask_logits) and torch.equal(x.class_logits, y.class_logits)


def test_the_checkpoint_records_each_foundations_weights_hash(tmp_path, monkeypatch):
    _, ckpt = _small_checkpoint(tmp_path, monkeypatch)
    with safe_open(str(ckpt), framework="pt") as f:
        frozen = json.loads(f.metadata()["frozen"])
    found = tmp_path / "run/synthavs/foundations/k1"
    assert frozen["visual"]["weights_sha256"] == weights_sha256("visual", found / "visual")
    assert frozen["audio"]["weights_sha256"] == weights_sha256("audio", found / "audio.safetensors")
    # A hash of the tensors, not of the file: the same weights written again (safetensors orders its
    # header metadata anew at every write) keep it.
    from teso.model.audio_encoder import TinyAudioCNN, load_cnn_weights, save_cnn_weights

    config = get_variant("tiny", image_size=64)
    cnn = TinyAudioCNN(list(config.audio.cnn_channels), config.audio.dim)
    load_cnn_weights(cnn, found / "audio.safetensors")
    save_cnn_weights(cnn, tmp_path / "again.safetensors")
    assert weights_sha256("audio", tmp_path / "again.safetensors") == frozen["audio"]["weights_sha256"]


def test_loads_from_another_folder_and_after_the_run_folder_moved(tmp_path, monkeypatch):
    model, ckpt = _small_checkpoint(tmp_path / "ws", monkeypatch)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the recorded relative path means nothing here
    loaded, _ = load_checkpoint(ckpt)
    assert _same_outputs(model, loaded)
    assert Path(loaded.config.visual.pretrained).is_absolute()
    moved = tmp_path / "archive" / "2026" / "demo-copy"
    moved.parent.mkdir(parents=True)
    shutil.move(str(tmp_path / "ws" / "run"), str(moved))
    loaded, _ = load_checkpoint(moved / "models" / "teso-seed0" / "last.safetensors")
    assert _same_outputs(model, loaded)
    assert loaded.config.visual.pretrained == str(moved / "synthavs/foundations/k1/visual")


def test_a_lone_checkpoint_needs_foundations_dir_and_is_found_by_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TESO_CACHE", str(tmp_path / "empty-cache"))
    model, ckpt = _small_checkpoint(tmp_path / "ws", monkeypatch)
    lone = tmp_path / "colleague" / "teso.safetensors"
    lone.parent.mkdir()
    shutil.copy(ckpt, lone)
    copy = tmp_path / "shared" / "foundations"
    shutil.copytree(tmp_path / "ws/run/synthavs/foundations", copy)
    shutil.rmtree(tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "colleague")
    with pytest.raises(FoundationMismatchError) as err:
        load_checkpoint(lone)
    msg = str(err.value)
    assert "teso.safetensors: its frozen visual foundation run/synthavs/foundations/k1/visual" in msg
    assert "was not found" in msg and "--foundations DIR" in msg and len(msg.splitlines()) == 1
    # A folder of several foundations: the one with the recorded hash is taken, not the first.
    _sources(copy / "a-decoy", get_variant("tiny", image_size=64), seed=7)
    for folder in (copy, copy / "k1", copy.parent):
        loaded, _ = load_checkpoint(lone, foundations=[folder])
        assert _same_outputs(model, loaded)
        assert loaded.config.visual.pretrained == str(copy / "k1" / "visual")
    # Only other weights to be found: the path-less search refuses rather than loading them.
    shutil.rmtree(copy / "k1")
    with pytest.raises(FoundationMismatchError, match="was not found"):
        load_checkpoint(lone, foundations=[copy])


def test_the_data_root_and_the_user_cache_are_searched(tmp_path, monkeypatch):
    model, ckpt = _small_checkpoint(tmp_path / "ws", monkeypatch)
    lone = tmp_path / "lone.safetensors"
    shutil.copy(ckpt, lone)
    data = tmp_path / "data"
    shutil.copytree(tmp_path / "ws/run/synthavs", data)
    monkeypatch.setenv("TESO_CACHE", str(tmp_path / "cache"))
    found = tmp_path / "ws/run/synthavs/foundations/k1"
    cached = (register("visual", found / "visual"), register("audio", found / "audio.safetensors"))
    digest = weights_sha256("visual", found / "visual")
    assert cached[0] == cache_dir() / "foundations" / digest / "visual"
    assert register("visual", found / "visual") == cached[0]  # once
    shutil.rmtree(tmp_path / "ws")
    monkeypatch.chdir(tmp_path)
    loaded, _ = load_checkpoint(lone, data_root=data)
    assert loaded.config.visual.pretrained == str(data / "foundations/k1/visual")
    shutil.rmtree(data)
    loaded, _ = load_checkpoint(lone)
    assert loaded.config.visual.pretrained == str(cached[0]) and _same_outputs(model, loaded)
    assert loaded.config.audio.weights == str(cached[1])


def test_other_bytes_at_the_recorded_path_are_refused_naming_both_hashes(tmp_path, monkeypatch):
    _, ckpt = _small_checkpoint(tmp_path, monkeypatch)
    found = tmp_path / "run/synthavs/foundations/k1"
    shutil.rmtree(found / "visual")
    _sources(tmp_path / "other", get_variant("tiny", image_size=64), seed=9)
    shutil.copytree(tmp_path / "other" / "visual", found / "visual")
    with pytest.raises(FoundationMismatchError, match="holds other weights") as err:
        load_checkpoint(ckpt)
    assert str(err.value).count("sha256") == 2


def test_an_older_checkpoint_tries_every_candidate_against_its_tensor_hash(tmp_path, monkeypatch):
    # Written before weights_sha256 existed: found by path only, and a decoy that comes first in the
    # search order is passed over because its frozen tensors hash otherwise.
    model, ckpt = _small_checkpoint(tmp_path / "ws", monkeypatch)
    meta = {}
    from safetensors.torch import load_file, save_file

    from teso.model.checkpoint import HASH_KEY, META_HASH_KEY, content_sha256, metadata_sha256

    with safe_open(str(ckpt), framework="pt") as f:
        meta = dict(f.metadata())
    frozen = json.loads(meta["frozen"])
    for record in frozen.values():
        record.pop("weights_sha256")
    meta["frozen"] = json.dumps(frozen)
    meta[META_HASH_KEY] = metadata_sha256(meta)
    tensors = load_file(str(ckpt))
    meta[HASH_KEY] = content_sha256(meta, tensors)
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    shelf = tmp_path / "shelf"
    _sources(shelf / "a-decoy", get_variant("tiny", image_size=64), seed=7)
    shutil.copytree(tmp_path / "ws/run/synthavs/foundations/k1", shelf / "k1")
    shutil.rmtree(tmp_path / "ws")
    got = find("visual", "run/synthavs/foundations/k1/visual", None, search=[shelf])
    assert got == [shelf / "a-decoy" / "visual", shelf / "k1" / "visual"]
    loaded, _ = load_checkpoint(old, foundations=[shelf])
    assert loaded.config.visual.pretrained == str(shelf / "k1" / "visual") and _same_outputs(model, loaded)
    # Re-rooting needs two path parts at least: a bare "visual" somewhere above proves nothing.
    assert find("visual", "visual", None, checkpoint=shelf / "k1" / "x.safetensors") == []


def test_pretrain_registers_what_it_builds(tmp_path, monkeypatch):
    from teso.synthavs.foundations import pretrain_foundations
    from teso.synthavs.generator import generate

    monkeypatch.setenv("TESO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "synth"
    generate(root, clips=6, seed=0, subsets=("v1m",), progress=False)
    rec = pretrain_foundations(root, steps_visual=1, steps_audio=1, image_size=64, workers=0, progress=False)
    found = Path(rec["dir"])
    sha = weights_sha256("visual", found / "visual")
    assert rec["registered"]["visual"] == str(tmp_path / "cache" / "foundations" / sha / "visual")
    registered = Path(rec["registered"]["audio"])
    assert registered.read_bytes() == (found / "audio.safetensors").read_bytes()


def test_register_refuses_what_is_not_a_foundation(tmp_path):
    with pytest.raises(TesoError, match="no such file"):
        register("visual", tmp_path / "nothing")
    with pytest.raises(ValueError, match="kind"):
        register("text", tmp_path)
