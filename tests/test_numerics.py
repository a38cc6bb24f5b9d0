"""Pinned CPU numerics (teso.utils.numerics): the pinning takes effect when it runs before torch is
imported, it equals pinning at launch bit for bit, a user's own setting is kept, the pinned path
reaches no oneDNN primitive and only MKL's vendor-neutral branch, and its bits do not change when MKL
is made to believe the CPU is not Intel's (while the earlier AVX2 pinning's do)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from teso.utils import vendor_emulation
from teso.utils.numerics import EARLIER_AVX2_ENV, PINNED_ENV, SCHEME, numerics_record, pin_numerics

x86_only = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="the AVX2 pinning is for x86-64"
)

# Kernels from each library a training step reaches: ATen (softmax, GELU), MKL (matmul, the
# convolution's GEMM on the pinned path; oneDNN's convolution otherwise), forward and backward.
_PROBE = """
import hashlib, json, torch
torch.manual_seed(0)
x = torch.randn(16, 129, 96)
conv = torch.nn.Conv2d(3, 8, 3)
img = torch.randn(2, 3, 32, 32, requires_grad=True)
y = conv(img)
y.square().sum().backward()
outs = [x.softmax(-1), x @ torch.randn(96, 50), y, img.grad, conv.weight.grad, torch.nn.functional.gelu(x)]
hashes = [hashlib.sha256(o.detach().numpy().tobytes()).hexdigest() for o in outs]
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "hashes": hashes}))
"""
_BACKENDS_OFF = "torch.backends.mkldnn.enabled = False; torch.backends.nnpack.set_flags(False)\n"


def _run(code: str, env: dict[str, str], *, full: bool = False, preload: str | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    env = {**clean, **env}
    if preload:
        env = vendor_emulation.preload_env(preload, env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout if full else done.stdout.strip().splitlines()[-1]


@x86_only
def test_pinning_before_torch_is_imported_takes_effect():
    record = json.loads(
        _run(
            "import json; from teso.utils.numerics import pin_numerics; print(json.dumps(pin_numerics(2)))",
            {},
        )
    )
    assert record["pinned"] and record["aten_cpu_capability"] == "AVX2" and record["threads"] == 2
    assert record["env"] == PINNED_ENV and record["scheme"] == SCHEME
    assert record["onednn"] is False and record["nnpack"] is False


@x86_only
def test_pinning_in_process_equals_pinning_at_launch_bit_for_bit():
    in_process = json.loads(
        _run("from teso.utils.numerics import pin_numerics; pin_numerics(1)\n" + _PROBE, {})
    )
    at_launch = json.loads(
        _run("import torch; torch.set_num_threads(1)\n" + _BACKENDS_OFF + _PROBE, dict(PINNED_ENV))
    )
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
        (["fingerprint", "--help"], True),
        (["eval", "--reproducible", "--help"], True),
        (["eval", "--help"], False),
        (["ablate", "synth", "--reproducible", "--help"], True),
        (["ablate", "synth", "--help"], False),
    ],
)
def test_the_cli_pins_for_demo_fingerprint_and_reproducible_ablate_and_eval_only(argv, pinned):
    record = json.loads(_run(_CLI.format(argv=argv), {}))
    assert record["pinned"] is pinned
    assert (record["env"] == PINNED_ENV) is pinned


@x86_only
def test_a_users_own_setting_is_kept_and_reported_as_not_pinned():
    code = "import json; from teso.utils.numerics import pin_numerics; print(json.dumps(pin_numerics(1)))"
    record = json.loads(_run(code, {"MKL_CBWR": "AVX2"}))
    assert record["env"]["MKL_CBWR"] == "AVX2" and not record["pinned"] and record["scheme"] is None


def test_after_torch_is_imported_the_record_says_what_is_in_effect():
    import torch  # noqa: F401  (pytest has imported it already; the point is that it is loaded)

    before = dict(os.environ)
    record = pin_numerics(None)
    assert {k: os.environ.get(k) for k in PINNED_ENV} == {k: before.get(k) for k in PINNED_ENV}
    assert record == numerics_record()
    assert record["pinned"] == (
        record["aten_cpu_capability"] == "AVX2"
        and record["env"] == PINNED_ENV
        and not record["onednn"]
        and not record["nnpack"]
    )
    with pytest.raises(ValueError, match="threads"):
        pin_numerics(0)


@x86_only
def test_the_pinned_path_reaches_no_onednn_and_only_mkls_vendor_neutral_branch():
    import torch

    if not torch.backends.mkl.is_available():
        pytest.skip("this torch is not built with MKL")
    code = "from teso.utils.numerics import pin_numerics; pin_numerics(1)\n" + _PROBE
    log = _run(code, {"MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}, full=True)
    branches = {line.split("CNR:")[1].split()[0] for line in log.splitlines() if "CNR:" in line}
    assert branches == {"COMPATIBLE"}  # matmul and the convolution's GEMMs, forward and backward
    assert not [line for line in log.splitlines() if line.startswith("onednn_verbose") and ",exec," in line]
    # Unpinned, the same probe runs oneDNN primitives: the check above can see them.
    unpinned = _run("import torch; torch.set_num_threads(1)\n" + _PROBE, {"ONEDNN_VERBOSE": "1"}, full=True)
    assert [line for line in unpinned.splitlines() if line.startswith("onednn_verbose") and ",exec," in line]


@x86_only
def test_mkl_told_the_cpu_is_not_intel_changes_avx2_bits_but_not_the_pinned_ones(tmp_path):
    why = vendor_emulation.available()
    if why:
        pytest.skip(f"non-Intel MKL emulation: {why}")
    lib = str(vendor_emulation.build_library(tmp_path))
    pinned = "from teso.utils.numerics import pin_numerics; pin_numerics(1)\n" + _PROBE
    as_is = json.loads(_run(pinned, {}))
    assert json.loads(_run(pinned, {}, preload=lib)) == as_is
    # The earlier pinning (MKL's AVX2 branch) is honoured on Intel CPUs only: the emulated vendor
    # changes the GEMM's bits (on a CPU that is not Intel's it is already the other branch).
    earlier = EARLIER_AVX2_ENV
    probe = "import torch; torch.set_num_threads(1)\n" + _PROBE
    intel = json.loads(_run(probe, earlier))
    other = json.loads(_run(probe, earlier, preload=lib))
    from teso.utils.environment import cpu_record

    if cpu_record()["vendor"] == "GenuineIntel":
        assert intel["hashes"][1] != other["hashes"][1]  # x @ W: MKL's SGEMM
        # ... because MKL took its AUTO branch: the preload is in effect (the test above has teeth).
        log = _run(probe, {**earlier, "MKL_VERBOSE": "1"}, full=True, preload=lib)
        assert {line.split("CNR:")[1].split()[0] for line in log.splitlines() if "CNR:" in line} == {"AUTO"}
    assert intel["hashes"][0] == other["hashes"][0]  # softmax: ATen's own kernel, no vendor check
