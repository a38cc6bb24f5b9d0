"""Benchmark: teso's vectorised AVSBench mIoU + F-score against a straightforward loop implementation.

The loop implementation is written the way AVSBench's reference evaluates (a Python loop over frames and,
inside ``_eval_pr``, over the 255 thresholds); both run in the same process on the same data, and the
script prints both times, their ratio and the largest difference of the results.

    python bench/metrics.py [--frames 200] [--size 224] [--repeats 3] [--threads N] [--out result.json]

On a shared machine use ``--threads 1``: the loop code issues ~200k small parallel operations whose
thread synchronisation slows down badly when other jobs compete for the cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.metrics import avsbench_fscore, avsbench_miou  # noqa: E402
from teso.metrics.reference import loop_fscore, loop_miou  # noqa: E402
from teso.utils.files import atomic_write_json  # noqa: E402


def _best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best wall-clock and best CPU time (all threads of this process) over ``repeats`` runs.

    CPU time is reported too because other jobs on a shared machine stretch wall-clock time unevenly.
    """
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu, out


def benchmark_metrics(frames: int = 200, size: int = 224, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Time both implementations on ``frames`` random ``size``×``size`` frames (10% with an empty gt).

    Returns seconds per evaluation of mIoU + F for each, wall-clock and CPU (best of ``repeats`` for the
    vectorised code, one run of the loop code, which is slow), the ratios, the 1-minute load average and
    the largest absolute difference of the values.
    """
    gen = torch.Generator().manual_seed(seed)
    gt = (torch.rand(frames, size, size, generator=gen) > 0.7).float()
    gt[::10] = 0  # every tenth frame has nothing sounding
    pred = torch.randn(frames, size, size, generator=gen) * 1.5 + gt * 1.2 - 0.3

    def vectorised() -> tuple[float, float]:
        return float(avsbench_miou(pred, gt)), avsbench_fscore(pred, gt)

    def loop() -> tuple[float, float]:
        return loop_miou(pred, gt), loop_fscore(pred, gt)

    vectorised()  # warm-up: first-call allocations and kernel selection are not what we measure
    t_vec, cpu_vec, (miou_v, f_v) = _best_time(vectorised, repeats)
    t_loop, cpu_loop, (miou_l, f_l) = _best_time(loop, 1)
    return {
        "frames": frames,
        "size": size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "vectorised_s": t_vec,
        "loop_s": t_loop,
        "speedup": t_loop / t_vec,
        "vectorised_cpu_s": cpu_vec,
        "loop_cpu_s": cpu_loop,
        "speedup_cpu": cpu_loop / cpu_vec,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "max_abs_diff": max(abs(miou_v - miou_l), abs(f_v - f_l)),
        "miou": miou_v,
        "fscore": f_v,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads: expected a positive integer")
        torch.set_num_threads(args.threads)
    r = benchmark_metrics(args.frames, args.size, args.repeats, args.seed)
    print(f"AVSBench mIoU + F-score, {r['frames']} frames of {r['size']}x{r['size']}, {r['threads']} threads")
    rows = [
        ("loop implementation (frames x 255 thresholds)", r["loop_s"], r["loop_cpu_s"]),
        ("teso.metrics (vectorised)", r["vectorised_s"], r["vectorised_cpu_s"]),
    ]
    print(f"  {'':48}{'wall':>10}{'CPU':>10}")
    for name, wall, cpu in rows:
        print(f"  {name:48}{wall:9.3f}s{cpu:9.3f}s")
    print(f"  speed-up: {r['speedup']:.1f}x wall, {r['speedup_cpu']:.1f}x CPU")
    print(f"  max |difference| of the values: {r['max_abs_diff']:.2e}")
    print(f"  1-minute load average during the run: {r['load_average']}")
    if args.out:
        atomic_write_json(args.out, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
