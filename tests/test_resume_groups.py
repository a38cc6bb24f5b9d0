"""Resuming a run whose optimiser was built with another parameter grouping is a clear error."""

from __future__ import annotations

import pytest

import teso.engine.trainer as trainer_module
from teso.engine.config import load_experiment
from teso.engine.trainer import Trainer
from teso.errors import TesoError
from tests.engine_fixtures import fast_overrides, write_tree_with_features


def test_resume_refuses_a_state_saved_with_another_grouping(tmp_path, monkeypatch):
    tree = write_tree_with_features(tmp_path / "avs")
    run = tmp_path / "run"
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "1"}))
    real = trainer_module.parameter_groups

    def one_group(model, **kw):
        # The grouping of an older teso: every trainable parameter in a single group.
        groups = real(model, **kw)
        merged = {**groups[0], "params": [p for g in groups for p in g["params"]]}
        return [merged]

    monkeypatch.setattr(trainer_module, "parameter_groups", one_group)
    assert Trainer(exp, run, progress=False).fit().steps == 1
    monkeypatch.setattr(trainer_module, "parameter_groups", real)
    assert len(real(_model(exp), lr=1e-3, lr_visual_adapters=1e-4, weight_decay=0.05)) > 1
    more = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    groups = r"last\.train\.pt holds 1 optimiser group\(s\), this teso builds \d+"
    with pytest.raises(TesoError, match=groups):
        Trainer(more, run, resume=True, progress=False).fit()


def test_resume_refuses_the_same_number_of_groups_of_other_sizes(tmp_path, monkeypatch):
    """Same group count, one parameter moved between groups: one clear line, not torch's bare
    ValueError from ``load_state_dict``."""
    tree = write_tree_with_features(tmp_path / "avs")
    run = tmp_path / "run"
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "1"}))
    real = trainer_module.parameter_groups

    def moved(model, **kw):
        groups = real(model, **kw)
        first, last = groups[0], groups[-1]
        first = {**first, "params": first["params"] + last["params"][:1]}
        last = {**last, "params": last["params"][1:]}
        return [first, *groups[1:-1], last]

    monkeypatch.setattr(trainer_module, "parameter_groups", moved)
    assert Trainer(exp, run, progress=False).fit().steps == 1
    monkeypatch.setattr(trainer_module, "parameter_groups", real)
    more = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "2"}))
    with pytest.raises(TesoError, match=r"parameters per group \[\d+, .*\] vs \[\d+, .*\]"):
        Trainer(more, run, resume=True, progress=False).fit()


def _model(exp):
    from teso.engine.trainer import model_config_for
    from teso.model.build import build_teso

    return build_teso(model_config_for(exp))
