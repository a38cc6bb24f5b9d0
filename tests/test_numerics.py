"""Pinned CPU numerics (teso.utils.numerics): the pinning takes effect when it runs before torch is
imported, it equals pinning at launch bit for bit, and a user's own setting is kept."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from teso.utils.numerics import PINNED_ENV, numerics_record, pin_numerics

x86_only = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="the AVX2 pinning is for x86-64"
)

# Kernels from each library the pinning reaches: ATen (softmax), MKL (matmul), oneDNN (conv, GELU).
_PROBE = """
import hashlib, json, torch
torch.manual_seed(0)
x = torch.randn(16, 129, 96)
conv = torch.nn.Conv2d(3, 8, 3)
outs = [x.softmax(-1), x @ torch.randn(96, 50), conv(torch.randn(2, 3, 32, 32)), torch.nn.functional.gelu(x)]
hashes = [hashlib.sha256(o.detach().numpy().tobytes()).hexdigest() for o in outs]
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "hashes": hashes}))
"""


def _run(code: str, env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@x86_only
def test_pinning_before_torch_is_imported_takes_effect():
    record = json.loads(
        _run(
            "import json; from teso.utils.numerics import pin_numerics; print(json.dumps(pin_numerics(2)))",
            {},
        )
    )
    assert record["pinned"] and record["aten_cpu_capability"] == "AVX2" and record["threads"] == 2
    assert record["env"] == PINNED_ENV


@x86_only
def test_pinning_in_process_equals_pinning_at_launch_bit_for_bit():
    in_process = json.loads(
        _run("from teso.utils.numerics import pin_numerics; pin_numerics(1)\n" + _PROBE, {})
    )
    at_launch = json.loads(_run("import torch; torch.set_num_threads(1)\n" + _PROBE, dict(PINNED_ENV)))
    assert in_process == at_launch and in_process["capability"] == "AVX2"
    unpinned = json.loads(_run("import torch; torch.set_num_threads(1)\n" + _PROBE, {}))
    if unpinned["capability"] != "AVX2":  # an AVX-512 host: the pinning must change these kernels' bits
        assert unpinned["hashes"] != in_process["hashes"]


_CLI = """
import json, sys
from teso.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
from teso.utils.numerics import numerics_record
print(json.dumps(numerics_record()))
"""


def test_building_the_cli_parser_does_not_import_torch():
    # Otherwise nothing could be pinned before torch loads.
    code = "import sys\nfrom teso.cli.main import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    assert _run(code, {}) == "False"


@x86_only
@pytest.mark.parametrize(
    ("argv", "pinned"),
    [
        (["demo", "--help"], True),
        (["ablate", "synth", "--reproducible", "--help"], True),
        (["ablate", "synth", "--help"], False),
    ],
)
def test_the_cli_pins_for_demo_and_reproducible_ablate_only(argv, pinned):
    record = json.loads(_run(_CLI.format(argv=argv), {}))
    assert record["pinned"] is pinned
    assert (record["env"] == PINNED_ENV) is pinned


@x86_only
def test_a_users_own_setting_is_kept_and_reported_as_not_pinned():
    code = "import json; from teso.utils.numerics import pin_numerics; print(json.dumps(pin_numerics(1)))"
    record = json.loads(_run(code, {"MKL_CBWR": "COMPATIBLE"}))
    assert record["env"]["MKL_CBWR"] == "COMPATIBLE" and not record["pinned"]


def test_after_torch_is_imported_the_record_says_what_is_in_effect():
    import torch  # noqa: F401  (pytest has imported it already; the point is that it is loaded)

    before = dict(os.environ)
    record = pin_numerics(None)
    assert {k: os.environ.get(k) for k in PINNED_ENV} == {k: before.get(k) for k in PINNED_ENV}
    assert record == numerics_record()
    assert record["pinned"] == (record["aten_cpu_capability"] == "AVX2" and record["env"] == PINNED_ENV)
    with pytest.raises(ValueError, match="threads"):
        pin_numerics(0)
