"""Log-mel throughput: teso's batched torch front end against straightforward numpy, same run, same input.

Prints seconds of audio processed per second of wall time for
  * torch    — teso.audio.log_mel_examples (unfold + torch.fft.rfft + one matmul), one long clip and
               a batch of 10-second clips;
  * numpy-loop — a per-frame Python loop with np.fft.rfft, the textbook implementation;
  * numpy-vec  — the same algorithm on a strided frame matrix with one np.fft.rfft call;
and the ratios torch / numpy. All three are checked to agree before timing.

    python bench/logmel.py [--seconds 60] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.audio.logmel import _mel_matrix_f64, log_mel_examples  # noqa: E402

SR = 16000


def numpy_loop(x: np.ndarray) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    mel = _mel_matrix_f64().astype(np.float32)
    n_frames = 1 + (len(x) - 400) // 160
    n_examples = n_frames // 96
    out = np.empty((n_examples * 96, 64), dtype=np.float32)
    for i in range(n_examples * 96):
        frame = x[i * 160 : i * 160 + 400] * window
        out[i] = np.log(np.abs(np.fft.rfft(frame, 512)) @ mel + 0.01)
    return out.reshape(n_examples, 1, 96, 64)


def numpy_vectorised(x: np.ndarray) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    mel = _mel_matrix_f64().astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160]
    n_examples = frames.shape[0] // 96
    frames = frames[: n_examples * 96]
    out = np.log(np.abs(np.fft.rfft(frames * window, 512)).astype(np.float32) @ mel + 0.01)
    return out.reshape(n_examples, 1, 96, 64)


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function; the runs are interleaved (a, b, c, a, b, c, ...) so that a
    change in machine load during the benchmark hits every implementation alike."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and FFT plans are not throughput
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="audio length per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(args.seconds * SR)).astype(np.float32)
    clips = x[: (args.seconds // 10) * 10 * SR].reshape(-1, 10 * SR)

    ref = numpy_vectorised(x)
    for name, got in (("torch", log_mel_examples(x, SR).numpy()), ("numpy-loop", numpy_loop(x))):
        err = float(np.abs(got - ref).max())
        if err > 1e-3:
            raise SystemExit(f"{name} disagrees with numpy-vec by {err:.2e}; benchmark aborted")

    audio_s = float(args.seconds)
    batch_s = float(clips.size) / SR
    t = timed(
        {
            "torch": lambda: log_mel_examples(x, SR),
            "batch": lambda: log_mel_examples(clips, SR),
            "vec": lambda: numpy_vectorised(x),
            "loop": lambda: numpy_loop(x),
        },
        args.repeats,
    )
    t_torch, t_batch, t_vec, t_loop = t["torch"], t["batch"], t["vec"], t["loop"]

    print(
        f"log-mel throughput, {args.seconds} s of 16 kHz audio, median of {args.repeats} interleaved runs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), numpy {np.__version__}"
    )
    rows = [
        ("torch, one clip", audio_s / t_torch),
        (f"torch, batch of {clips.shape[0]} x 10 s", batch_s / t_batch),
        ("numpy-vec (one rfft call)", audio_s / t_vec),
        ("numpy-loop (per-frame rfft)", audio_s / t_loop),
    ]
    for name, rate in rows:
        print(f"  {name:32s} {rate:12.0f} s of audio / s")
    print(f"  ratio torch / numpy-loop        {rows[0][1] / rows[3][1]:12.1f}x")
    print(f"  ratio torch / numpy-vec         {rows[0][1] / rows[2][1]:12.2f}x")
    print(f"  ratio torch batch / numpy-vec   {rows[1][1] / rows[2][1]:12.2f}x")


if __name__ == "__main__":
    main()
