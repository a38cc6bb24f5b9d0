"""Peak memory of `teso predict` on a short and a long 720p video (made here): does it stay flat?

    python bench/predict_memory.py [--short 10] [--long 600] [--fps 25] [--size 1280x720]

Writes two videos (H.264 at ``--fps``, moving content, 44.1 kHz stereo AAC, so the audio goes
through decoding, mix-down and resampling), a random `tiny` TeSO checkpoint (v2: windows of 10 s,
text cues of the `tiny` encoder) and a cue file, then runs ``teso predict`` on each in a fresh
process and reads that process's peak resident set size (``VmHWM`` of /proc/self/status: the
``ru_maxrss`` of getrusage would carry the parent's peak across ``execve``). Prints a table with
the ratio long / short (target <= 1.2). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK = """
import json, sys
from teso.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "peak_kb": peak}))
"""


def make_video(path: Path, seconds: int, fps: int, width: int, height: int) -> None:
    """A bright square moving over a static noise background, with a chirp on two channels."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    rate = 44100
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        a = out.add_stream("aac", rate=rate)
        a.layout = "stereo"
        side = height // 4
        for i in range(seconds * fps):
            img = background.copy()
            x = (8 * i) % (width - side)
            img[height // 3 : height // 3 + side, x : x + side] = 235
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        block = rate  # one second at a time: the bench itself must not hold the whole track
        for s in range(seconds):
            t = s + np.arange(block) / rate
            wave = 0.3 * np.sin(2 * np.pi * (200 + 20 * (t % 10)) * t)
            planar = np.stack([wave, 0.5 * wave]).astype(np.float32)
            for start in range(0, block, 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp", layout="stereo"
                )
                frame.sample_rate, frame.pts = rate, s * block + start
                for packet in a.encode(frame):
                    out.mux(packet)
        for packet in a.encode():
            out.mux(packet)


def run_predict(video: Path, ckpt: Path, cues: Path, out: Path, threads: int) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `teso predict` process."""
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--cues", str(cues), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"teso predict failed on {video}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kb"] / 1024, wall


def main() -> None:
    from tests.test_predict_stream import tiny_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", type=int, default=10, help="seconds of the short video (default 10)")
    ap.add_argument("--long", type=int, default=600, help="seconds of the long video (default 600)")
    ap.add_argument("--fps", type=int, default=25, help="frame rate of both videos (default 25)")
    ap.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of teso predict (default 1)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args()
    if not Path("/proc/self/status").is_file():
        raise SystemExit("bench/predict_memory.py reads VmHWM from /proc: Linux only")
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="teso-predict-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = tiny_checkpoint(work / "tiny.safetensors", subset="v2")
    rows = []
    for seconds in (args.short, args.long):
        video = work / f"{seconds}s.mp4"
        t0 = time.perf_counter()
        if not (args.keep and video.is_file()):  # --keep: a video made by an earlier run is reused
            make_video(video, seconds, args.fps, width, height)
        made = time.perf_counter() - t0
        cues = work / f"{seconds}s.cues.json"
        cues.write_text(json.dumps([["dog"] if t % 3 else ["man", "guitar"] for t in range(seconds)]))
        peak, wall = run_predict(video, ckpt, cues, work / f"out{seconds}", args.threads)
        rows.append((seconds, video.stat().st_size / 2**20, made, wall, peak))
        print(f"{seconds} s: made in {made:.0f} s, predict {wall:.0f} s, peak {peak:.0f} MB", flush=True)
    print(f"\n{width}x{height} at {args.fps} fps, 44.1 kHz stereo AAC, OMP_NUM_THREADS={args.threads}")
    print("| video | file MB | predict wall s | peak RSS MB |")
    print("|---|---|---|---|")
    for seconds, size, _, wall, peak in rows:
        print(f"| {seconds} s | {size:.1f} | {wall:.0f} | {peak:.0f} |")
    ratio = rows[1][4] / rows[0][4]
    print(f"ratio long / short: {ratio:.3f} (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
