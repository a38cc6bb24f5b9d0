"""``teso eval CHECKPOINT DATA [--split test] [--audio normal,mute,wgn10,wgn40]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from teso.cli.options import foundations_option, pin_from_args, reproducible_options


def register(sub: argparse._SubParsersAction) -> None:
    from teso.engine.conditions import condition_help

    p = sub.add_parser("eval", help="evaluate a checkpoint under audio controls (mIoU, F, drops, preference)")
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by teso train")
    p.add_argument("data", type=Path, help="dataset root (AVSBench released layout or SynthAVS)")
    p.add_argument(
        "--subset", default=None, help="v1s, v1m or v2 (default: the one the model was trained on)"
    )
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--audio", default="normal,mute,wgn10,wgn40", help=condition_help())
    p.add_argument("--cues", default=None, help="cue store name (default: the training run's)")
    p.add_argument("--text-encoder", default=None, help="text features to use (default: the training run's)")
    p.add_argument(
        "--allow-cue-mismatch",
        action="store_true",
        help="evaluate on cues made otherwise than the training run's (a cue swap, paper Table 3)",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="binarisation threshold (AVSBench 0.5)")
    p.add_argument("--batch-clips", type=int, default=4, help="clips per evaluation batch (AVSBench: 4)")
    p.add_argument("--no-reuse", action="store_true", help="recompute visual features for every condition")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file for the results (default beside the checkpoint)"
    )
    foundations_option(p)
    reproducible_options(p, "checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from teso.engine.evaluate import evaluate_checkpoint, format_table
    from teso.model.foundation_sources import check_search_paths

    check_search_paths(args.foundations)
    pinned = pin_from_args(args)  # teso.cli.main pinned the kernels before torch was imported
    device = "cpu" if pinned is not None and args.device == "auto" else args.device

    results = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        subset=args.subset,
        split=args.split,
        audio=args.audio,
        cues=args.cues,
        text_encoder=args.text_encoder,
        threshold=args.threshold,
        batch_clips=args.batch_clips,
        reuse_visual=not args.no_reuse,
        out=args.out,
        device=device,
        progress=not args.no_progress,
        allow_cue_mismatch=args.allow_cue_mismatch,
        foundations=args.foundations,
    )
    print(format_table(results, title=f"{args.checkpoint} on {args.data} ({results['subset']}/{args.split})"))
    print(f"written: {results['json']}")
    return 0
