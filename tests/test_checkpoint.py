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


def _rewrite(path, out, tensors=None, **meta_changes):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    meta.update(meta_changes)
    save_file(tensors if tensors is not None else load_file(str(path)), str(out), metadata=meta)
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
