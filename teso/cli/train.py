"""``teso train CONFIG [key=value ...]`` and ``teso ablate CONFIG``."""

from __future__ import annotations

import argparse
from pathlib import Path

from teso.cli.options import pin_from_args, reproducible_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train TeSO from an experiment config (configs: s4, ms3, avss-binary, avss, synth)"
    )
    p.add_argument("config", help="config name (teso/configs/NAME.yaml) or a YAML path")
    p.add_argument(
        "overrides", nargs="*", help="KEY=VALUE overrides, e.g. train.epochs=5 data.root=/data/avsbench"
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from this checkpoint's weights (same model), fresh optimiser and schedule: fine-tuning "
        "(sets train.init_from)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: one GPU per process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    a = sub.add_parser(
        "ablate", help="train and evaluate every ablation of SPEC §8; writes the Table 5 layout"
    )
    a.add_argument("config", help="config name or YAML path")
    a.add_argument("overrides", nargs="*", help="KEY=VALUE overrides applied to every row")
    a.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the runs and the table (default runs/ablate-<config>)",
    )
    a.add_argument(
        "--rows",
        default=None,
        help="comma-separated rows (default: the Table 5 rows); cue-source rows cues-nouns, cues-oracle, "
        "cues-llm train on that cue store; 'all' = both",
    )
    a.add_argument(
        "--audio", default=None, help="audio conditions for each row (default: the config's eval.audio)"
    )
    a.add_argument("--device", default="auto")
    reproducible_options(a, "seed (OUT/numerics.json records it)")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=_ablate)


def _train(args: argparse.Namespace) -> int:
    from teso.engine.config import load_experiment
    from teso.engine.distributed import cleanup
    from teso.engine.trainer import Trainer

    exp = load_experiment(args.config, args.overrides)
    if args.init_from is not None:
        # Set directly, not as a KEY=VALUE override: YAML would read "a #1/x" or "2024-01-01" as other things.
        exp.train.init_from = str(args.init_from)
        exp.validate("--init-from")
    out = args.out or Path("runs") / Path(args.config).stem
    try:
        result = Trainer(
            exp, out, resume=args.resume, device=args.device, progress=not args.no_progress
        ).fit()
    finally:
        cleanup()  # under torchrun: the process group ends with the command
    print(
        f"{result.stopped}: {result.steps} steps, {result.epochs_done} epochs; "
        f"best val mIoU {100 * max(result.best_miou, 0):.2f}; last {result.last}; best {result.best}"
    )
    return 0


def _ablate(args: argparse.Namespace) -> int:
    numerics = pin_from_args(args)  # teso.cli.main pinned the kernels before torch was imported
    from teso.engine.ablate import ABLATIONS, CUE_ROWS, run_ablations
    from teso.engine.distributed import cleanup

    rows = [r.strip() for r in args.rows.split(",")] if args.rows else list(ABLATIONS)
    if rows == ["all"]:
        rows = [*ABLATIONS, *CUE_ROWS]
    out = args.out or Path("runs") / f"ablate-{Path(args.config).stem}"
    if numerics is not None:
        from teso.utils.files import atomic_write_json

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "numerics.json", numerics)
    try:
        table = run_ablations(
            args.config,
            args.overrides,
            out,
            rows=rows,
            audio=args.audio,
            device=args.device,
            progress=not args.no_progress,
        )
    finally:
        cleanup()
    print(table)
    return 0
