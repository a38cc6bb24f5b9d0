"""``teso fingerprint [--out DIR] [--check] [--record]``: does this machine give the README's bits?

Exit status: 0 identical (or nothing to compare without ``--check``), 1 an error, 3 no golden for
this torch/transformers release (with ``--check``), 4 a stage differs (with ``--check``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

GOLDENS = Path(__file__).resolve().parents[1] / "synthavs" / "goldens" / "fingerprint.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fingerprint",
        help="hashes of a tiny pinned demo (data, foundations, cue features, models, tables), checked "
        "against the committed goldens: equal hashes = this machine reproduces the README's numbers",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="a new or empty work folder, kept (default: a temporary folder, removed afterwards)",
    )
    p.add_argument("--goldens", type=Path, default=GOLDENS, help=f"golden fingerprints (default {GOLDENS})")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 4 when a hash differs from the golden of this torch/transformers release, 3 when "
        "there is no golden for it",
    )
    p.add_argument(
        "--record", action="store_true", help="write this machine's fingerprint into --goldens as the golden"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the fingerprint to this JSON file")
    p.set_defaults(func=_fingerprint)


def _fingerprint(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from teso.errors import TesoError
    from teso.synthavs.fingerprint import check, explain, fingerprint, read_goldens, version_key
    from teso.utils.environment import machine_line
    from teso.utils.files import atomic_write_json
    from teso.utils.numerics import PINNED_ENV, numerics_record

    if not args.record and not args.goldens.is_file():
        raise TesoError(f"--goldens {args.goldens}: no such file")
    numerics = numerics_record()  # teso.cli.main pinned the kernels before torch was imported
    if numerics["env"] != PINNED_ENV or numerics["aten_cpu_capability"] != "AVX2":
        raise TesoError(
            "the numerics cannot be pinned here (a pinning variable set by hand, or not an x86-64 CPU): "
            f"{json.dumps(numerics['env'])}, ATen {numerics['aten_cpu_capability']}"
        )
    out = args.out or Path(tempfile.mkdtemp(prefix="teso-fingerprint-"))
    try:
        result = fingerprint(out)  # run_demo switches oneDNN / NNPACK off and pins the threads
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    if not result["environment"]["numerics"]["pinned"]:
        raise TesoError(
            f"the run was not on the pinned path: {json.dumps(result['environment']['numerics'])}"
        )
    print(f"machine: {machine_line(result['environment'])}")
    for stage, value in result["values"].items():
        if isinstance(value, dict):
            for name, h in value.items():
                print(f"  {stage}/{name}: {h[:16]}")
        else:
            print(f"  {stage}: {value[:16]}")
    if args.json:
        atomic_write_json(args.json, result)
    if args.record:
        data = read_goldens(args.goldens) if args.goldens.is_file() else {"goldens": {}}
        key = version_key(result["environment"])
        env = result["environment"]
        data["goldens"][key] = {
            "values": result["values"],
            "made_on": {
                "cpu": env["cpu"],
                "packages": env["packages"],
                "numerics": env["numerics"],
                "date": time.strftime("%Y-%m-%d"),
            },
        }
        atomic_write_json(args.goldens, data)
        print(f"recorded as the golden for {key} in {args.goldens}")
        return 0
    goldens = read_goldens(args.goldens)
    key, differing = check(result, goldens)
    if differing is None:
        print(f"no golden for {key} in {args.goldens} (have: {', '.join(goldens['goldens'])})")
        return 3 if args.check else 0
    if differing:
        print(f"DIFFERS from the golden for {key}: {explain(differing, result, goldens['goldens'][key])}")
        return 4 if args.check else 0
    print(f"identical to the golden for {key}")
    return 0
