"""Benchmark: SynthAVS generation rate (clips/s and seconds of audio per second), 1 vs 2 workers.

    python bench/synth.py [--clips 60] [--subsets v1s,v1m,v2]

The 1-worker run is the reference; the ratio says what the second process buys on this machine
(process start-up, about a second, is included: at a few clips per subset it eats the gain).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.synthavs.generator import generate  # noqa: E402


def run(clips: int, subsets: tuple[str, ...], workers: int) -> tuple[float, int, int]:
    out = Path(tempfile.mkdtemp()) / "synth"
    try:
        t0 = time.perf_counter()
        s = generate(out, clips=clips, subsets=subsets, progress=False, workers=workers)
        return time.perf_counter() - t0, s.written, s.seconds_of_audio
    finally:
        shutil.rmtree(out.parent)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=60, help="clips per subset")
    p.add_argument("--subsets", default="v1s,v1m,v2")
    args = p.parse_args(argv)
    subsets = tuple(args.subsets.split(","))
    results = {}
    for workers in (1, 2):
        secs, n, audio = run(args.clips, subsets, workers)
        results[workers] = secs
        rate = f"{n / secs:.1f} clips/s, {audio / secs:.0f} s of audio/s"
        print(f"{workers} worker(s): {n} clips in {secs:.1f} s = {rate}")
    print(f"2 workers vs 1: {results[1] / results[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
