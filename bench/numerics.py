"""Benchmark + audit: what the vendor-neutral pinned numerics cost, and that they hold when MKL runs
as on a non-Intel CPU.

    python bench/numerics.py [--clips 40] [--pretrain-steps 60] [--train-steps 30] [--json FILE]

One SynthAVS is generated; the same workload — the demo's foundation pre-training (visual +
audio, 96 px) then a TeSO training at the demo's settings — runs in a fresh process under each
numerics mode:

- ``pinned``: today's pinned path (:mod:`teso.utils.numerics`: ATen AVX2, MKL ``COMPATIBLE``, no
  oneDNN, no NNPACK, fixed threads);
- ``avx2``: the earlier pinning (ATen AVX2, ``MKL_CBWR=AVX2``, oneDNN capped at AVX2, fixed threads);
- ``native``: nothing pinned (what torch picks on this CPU), same threads.

Each mode runs twice: as is, and with MKL made to believe the CPU is not Intel's
(:mod:`teso.utils.vendor_emulation`). Reported: seconds per step of each stage and its ratio against
``avx2`` (the reference, measured in the same run), whether the trained tensors are identical with and
without the emulation, which libraries the pinned path reaches (oneDNN primitives and MKL calls by
CNR branch, counted from their verbose logs in a separate short run), and op by op — every
floating-point ATen op of one foundation training step, its output hashed — which ops change bits
under the emulated vendor, for the earlier pinning and for today's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.utils.numerics import EARLIER_AVX2_ENV  # noqa: E402

THREADS = 2
_WORK = Path(tempfile.gettempdir())  # the run's work folder (set in main)
MODES = {
    "pinned": None,  # teso.utils.numerics.pin_numerics
    "avx2": EARLIER_AVX2_ENV,
    "native": {},
}
PIN_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_DYNAMIC", "ONEDNN_MAX_CPU_ISA")

CHILD = r"""
import json, sys, time
from pathlib import Path
mode, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
pre, steps = int(sys.argv[4]), int(sys.argv[5])
if mode == "pinned":
    from teso.utils.numerics import pin_numerics
    pin_numerics({threads})
import torch
torch.set_num_threads({threads})
from safetensors.torch import load_file
from teso.synthavs.demo import DemoPlan, train_model
from teso.synthavs.foundations import pretrain_foundations
from teso.model.checkpoint import tensors_sha256
from teso.utils.numerics import numerics_record
rec = pretrain_foundations(root, steps_visual=pre, steps_audio=pre, image_size=96, out=out / "found",
                           workers=0, progress=False)
plan = DemoPlan(clips=0, image_size=96, pretrain_visual_steps=pre, pretrain_audio_steps=pre, steps=steps,
                batch_size=2, seeds=(0,), threads={threads})
run = train_model("teso", 0, root, out, plan, rec["overrides"], False)
found = Path(rec["dir"])
print(json.dumps({{
    "visual_s_per_step": rec["visual"]["wall_s"] / pre,
    "audio_s_per_step": rec["audio"]["wall_s"] / pre,
    "train_s_per_step": run["wall_s"] / steps,
    "hashes": {{
        "visual": tensors_sha256(load_file(str(found / "visual" / "model.safetensors"))),
        "audio": tensors_sha256(load_file(str(found / "audio.safetensors"))),
        "teso": tensors_sha256(load_file(run["checkpoint"])),
    }},
    "numerics": numerics_record(),
}}))
"""


OPS_CHILD = r"""
import hashlib, json, shutil, sys
from pathlib import Path
mode, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "pinned":
    from teso.utils.numerics import pin_numerics
    pin_numerics({threads})
import torch
from torch.utils._python_dispatch import TorchDispatchMode
torch.set_num_threads({threads})
from teso.synthavs.foundations import pretrain_foundations
log = []
class Hash(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {{}}))
        if "empty" in str(func):  # uninitialised memory: not a result
            return result
        outs = result if isinstance(result, (tuple, list)) else [result]
        if func.is_view:
            return result
        tensors = [o for o in outs if isinstance(o, torch.Tensor) and o.dtype.is_floating_point]
        if tensors:
            h = hashlib.sha256()
            for t in tensors:
                h.update(t.detach().contiguous().numpy().tobytes())
            log.append((str(func.overloadpacket), h.hexdigest()[:16]))
        return result
with Hash():
    pretrain_foundations(
        root, steps_visual=1, steps_audio=1, image_size=96, out=out, workers=0, progress=False
    )
print(json.dumps(log))
"""


def op_diff(mode: str, root: Path, work: Path, lib: Path) -> dict:
    """Every floating-point op of one visual + one audio foundation training step (and their
    evaluation), hashed, as is and with non-Intel MKL: per op name, how many calls changed bits, and
    the first op that did."""
    logs = []
    for preload in (None, lib):
        out = work / f"ops-{mode}-{'emulated' if preload else 'as-is'}"
        done = subprocess.run(
            [sys.executable, "-c", OPS_CHILD.format(threads=THREADS), mode, str(root), str(out)],
            env=_env(mode, preload),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"ops {mode}: child failed:\n{done.stderr[-3000:]}")
        logs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    a, b = logs
    if [op for op, _ in a] != [op for op, _ in b]:
        return {"ops": len(a), "note": "the two runs called different ops (control flow changed)"}
    changed: Counter = Counter()
    total: Counter = Counter()
    first = None
    for i, ((op, ha), (_, hb)) in enumerate(zip(a, b)):
        total[op] += 1
        if ha != hb:
            changed[op] += 1
            first = first or f"#{i} {op}"
    return {
        "ops": len(a),
        "changed_calls": sum(changed.values()),
        "first_changed": first,
        "changed_by_op": {op: f"{changed[op]}/{total[op]}" for op in sorted(changed)},
    }


def _env(mode: str, preload: Path | None, verbose: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PIN_VARS}
    env.update(MODES[mode] or {})
    env["OMP_NUM_THREADS"] = str(THREADS)
    env["TESO_CACHE"] = str(_WORK / "cache")  # pretrain registers its foundations: not in ~/.cache
    if preload is not None:
        from teso.utils.vendor_emulation import preload_env

        env = preload_env(preload, env)
    if verbose:
        env.update(MKL_VERBOSE="1", ONEDNN_VERBOSE="1")
    return env


def run_mode(mode: str, root: Path, work: Path, pre: int, steps: int, preload: Path | None) -> dict:
    out = work / f"{mode}-{'emulated' if preload else 'native-vendor'}"
    code = CHILD.format(threads=THREADS)
    done = subprocess.run(
        [sys.executable, "-c", code, mode, str(root), str(out), str(pre), str(steps)],
        env=_env(mode, preload),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode}: child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def audit(root: Path, work: Path) -> dict:
    """Library calls of a short pinned workload, from MKL's and oneDNN's verbose logs."""
    code = CHILD.format(threads=THREADS)
    out = work / "audit"
    done = subprocess.run(
        [sys.executable, "-c", code, "pinned", str(root), str(out), "2", "2"],
        env=_env("pinned", None, verbose=True),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"audit: child failed:\n{done.stderr[-3000:]}")
    mkl: Counter = Counter()
    onednn: Counter = Counter()
    for line in done.stdout.splitlines():
        if line.startswith("MKL_VERBOSE") and "CNR:" in line:
            func = line.split()[1].split("(")[0]
            branch = line.split("CNR:")[1].split()[0]
            mkl[f"{func} CNR:{branch}"] += 1
        elif line.startswith("onednn_verbose") and ",exec," in line:
            onednn[",".join(line.split(",")[3:6])] += 1
    return {"mkl_calls": dict(mkl), "onednn_primitives": dict(onednn)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=40, help="SynthAVS v1m clips")
    p.add_argument("--pretrain-steps", type=int, default=60, help="steps of each foundation stage")
    p.add_argument("--train-steps", type=int, default=30, help="TeSO training steps")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from teso.synthavs.generator import generate
    from teso.utils.environment import environment_record, machine_line
    from teso.utils.vendor_emulation import available, build_library

    global _WORK
    work = _WORK = Path(tempfile.mkdtemp(prefix="teso-numerics-"))
    root = work / "synthavs"
    generate(root, clips=args.clips, seed=0, subsets=("v1m",), progress=False, version=1)
    from teso.synthavs.demo import make_cues

    make_cues(root, progress=False)
    why = available()
    lib = build_library(work / "lib") if why is None else None
    results: dict[str, dict] = {}
    for mode in MODES:
        results[mode] = {"as_is": run_mode(mode, root, work, args.pretrain_steps, args.train_steps, None)}
        if lib is not None:
            results[mode]["non_intel_mkl"] = run_mode(
                mode, root, work, args.pretrain_steps, args.train_steps, lib
            )
    report = {
        "machine": machine_line(environment_record()),
        "workload": {
            "clips": args.clips,
            "pretrain_steps": args.pretrain_steps,
            "train_steps": args.train_steps,
        },
        "emulation": why or "MKL told the CPU is not Intel (LD_PRELOAD)",
        "modes": results,
        "audit_pinned": audit(root, work),
        "op_diff": {mode: op_diff(mode, root, work, lib) for mode in ("avx2", "pinned")} if lib else None,
    }
    ref = results["avx2"]["as_is"]
    print(f"machine: {report['machine']}; threads {THREADS}")
    print(
        "| mode | visual s/step | audio s/step | TeSO train s/step | vs avx2 (visual, audio, train) "
        "| same bits as non-Intel MKL |"
    )
    print("|---|---|---|---|---|---|")
    for mode, r in results.items():
        a = r["as_is"]
        ratios = ", ".join(
            f"x{a[k] / ref[k]:.2f}" for k in ("visual_s_per_step", "audio_s_per_step", "train_s_per_step")
        )
        if "non_intel_mkl" in r:
            same = [k for k in a["hashes"] if a["hashes"][k] == r["non_intel_mkl"]["hashes"][k]]
            verdict = "all" if len(same) == len(a["hashes"]) else (", ".join(same) or "none")
        else:
            verdict = f"not measured ({why})"
        print(
            f"| {mode} | {a['visual_s_per_step']:.3f} | {a['audio_s_per_step']:.4f} | "
            f"{a['train_s_per_step']:.3f} | {ratios} | {verdict} |"
        )
    print("pinned path, library calls:", json.dumps(report["audit_pinned"]))
    for mode, diff in (report["op_diff"] or {}).items():
        print(f"ops of one foundation step, {mode}, as is vs non-Intel MKL:", json.dumps(diff))
    if args.json:
        from teso.utils.files import atomic_write_json

        atomic_write_json(args.json, report)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
