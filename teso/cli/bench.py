"""``teso bench``: training/inference speed, audio-control evaluation reuse, metric code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHOICES = ("tiny", "swin-base-ade", "eval", "metrics")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmarks, each as a ratio against a reference measured in the same run"
    )
    p.add_argument(
        "--only", default=",".join(CHOICES), help=f"comma-separated subset of {', '.join(CHOICES)}"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed repeats (best is reported)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from teso.engine.bench import format_bench, run_bench
    from teso.errors import TesoError
    from teso.utils.files import atomic_write_json

    what = [w.strip() for w in args.only.split(",") if w.strip()]
    bad = [w for w in what if w not in CHOICES]
    if bad:
        raise TesoError(f"--only: unknown benchmark(s) {bad}; expected some of {', '.join(CHOICES)}")
    res = run_bench(what, repeats=args.repeats)
    print(format_bench(res))
    if args.json:
        atomic_write_json(args.json, res)
        print(json.dumps({"written": str(args.json)}))
    return 0
