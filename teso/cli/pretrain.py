"""``teso pretrain ROOT``: pre-train the frozen foundations of a SynthAVS tree (SPEC §11)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train the visual (all-object segmentation) and audio (sound tagging) foundations "
        "of a SynthAVS tree; cached by dataset hash, resumable",
    )
    p.add_argument("root", type=Path, help="a SynthAVS tree (made by `teso data synth`)")
    p.add_argument(
        "--steps-visual", type=int, default=600, metavar="N", help="visual optimiser steps (default 600)"
    )
    p.add_argument(
        "--steps-audio", type=int, default=600, metavar="N", help="audio optimiser steps (default 600)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=128,
        metavar="S",
        help="input side S, a multiple of 32: use the TeSO run's",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="weights, batch order and loss sampling seed"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="foundation directory (default ROOT/foundations/{dataset hash}-{settings hash})",
    )
    p.add_argument(
        "--eval-split", default="test", choices=["val", "test"], help="where the scores are measured"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from teso.synthavs.foundations import pretrain_foundations

    res = pretrain_foundations(
        args.root,
        steps_visual=args.steps_visual,
        steps_audio=args.steps_audio,
        image_size=args.image_size,
        seed=args.seed,
        out=args.out,
        eval_split=args.eval_split,
        device=args.device,
        progress=not args.no_progress,
    )
    how = "cached" if res["cached"] else f"trained in {res['wall_s']:.0f} s"
    print(f"foundations in {res['dir']} ({how}; dataset {res['dataset']['hash'][:16]})")
    print(
        f"  visual: all-object mIoU {100 * res['scores']['all_object_miou']:.2f} on {res['eval_split']} "
        f"({res['steps']['visual']} steps at {res['image_size']} px)"
    )
    print(f"  audio:  tagging mAP {100 * res['scores']['tagging_map']:.2f} ({res['steps']['audio']} steps)")
    print("use them (frozen) with the overrides:")
    print("  " + " ".join(res["overrides"]))
    return 0
