"""``teso study [--split test|val] [--out DIR]``: the claim decided at the protocol's budget."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the paper's claim on SynthAVS v2 at the protocol's converged budget (docs/synthavs.md): "
        "Table 3, Table 4 and the verdict",
    )
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="test decides; val is the dress rehearsal at the same cost (default test)",
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/study-SPLIT)")
    p.add_argument("--seed", type=int, default=0, help="data seed; the models train with seeds SEED+0..2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_study)


def _study(args: argparse.Namespace) -> int:
    from teso.synthavs.study import run_study  # teso.cli.main pinned the kernels; run_demo pins threads

    out = args.out or Path(f"runs/study-{args.split}")
    run_study(out, split=args.split, seed=args.seed, progress=not args.no_progress)
    return 0
