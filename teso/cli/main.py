"""The ``teso`` command. Each command group lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from teso import __version__
from teso.errors import TesoError

# Modules under teso.cli, each adding its sub-commands to the parser.
COMMAND_MODULES = [
    "data",
    "cues",
    "pretrain",
    "train",
    "evaluate",
    "predict",
    "demo",
    "study",
    "bench",
    "fingerprint",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teso", description="Text-guided audio-visual segmentation (TeSO, ECCV 2024)."
    )
    parser.add_argument("--version", action="version", version=f"teso {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"teso.cli.{name}").register(sub)
    return parser


def _pins_numerics(argv: list[str]) -> bool:
    """``teso demo``, ``teso study``, ``teso fingerprint``, ``teso ablate --reproducible`` and ``teso eval
    --reproducible`` compare numbers across machines."""
    return bool(argv) and (
        argv[0] in ("demo", "study", "fingerprint")
        or (argv[0] in ("ablate", "eval") and "--reproducible" in argv)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _pins_numerics(argv):
        from teso.utils.numerics import pin_numerics

        pin_numerics()  # before anything imports torch: the kernels' instruction set (threads: later)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except TesoError as err:
        print(f"teso {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"teso {args.command}: interrupted (finished work is kept; re-run to resume)", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
