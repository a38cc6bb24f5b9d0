"""TeSO checkpoints: round trip, single-file format, loud failures on tampering."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from teso.errors import TesoError
from teso.model import (
    FORMAT_VERSION,
    build_teso,
    get_variant,
    load_checkpoint,
    load_training_state,
    read_checkpoint_metadata,
    save_checkpoint,
    save_training_state,
    training_state_path,
)
from teso.model.checkpoint import (
    HASH_KEY,
    META_HASH_KEY,
    CheckpointIntegrityError,
    FoundationMismatchError,
    content_sha256,
    metadata_sha256,
    save_checkpoint_pair,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    config = get_variant("tiny", image_size=64, num_classes=3)
    config.ablation.dynamic_mask = False  # a non-default switch must survive the round trip
    model = build_teso(config).eval()
    with torch.no_grad():  # leave the zero inits so that every part shapes the output
        for name, param in model.named_parameters():
            if ".up." in name or "out_proj" in name:
                param.normal_(std=0.2)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(model, path, extra={"epoch": 7, "miou": 0.5})
    return model, path


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(1, 2, 3, 64, 64, generator=g),
        torch.randn(1, 2, 1, 96, 64, generator=g),
        torch.randn(1, 2, 4, 384, generator=g),
        torch.tensor([[2, 4]]),
    )


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 7, "miou": 0.5}
    assert loaded.config == model.config and loaded.config.num_classes == 3
    assert not loaded.config.ablation.dynamic_mask and not loaded.training
    with torch.no_grad():
        a, b = model(*_inputs()), loaded(*_inputs())
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.class_logits, b.class_logits)
    assert a.class_logits.shape[-1] == 4
    # A single artefact: the format version and the config are in the safetensors metadata.
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format_version"] == str(FORMAT_VERSION)
    assert json.loads(meta["config"])["visual"]["image_size"] == 64
    config, extra = read_checkpoint_metadata(path)
    assert config == model.config and extra["epoch"] == 7


def _rewrite(path, out, tensors=None, resign=True, **meta_changes):
    """A copy of checkpoint ``path`` with other tensors / metadata, written by safetensors' own writer
    (another data order than teso's); ``resign`` recomputes the content hash, as a tool that edits
    checkpoints on purpose would, so that the structural checks behind the hash are reached."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta.update(meta_changes)
    tensors = tensors if tensors is not None else load_file(str(path))
    if resign:
        meta[META_HASH_KEY] = metadata_sha256(meta)
        meta[HASH_KEY] = content_sha256(meta, tensors)
    save_file(tensors, str(out), metadata=meta)
    return out


def test_tampered_checkpoints_fail_loudly(saved, tmp_path):
    _, path = saved
    tensors = load_file(str(path))
    dropped = dict(tensors)
    del dropped["pmqs.layers.0.attn.in_proj_weight"]
    with pytest.raises(TesoError, match=r"missing keys pmqs\.layers\.0\.attn\.in_proj_weight"):
        load_checkpoint(_rewrite(path, tmp_path / "missing.safetensors", dropped))
    added = dict(tensors, **{"sedam.extra": torch.zeros(2)})
    with pytest.raises(TesoError, match=r"unexpected keys sedam\.extra"):
        load_checkpoint(_rewrite(path, tmp_path / "unexpected.safetensors", added))
    reshaped = dict(tensors, **{"text_proj.net.0.weight": torch.zeros(64, 100)})
    with pytest.raises(TesoError, match="wrong shapes"):
        load_checkpoint(_rewrite(path, tmp_path / "shape.safetensors", reshaped))
    with pytest.raises(TesoError, match="format version '99'"):
        load_checkpoint(_rewrite(path, tmp_path / "version.safetensors", format_version="99"))
    with safe_open(str(path), framework="pt") as f:
        bad_config = json.loads(f.metadata()["config"])
    bad_config["pmqs"]["depth"] = 2
    with pytest.raises(TesoError, match="depth"):
        load_checkpoint(_rewrite(path, tmp_path / "config.safetensors", config=json.dumps(bad_config)))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(TesoError, match="not a TeSO checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TesoError, match="garbage.safetensors"):
        load_checkpoint(garbage)
    with pytest.raises(TesoError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    # edited tensors or metadata without a new hash: the hash written at save time no longer fits
    edited = dict(tensors, **{"text_proj.net.0.bias": torch.zeros_like(tensors["text_proj.net.0.bias"])})
    with pytest.raises(CheckpointIntegrityError, match=r"stale\.safetensors: corrupt checkpoint"):
        load_checkpoint(_rewrite(path, tmp_path / "stale.safetensors", edited, resign=False))
    with pytest.raises(CheckpointIntegrityError, match=r"extra\.safetensors: corrupt checkpoint"):
        load_checkpoint(_rewrite(path, tmp_path / "extra.safetensors", resign=False, extra='{"epoch": 8}'))
    # teso's writer and safetensors' (another tensor order) give files whose hash verifies alike
    assert load_checkpoint(_rewrite(path, tmp_path / "resigned.safetensors"))[1]["epoch"] == 7


def test_training_state_lives_beside_the_checkpoint(saved, tmp_path):
    model, _ = saved
    ckpt = tmp_path / "run" / "last.safetensors"
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad][:3], lr=1e-3)
    save_training_state(ckpt, {"optimizer": optim.state_dict(), "step": 12})
    assert training_state_path(ckpt).name == "last.train.pt"
    state = load_training_state(ckpt)
    assert state["step"] == 12 and state["optimizer"]["param_groups"][0]["lr"] == 1e-3
    with pytest.raises(TesoError, match="training state not found"):
        load_training_state(tmp_path / "other.safetensors")
    with pytest.raises(TesoError, match="JSON"):
        save_checkpoint(model, tmp_path / "x.safetensors", extra={"bad": object()})


def test_training_state_is_hashed_and_tied_to_its_weights(saved, tmp_path):
    model, _ = saved
    ckpt = tmp_path / "last.safetensors"
    save_checkpoint_pair(model, ckpt, {"step": 3}, {"step": 3, "w": torch.arange(1000.0)})
    state_file = training_state_path(ckpt)
    assert load_training_state(ckpt)["step"] == 3
    data = bytearray(state_file.read_bytes())
    data[-100] ^= 0x01  # one bit inside the torch.save payload
    state_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match=r"last\.train\.pt: corrupt training state"):
        load_training_state(ckpt)
    state_file.write_bytes(bytes(data[:-7]))
    with pytest.raises(CheckpointIntegrityError, match=r"last\.train\.pt: .* payload bytes"):
        load_training_state(ckpt)
    # a state beside weights it was not written with (say, copied in from another save)
    save_checkpoint_pair(model, ckpt, {"step": 3}, {"step": 3})
    save_checkpoint(model, ckpt, extra={"step": 4})
    with pytest.raises(CheckpointIntegrityError, match="do not belong together"):
        load_training_state(ckpt)
    with pytest.raises(CheckpointIntegrityError, match="not a TeSO training state"):
        state_file.write_bytes(b"garbage" * 10)
        load_training_state(ckpt)


def test_format_version_1_files_still_load_with_a_warning(saved, tmp_path):
    model, path = saved
    old = tmp_path / "v1.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in (HASH_KEY, META_HASH_KEY, "frozen")}
    save_file(load_file(str(path)), str(old), metadata=dict(meta, format_version="1"))
    torch.save({"step": 1}, training_state_path(old))  # a bare torch.save, as version 1 wrote it
    with pytest.warns(UserWarning, match="not verified"):
        loaded, _ = load_checkpoint(old)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.warns(UserWarning, match="not verified"):
        assert load_training_state(old) == {"step": 1}


# ----- small checkpoints: frozen foundations stored by identity ------------------------------------
def _foundation_sources(root, config, seed):
    """A save_pretrained Mask2Former directory and a TinyAudioCNN file, random (seed), for ``config``."""
    from transformers import Mask2FormerForUniversalSegmentation

    from teso.model.audio_encoder import TinyAudioCNN, save_cnn_weights
    from teso.model.foundation import mask2former_config

    torch.manual_seed(seed)
    m2f = Mask2FormerForUniversalSegmentation(mask2former_config(config.visual, config.num_classes))
    m2f.save_pretrained(root / "visual")
    save_cnn_weights(
        TinyAudioCNN(list(config.audio.cnn_channels), config.audio.dim), root / "audio.safetensors"
    )
    return root / "visual", root / "audio.safetensors"


def _frozen_model(root, seed=0):
    config = get_variant("tiny", image_size=64)
    visual, audio = _foundation_sources(root, config, seed)
    config.freeze_foundation = True
    config.visual.pretrained, config.audio.weights = str(visual), str(audio)
    torch.manual_seed(1)
    model = build_teso(config).eval()
    with torch.no_grad():  # trained-looking adapters and heads, so that they shape the output
        for name, param in model.named_parameters():
            if param.requires_grad and (".up." in name or "out_proj" in name):
                param.normal_(std=0.2)
    return model


def test_a_frozen_foundation_is_saved_by_identity_and_reloads_bit_identical(tmp_path):
    model = _frozen_model(tmp_path)
    small, full = tmp_path / "small.safetensors", tmp_path / "full.safetensors"
    save_checkpoint(model, small, extra={"epoch": 1})
    save_checkpoint(model, full, extra={"epoch": 1}, full=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("foundation.m2f.model.") for n in frozen)
    assert any(n.startswith("audio_encoder.net.") for n in frozen)
    keys = set(load_file(str(small)))
    # what trains and every buffer are in it; no frozen tensor is
    assert keys == set(model.state_dict()) - frozen and trainable <= keys and not keys & frozen
    assert set(load_file(str(full))) == set(model.state_dict())
    assert small.stat().st_size < full.stat().st_size / 3
    with safe_open(str(small), framework="pt") as f:
        record = json.loads(f.metadata()["frozen"])
    assert (
        record.keys() == {"visual", "audio"} and record["visual"]["source"] == model.config.visual.pretrained
    )
    for path in (small, full):
        loaded, extra = load_checkpoint(path)
        assert extra == {"epoch": 1}
        with torch.no_grad():
            a, b = model(*_inputs()), loaded(*_inputs())
        # Exact: the same weights (from the file or the foundation's own files) in the same code.
        assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.class_logits, b.class_logits)
        assert {n for n, p in loaded.named_parameters() if not p.requires_grad} == frozen


def test_a_changed_foundation_is_refused_naming_both(tmp_path):
    import shutil

    model = _frozen_model(tmp_path / "a", seed=0)
    small, full = tmp_path / "small.safetensors", tmp_path / "full.safetensors"
    save_checkpoint(model, small)
    save_checkpoint(model, full, full=True)
    visual, audio = model.config.visual.pretrained, model.config.audio.weights
    shutil.rmtree(visual)
    with pytest.raises(TesoError, match=r"small\.safetensors: its frozen visual foundation .* was not found"):
        load_checkpoint(small)
    load_checkpoint(full)  # a full checkpoint needs no foundation files
    _foundation_sources(tmp_path / "a", model.config, seed=5)  # other weights at the same paths
    with pytest.raises(FoundationMismatchError) as err:
        load_checkpoint(small)
    msg = str(err.value)
    assert "small.safetensors" in msg and f"visual.pretrained={visual} holds other weights" in msg
    assert len(msg.splitlines()) == 1 and msg.count("sha256") == 2
    # only the audio file changed: the message names that one
    _foundation_sources(tmp_path / "b", model.config, seed=0)
    shutil.rmtree(visual)
    shutil.copytree(tmp_path / "b" / "visual", visual)
    with pytest.raises(FoundationMismatchError, match=f"audio.weights={audio} holds other weights"):
        load_checkpoint(small)
    shutil.copy(tmp_path / "b" / "audio.safetensors", audio)
    assert load_checkpoint(small)[0].config == model.config


def test_an_unfrozen_model_is_saved_in_full(saved):
    model, path = saved  # tiny: freeze_foundation false, random CNN audio encoder (trains)
    assert all(p.requires_grad for p in model.parameters())
    assert set(load_file(str(path))) == set(model.state_dict())
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["frozen"]) == {}
