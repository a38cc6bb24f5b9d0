"""``teso fingerprint``: the numerics fingerprint of this machine and software.

A tiny ``teso demo`` (10 SynthAVS clips at 64 px, a few pre-training and training steps, every model
and audio condition, the cue features, predict) run on the pinned path
(:mod:`teso.utils.numerics`), reduced to hashes of what each stage produced: the dataset's bytes, the
two foundations' tensors, the cue features, every trained model's tensors and the report's tables.
Two machines whose fingerprints agree give the demo's numbers bit for bit; where they disagree, the
first differing stage names the culprit. The goldens committed in
``teso/synthavs/goldens/fingerprint.json`` are checked by the test suite (``tests/test_golden.py``) on
whatever machine CI lands on. Every stage runs on the CPU (``DemoPlan.device``), GPU or not, and
in a fresh folder: a resumed demo would hand back what an earlier run (other software) made.

Hashes are over tensors (names, dtypes, shapes, bytes), never over file bytes: safetensors writes
its metadata in an arbitrary order, so the same tensors give other files run to run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from teso.errors import TesoError
from teso.synthavs.demo import DemoPlan

PLAN = DemoPlan(
    clips=10,  # v1m: train 7, val 1, test 2 — every stage runs, in about 15 s on 2 cores
    image_size=64,
    pretrain_visual_steps=3,
    pretrain_audio_steps=3,
    steps=3,
    batch_size=2,
    seeds=(0,),
    threads=2,  # fixed, whatever the core count: the demo's own default
    device="cpu",  # the pinned path is a CPU path
)
STAGES = ("dataset", "visual_foundation", "audio_foundation", "cue_features", "models", "tables")
TEXT_ENCODER = "minilm"  # the demo's text features


def _tensors_hash(path: Path) -> str:
    from safetensors.torch import load_file

    from teso.model.checkpoint import tensors_sha256

    return tensors_sha256(load_file(str(path)))


def _features_hash(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TesoError(f"{folder}: no cue feature files (the demo's cue stage did not write any)")
    h = hashlib.sha256(b"teso-cue-features v1\n")
    for path in files:
        h.update(f"{path.name}\0{_tensors_hash(path)}\n".encode())
    return h.hexdigest()


def fingerprint(out: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """Run the tiny pinned demo into ``out`` (resumable) and return ``{"values", "plan",
    "environment"}``; ``values`` maps each stage of :data:`STAGES` to its hash (``models``: one per
    trained model)."""
    from teso.cues.store import CueStore
    from teso.data.identity import dataset_identity
    from teso.model.foundation_sources import AUDIO_FILE, VISUAL_DIR, weights_sha256
    from teso.synthavs.demo import TRAIN_CUES, run_demo
    from teso.utils.environment import environment_record

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TesoError(
            f"--out {out}: not empty; a fingerprint runs in a new folder (remove it or choose another)"
        )
    report = run_demo(out, plan=PLAN, progress=progress)
    root = out / "synthavs"
    found = Path(report["foundations"]["dir"])
    features = CueStore(root, TRAIN_CUES).features_dir(TEXT_ENCODER) / "clips"
    values = {
        "dataset": dataset_identity(root)["sha256"],
        "visual_foundation": weights_sha256("visual", found / VISUAL_DIR),
        "audio_foundation": weights_sha256("audio", found / AUDIO_FILE),
        "cue_features": _features_hash(features),
        "models": {
            f"{name}-seed{seed}": _tensors_hash(Path(run["checkpoint"]))
            for name, by_seed in sorted(report["runs"].items())
            for seed, run in sorted(by_seed.items())
        },
        "tables": hashlib.sha256(
            json.dumps({"table3": report["table3"], "table4": report["table4"]}, sort_keys=True).encode()
        ).hexdigest(),
    }
    return {"values": values, "plan": asdict(PLAN), "environment": environment_record()}


def version_key(env: dict[str, Any]) -> str:
    """The goldens' key: the versions that change the bits of a fingerprint on the pinned path."""
    pk = env["packages"]
    return f"torch={pk['torch']} transformers={pk['transformers']}"


def compare(values: dict[str, Any], golden: dict[str, Any]) -> list[str]:
    """The stages (in pipeline order) whose hash differs from ``golden``; empty when all agree."""
    return [stage for stage in STAGES if values.get(stage) != golden.get(stage)]


def read_goldens(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TesoError(f"{path}: cannot read the golden fingerprints ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("goldens"), dict):
        raise TesoError(f"{path}: expected a JSON object with a 'goldens' object keyed by versions")
    return data


def check(result: dict[str, Any], goldens: dict[str, Any]) -> tuple[str, list[str] | None]:
    """``(key, differing stages)`` of ``result`` against the goldens; stages is None when no golden
    exists for this software (another torch or transformers release)."""
    key = version_key(result["environment"])
    golden = goldens["goldens"].get(key)
    if golden is None:
        return key, None
    return key, compare(result["values"], golden["values"])


def explain(differing: list[str], result: dict[str, Any], golden: dict[str, Any]) -> str:
    """One line: where a fingerprint departs from its golden, and both machines and package sets."""
    made, here = golden["made_on"], result["environment"]
    other = {
        k: (made["packages"].get(k), v) for k, v in here["packages"].items() if made["packages"].get(k) != v
    }
    return (
        f"differs at {', '.join(differing)} (the first is where it starts); golden made on "
        f"{made['cpu']['vendor']} {made['cpu']['model']} ({made['cpu'].get('family_model_stepping')}), "
        f"this machine {here['cpu']['vendor']} {here['cpu']['model']} "
        f"({here['cpu'].get('family_model_stepping')}); packages that differ (golden, here): "
        f"{other or 'none'}"
    )
