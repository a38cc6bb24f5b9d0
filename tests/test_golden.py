"""The golden test: a tiny pinned ``teso demo`` gives the committed bits on this machine
(``teso fingerprint`` against ``teso/synthavs/goldens/fingerprint.json``), and still does when MKL is
made to believe the CPU is not Intel's.

The goldens were recorded on one machine (its CPU is in the file, ``made_on``); CI lands on Intel or
AMD, so the first test is the cross-vendor check. Goldens are keyed by the torch and transformers
releases (random initialisation and kernels change with them); ``make test`` pins those, and
``TESO_REQUIRE_GOLDEN=1`` (set by the Makefile) turns a missing golden into a failure instead of a
skip."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from teso.cli.fingerprint import GOLDENS
from teso.synthavs.fingerprint import STAGES, check, explain, read_goldens
from teso.utils import vendor_emulation
from teso.utils.numerics import PINNED_ENV

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="the pinned path is for x86-64"
)


def _fingerprint(tmp_path: Path, preload: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != "OMP_NUM_THREADS"}
    if preload:
        env = vendor_emulation.preload_env(preload, env)
    out = tmp_path / "fp.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "teso.cli.main",
            "fingerprint",
            "--out",
            str(tmp_path / "run"),
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _golden_or_skip(result: dict) -> tuple[str, list[str], dict]:
    goldens = read_goldens(GOLDENS)
    key, differing = check(result, goldens)
    if differing is None:
        msg = f"no golden fingerprint for {key} in {GOLDENS} (have: {', '.join(goldens['goldens'])})"
        if os.environ.get("TESO_REQUIRE_GOLDEN") == "1":
            pytest.fail(msg + "; record one with `teso fingerprint --record` on the pinned software")
        pytest.skip(msg)
    return key, differing, goldens["goldens"][key]


def test_this_machine_reproduces_the_golden_fingerprint(tmp_path):
    result = _fingerprint(tmp_path)
    assert result["environment"]["numerics"]["pinned"]
    assert set(result["values"]) == set(STAGES) and len(result["values"]["models"]) == 3
    _, differing, golden = _golden_or_skip(result)
    assert differing == [], explain(differing, result, golden)


def test_the_golden_holds_when_mkl_believes_the_cpu_is_not_intel(tmp_path):
    why = vendor_emulation.available()
    if why:
        pytest.skip(f"non-Intel MKL emulation: {why}")
    lib = vendor_emulation.build_library(tmp_path / "lib")
    # The preload must reach MKL (its AVX2 branch then reports AUTO), or this test would prove nothing.
    env = vendor_emulation.preload_env(lib, {**os.environ, "MKL_CBWR": "AVX2", "MKL_VERBOSE": "1"})
    probe = "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    log = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
    assert "CNR:AUTO" in log, log[-2000:]
    result = _fingerprint(tmp_path, preload=str(lib))
    _, differing, golden = _golden_or_skip(result)
    assert differing == [], explain(differing, result, golden)


def test_goldens_name_the_machine_that_made_them():
    for key, golden in read_goldens(GOLDENS)["goldens"].items():
        made = golden["made_on"]
        assert made["cpu"]["vendor"] and made["cpu"]["model"] and made["numerics"]["pinned"], key
        assert key == f"torch={made['packages']['torch']} transformers={made['packages']['transformers']}"
        assert set(golden["values"]) == set(STAGES)


def test_check_names_the_first_differing_stage_and_what_differs_between_the_machines():
    from teso.synthavs.fingerprint import version_key

    golden = read_goldens(GOLDENS)["goldens"]
    key, entry = next(iter(golden.items()))
    made = entry["made_on"]
    env = {
        "cpu": {"vendor": "AuthenticAMD", "model": "AMD EPYC", "family_model_stepping": "25/17/1"},
        "packages": {**made["packages"], "numpy": "9.9"},
        "numerics": made["numerics"],
    }
    values = json.loads(json.dumps(entry["values"]))
    result = {"values": values, "environment": env}
    assert version_key(env) == key and check(result, {"goldens": golden}) == (key, [])
    values["models"]["teso-seed0"] = "0" * 64
    values["audio_foundation"] = "1" * 64
    assert check(result, {"goldens": golden})[1] == ["audio_foundation", "models"]  # pipeline order
    line = explain(["audio_foundation", "models"], result, entry)
    assert line.startswith("differs at audio_foundation, models (the first is where it starts)")
    assert (
        "AuthenticAMD AMD EPYC (25/17/1)" in line
        and f"'numpy': ('{made['packages']['numpy']}', '9.9')" in line
    )
    other = {**env, "packages": {**env["packages"], "transformers": "0.0"}}
    assert check({"values": values, "environment": other}, {"goldens": golden})[1] is None
