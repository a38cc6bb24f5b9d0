"""``teso demo [--quick] [--out DIR]``: the README's main job."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="SynthAVS -> cues -> train TeSO + baselines -> audio-control evaluation -> predict -> report",
    )
    p.add_argument(
        "--quick", action="store_true", help="small data and short training (about 4 minutes on 2 cores)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed")
    p.add_argument(
        "--data-version",
        type=int,
        choices=(1, 2),
        default=2,
        help="SynthAVS version (default 2; 1 reproduces the README's v1 findings)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from teso.synthavs.demo import run_demo  # teso.cli.main pinned the kernels; run_demo pins threads

    out = args.out if not args.quick or args.out != Path("runs/demo") else Path("runs/demo-quick")
    run_demo(out, quick=args.quick, seed=args.seed, progress=not args.no_progress, version=args.data_version)
    return 0
