"""Options several commands share: where a moved checkpoint's foundations are (``--foundations``) and
the pinned CPU numerics (``--reproducible [--threads N]``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teso.errors import TesoError
from teso.utils.numerics import DEFAULT_THREADS


def foundations_option(p: argparse.ArgumentParser) -> None:
    """``--foundations DIR`` (eval, predict): where a moved checkpoint's frozen foundations are."""
    p.add_argument(
        "--foundations",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="folder holding the checkpoint's frozen foundations when they moved (repeatable; found by "
        "hash; beside the checkpoint, DATA/foundations and ~/.cache/teso are searched anyway)",
    )


def reproducible_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--reproducible`` and ``--threads N`` (ablate, eval). ``teso.cli.main`` pins the kernels
    before torch is imported when ``--reproducible`` is on the command line."""
    p.add_argument(
        "--reproducible",
        action="store_true",
        help="pin the CPU numerics as teso demo does (vendor-neutral kernels, --threads intra-op "
        f"threads, the CPU), so that one {what} gives the same numbers on any x86-64 CPU, Intel or AMD",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"intra-op threads with --reproducible (default {DEFAULT_THREADS})",
    )


def pin_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """Apply ``--reproducible [--threads N]``; the numerics record, or None when not asked for."""
    if args.threads is not None and not args.reproducible:
        raise TesoError("--threads: only with --reproducible (otherwise torch picks the thread count)")
    if not args.reproducible:
        return None
    from teso.utils.numerics import pin_numerics

    threads = DEFAULT_THREADS if args.threads is None else args.threads
    if threads < 1:
        raise TesoError(f"--threads: expected >= 1, got {threads}")
    return pin_numerics(threads)
