"""``teso data check ROOT``, ``teso data synth --out DIR`` and ``teso data stats ROOT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check AVSBench trees, generate SynthAVS")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    check = dsub.add_parser("check", help="validate an AVSBench/SynthAVS tree and list every problem")
    check.add_argument(
        "root",
        type=Path,
        help="dataset root: the folder of metadata.csv (released), s4_meta_data.csv (Single-source) "
        "or ms3_meta_data.csv (Multi-sources)",
    )
    check.set_defaults(func=_check)

    synth = dsub.add_parser("synth", help="generate the SynthAVS dataset (no download)")
    synth.add_argument("--out", type=Path, required=True, help="output directory (released layout)")
    synth.add_argument(
        "--clips", type=int, default=None, help="clips per subset (default: the standard size)"
    )
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    synth.add_argument(
        "--subsets", default="v1s,v1m,v2", help="comma-separated subsets to generate (v1s, v1m, v2)"
    )
    synth.add_argument(
        "--version",
        type=int,
        choices=(1, 2),
        default=2,
        help="2 (default): sound families, bystanders, off-screen sound, clip-level cues — the paper's "
        "question; 1: the first miniature (docs/synthavs.md)",
    )
    synth.add_argument("--no-check", action="store_true", help="skip the `data check` run after generating")
    synth.set_defaults(func=_synth)

    stats = dsub.add_parser(
        "stats", help="SynthAVS premises P1-P3 as numbers: audio vs text, bystanders, silent seconds"
    )
    stats.add_argument("root", type=Path, help="a SynthAVS tree (made by `teso data synth`)")
    stats.add_argument(
        "--split", default="val", choices=("train", "val", "test"), help="where to measure (default val)"
    )
    stats.add_argument(
        "--foundation",
        type=Path,
        default=None,
        help="a foundation folder made by `teso pretrain ROOT --eval-split SPLIT`: adds its audio "
        "tagging figures (P1)",
    )
    stats.add_argument("--no-nouns", action="store_true", help="skip the noun cues (spaCy)")
    stats.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    stats.set_defaults(func=_stats)


def _check(args: argparse.Namespace) -> int:
    from teso.data.check import check_tree

    report = check_tree(args.root)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _synth(args: argparse.Namespace) -> int:
    from teso.data.check import check_tree
    from teso.synthavs.generator import generate

    subsets = tuple(s.strip() for s in args.subsets.split(",") if s.strip())
    summary = generate(
        args.out, clips=args.clips, seed=args.seed, subsets=subsets, progress=True, version=args.version
    )
    print(summary.describe())
    if args.no_check:
        return 0
    report = check_tree(args.out)
    print(report.summary())
    for problem in report.problems:
        print(problem, file=sys.stderr)
    return 0 if report.ok else 1


def _stats(args: argparse.Namespace) -> int:
    from teso.synthavs.stats import data_stats, render
    from teso.utils.files import atomic_write_json

    stats = data_stats(args.root, args.split, args.foundation, nouns=not args.no_nouns)
    print(render(stats))
    if args.json:
        atomic_write_json(args.json, stats)
    return 0
