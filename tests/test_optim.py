"""The optimiser's parameter groups (teso.engine.optim): paper §4.1 learning rates and Mask2Former's
weight decay, checked parameter by parameter on a tiny model, frozen (paper) and unfrozen (synth)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from teso.engine.config import TrainConfig
from teso.engine.optim import parameter_groups
from teso.engine.trainer import Trainer
from teso.model import build_teso, get_variant

LR, LR_VIS, WD = 1e-3, 1e-4, 0.05


def _model(frozen: bool):
    config = get_variant("tiny", image_size=64)
    config.freeze_foundation = frozen
    config.allow_random_frozen = True  # grouping only: the weights' values do not matter
    torch.manual_seed(0)
    return build_teso(config)


def _by_name(groups) -> dict[str, tuple[str, float, float]]:
    """parameter name -> (group, lr, weight decay); fails on a parameter listed twice."""
    out: dict[str, tuple[str, float, float]] = {}
    for g in groups:
        assert len(g["names"]) == len(g["params"])
        for name in g["names"]:
            assert name not in out, f"{name} in {out[name][0]} and {g['name']}"
            out[name] = (g["name"], g["lr"], g["weight_decay"])
    return out


def _one(names, predicate) -> str:
    found = [n for n in names if predicate(n)]
    assert found, "no parameter matches"
    return found[0]


@pytest.mark.parametrize("frozen", [True, False])
def test_every_trainable_parameter_is_in_exactly_one_group(frozen):
    model = _model(frozen)
    groups = parameter_groups(model, lr=LR, lr_visual_adapters=LR_VIS, weight_decay=WD)
    got = _by_name(groups)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == trainable
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)
    named = dict(model.named_parameters())
    for g in groups:  # names and tensors agree
        assert all(named[n] is p for n, p in zip(g["names"], g["params"]))
        assert g["params"], g["name"]


def test_paper_rates_and_decay_with_a_frozen_foundation():
    model = _model(frozen=True)
    got = _by_name(parameter_groups(model, lr=LR, lr_visual_adapters=LR_VIS, weight_decay=WD))
    names = list(got)
    expected = {
        # the visual-encoder (Swin) adapters only: 1e-4
        "foundation.adapters.swin_0.down.weight": (LR_VIS, WD),
        "foundation.adapters.swin_0.up.bias": (LR_VIS, 0.0),
        # the other adapters: 1e-3 like every other learnable parameter
        "foundation.adapters.pixel_decoder_0.down.weight": (LR, WD),
        "foundation.adapters.pixel_decoder_1.up.bias": (LR, 0.0),
        "foundation.adapters.transformer_decoder_0.up.weight": (LR, WD),
        "foundation.m2f.class_predictor.weight": (LR, WD),
        "text_proj.net.0.weight": (LR, WD),
        "sedam.out_norm.weight": (LR, 0.0),  # LayerNorm
        "sedam.out_norm.bias": (LR, 0.0),
        "pmqs.layers.0.attn.in_proj_weight": (LR, WD),
        "pmqs.layers.0.attn.in_proj_bias": (LR, 0.0),
        "audio_encoder.net.features.0.weight": (LR, WD),  # the tiny cnn without weights trains
    }
    for name, (lr, wd) in expected.items():
        assert got[name][1:] == (lr, wd), (name, got[name])
    assert not any(n.startswith("foundation.m2f.model.") for n in names)  # frozen: in no group
    assert {g for g, _, _ in got.values()} == {
        "swin_adapters",
        "swin_adapters_no_decay",
        "other",
        "other_no_decay",
    }
    assert len([n for n in names if n.startswith("foundation.adapters.swin_")]) == 5 * 4


def test_unfrozen_foundation_trains_at_the_visual_rate_without_decay_on_norms_and_embeddings():
    model = _model(frozen=False)
    got = _by_name(parameter_groups(model, lr=LR, lr_visual_adapters=3e-4, weight_decay=WD))
    names = list(got)
    swin = "foundation.m2f.model.pixel_level_module.encoder."
    tm = "foundation.m2f.model.transformer_module."
    cases = {
        # q_proj in transformers 5.23+, attention.self.query in 5.0
        _one(names, lambda n: n.startswith(swin) and n.endswith(("q_proj.weight", "query.weight"))): (
            3e-4,
            WD,
        ),
        _one(names, lambda n: n.startswith(swin) and "layernorm_before.weight" in n): (3e-4, 0.0),
        _one(names, lambda n: n.startswith(swin) and "layernorm_before.bias" in n): (3e-4, 0.0),
        _one(names, lambda n: n.endswith("relative_position_bias_table")): (3e-4, 0.0),
        _one(names, lambda n: n.endswith("level_embed")): (3e-4, 0.0),
        tm + "queries_features.weight": (3e-4, 0.0),  # nn.Embedding
        tm + "queries_embedder.weight": (3e-4, 0.0),
        tm + "level_embed.weight": (3e-4, 0.0),
        _one(names, lambda n: n.startswith(tm + "decoder.layers.0.fc1.weight")): (3e-4, WD),
        "foundation.adapters.swin_0.down.weight": (3e-4, WD),
        "foundation.adapters.pixel_decoder_0.down.weight": (LR, WD),
        "foundation.adapters.transformer_decoder_1.down.weight": (LR, WD),
        "foundation.m2f.class_predictor.bias": (LR, 0.0),
    }
    for name, (lr, wd) in cases.items():
        assert got[name][1:] == (lr, wd), (name, got[name])


def test_the_trainer_builds_adamw_from_these_groups():
    model = _model(frozen=True)
    fake = SimpleNamespace(exp=SimpleNamespace(train=TrainConfig(lr=LR, lr_visual_adapters=LR_VIS)))
    optimizer = Trainer._optimizer(fake, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_group = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert by_group == {
        "swin_adapters": (LR_VIS, 0.05),
        "swin_adapters_no_decay": (LR_VIS, 0.0),
        "other_no_decay": (LR, 0.0),
        "other": (LR, 0.05),
    }
    assert optimizer.param_groups[-1]["name"] == "other"  # the trainer logs the last group's lr
