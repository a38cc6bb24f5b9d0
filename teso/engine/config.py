"""Experiment configs: YAML files in ``configs/`` plus ``key=value`` overrides.

An experiment is data + model + training + evaluation settings. The model part is a variant name
from ``teso.model`` plus overrides of its config; the resolved model config is saved inside every
checkpoint, so evaluation and prediction never need flags that must match by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from teso.errors import TesoError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # shipped inside the package


@dataclass
class DataConfig:
    root: str = "runs/synthavs"  # dataset root in the released layout (AVSBench or SynthAVS)
    subset: str = "v1m"  # v1s (S4), v1m (MS3) or v2 (AVSS)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    cues: str = "default"  # name of the cue store under ROOT/cues/ whose text features are used
    text_encoder: str = "minilm"  # which cached text features to load (imagebind, minilm, tiny)
    num_workers: int = 0  # DataLoader workers; 0 keeps the 2-core demo machine responsive


@dataclass
class TrainConfig:
    epochs: int = 60  # paper: "roughly 60"
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit); for quick runs
    max_minutes: float = 0.0  # stop (after a checkpoint) once this much wall time has passed; 0 = none
    batch_size: int = 4  # clips per step (x frames per clip images through the foundation)
    lr_visual_adapters: float = 1e-4  # paper: 1e-4 for the visual adapters
    lr: float = 1e-3  # paper: 1e-3 for everything else that trains
    weight_decay: float = 0.05  # Mask2Former's AdamW weight decay
    grad_clip: float = 0.01  # Mask2Former clips the full-model gradient norm at 0.01
    warmup_steps: int = 0  # linear warm-up; the paper states none
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    seed: int = 0  # python, numpy and torch RNGs; the data order derives from it
    log_every: int = 10  # steps between JSONL/TensorBoard scalars
    eval_every: int = 1  # epochs between validation passes (best checkpoint by val mIoU)
    checkpoint_every_steps: int = 0  # extra mid-epoch checkpoints for long epochs (0 = per epoch only)
    # A teso checkpoint (same model config) whose weights start this run, with a fresh optimiser and
    # schedule: fine-tuning, e.g. AVS-V3's few-shot step. None = the model as built (foundations + fresh
    # new modules). Not --resume, which continues a run's own optimiser, schedule and data order.
    init_from: str | None = None


@dataclass
class EvalConfig:
    batch_clips: int = 4  # AVSBench's reference evaluates in batches of 4 clips (F depends on it)
    threshold: float = 0.5  # AVSBench: sigmoid > 0.5 (the official TeSO code uses 0.4)
    audio: tuple[str, ...] = ("normal", "mute", "wgn10", "wgn40")  # audio conditions of SPEC §7


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"variant": "tiny"})  # variant + overrides
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> ExperimentConfig:
        exp = _build(cls, d, source)
        exp.validate(source)
        return exp

    def validate(self, source: str = "config") -> None:
        """Values that would only fail deep inside a run fail here, naming the key."""
        positive = {
            "train.epochs": self.train.epochs,
            "train.batch_size": self.train.batch_size,
            "train.log_every": self.train.log_every,
            "train.eval_every": self.train.eval_every,
            "eval.batch_clips": self.eval.batch_clips,
        }
        for key, value in positive.items():
            if value < 1:
                raise TesoError(f"{source}: {key} must be at least 1, got {value}")
        for key, value in {
            "train.max_steps": self.train.max_steps,
            "train.max_minutes": self.train.max_minutes,
        }.items():
            if value < 0:
                raise TesoError(f"{source}: {key} must be 0 (no limit) or positive, got {value}")
        if self.train.init_from is not None and (
            not isinstance(self.train.init_from, str) or not self.train.init_from.strip()
        ):
            raise TesoError(
                f"{source}: train.init_from must be a checkpoint path, got {self.train.init_from!r}"
            )
        if not 0 < self.eval.threshold < 1:
            raise TesoError(f"{source}: eval.threshold must lie in (0, 1), got {self.eval.threshold}")
        if self.data.subset not in ("v1s", "v1m", "v2"):
            raise TesoError(f"{source}: data.subset must be v1s, v1m or v2, got {self.data.subset!r}")


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise TesoError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise TesoError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else tuple(str(value).split(","))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise TesoError(f"{where}.{name}: expected true/false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TesoError(f"{where}.{name}: expected a number, got {value!r}")
            if isinstance(default, int) and value != int(value):
                raise TesoError(f"{where}.{name}: expected a whole number, got {value!r}")
            kwargs[name] = type(default)(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TesoError(f"{where}.{name}: expected a string, got {value!r}")
            kwargs[name] = value
        else:
            kwargs[name] = value
    return cls(**kwargs)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=5", "model.ablation.use_text=false"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TesoError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TesoError(f"override {item!r}: {part} is set twice")
        node[parts[-1]] = value
    return out


def deep_update(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a config shipped in ``configs/`` (``s4``, ``ms3``, ``synth`` ...)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise TesoError(f"config file {p} does not exist")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
    raise TesoError(f"unknown config {name_or_path!r}: expected a .yaml path or one of {known}")


def load_experiment(name_or_path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TesoError(f"config file {path}: not valid YAML ({err})") from err
    raw = deep_update(raw, parse_overrides(overrides or []))
    return ExperimentConfig.from_dict(raw, source=str(path))
