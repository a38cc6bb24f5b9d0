"""`teso predict` on a 10-minute video: its peak memory is that of a 10-second one.

Measure: the peak resident set size of a fresh Python process that runs
``teso.cli.main.main(["predict", ...])`` and reports its own peak, ``VmHWM`` of /proc/self/status
(Linux). Not ``getrusage(...).ru_maxrss``: Linux keeps that across ``execve``, so a child forked
from this test process starts with the test process's own peak (measured: a child "peaked" at
594 MB before running a line, the size of the pytest process that had just written the 10-minute
video), and RUSAGE_CHILDREN is the largest of all children so far; VmHWM belongs to the new
address space the ``exec`` made. Why RSS and not tracemalloc: tracemalloc sees numpy's buffers but not
torch's, nor FFmpeg's decoder and encoder buffers, and the whole-video buffers of a non-streaming
predict were of all three kinds; RSS counts everything the process holds. Run to run, the peak of
the same command moves by a few MB (allocator and thread timing); both runs here load the same
model and libraries, so their difference is what the video's length adds.

Bound: 10-minute peak <= 10-second peak + 48 MB. What holding the video would cost at these sizes
(60 x 48 px frames, 16 kHz mono audio): the waveform alone is 38 MB as float32 and its decoding
and mix-down held ~4 copies at once (float32 chunks, their concatenation, the transposed copy,
the float64 mono), the 600 log-mel examples 15 MB (and their STFT intermediates more), plus
frames, probabilities, masks and overlays (~25 MB). Measured with this test's videos and model:
the previous, non-streaming predict peaked at 489 MB (10 s) and 887 MB (10 min), +398 MB; the
streaming one at 479-482 MB and 498-501 MB, +20 MB (the malloc heap and the mp4 muxer's index grow
a little with the number of seconds). 48 MB is over twice that and an eighth of the old growth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.test_predict_stream import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
W, H = 60, 48
GROWTH_BOUND_MB = 48


def long_video(path: Path, seconds: int) -> Path:
    """An mkv: 1 fps H.264 (60 x 48 px, a square moving over a ramp) and 16 kHz mono 16-bit PCM,
    which costs nothing to encode or decode (AAC would take longer than the predict run)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=1)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        a = out.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        ramp = np.linspace(0, 120, W, dtype=np.float32)[None, :, None]
        for t in range(seconds):
            img = np.broadcast_to(ramp, (H, W, 3)).astype(np.uint8)
            x = (7 * t) % (W - 12)
            img[10:22, x : x + 12] = 230
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        n = seconds * 16000
        wave = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / 16000)).astype(np.float32)
        for start in range(0, n, 1024):
            part = (wave[None, start : start + 1024] * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(part, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return path


PEAK = """
import json, sys
from teso.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "peak_kb": peak}))
"""


def peak_of_predict(video: Path, ckpt: Path, cues: Path, out: Path) -> tuple[float, list[str]]:
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--cues", str(cues), "--out", str(out)]
    # One OpenMP thread: on shared cores two threads spin-wait on each other (docs/engine.md), and
    # each thread's malloc arena would add its own share of noise to the peak.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )  # the timeout is a hang guard only
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["code"] == 0
    return result["peak_kb"] / 1024, lines[:-1]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM is read from Linux's /proc")
def test_a_ten_minute_video_peaks_no_higher_than_ten_seconds(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", subset="v2")  # windows of 10 s
    peaks = {}
    for seconds in (10, 600):
        video = long_video(tmp_path / f"{seconds}.mkv", seconds)
        cues = tmp_path / f"{seconds}.json"
        cues.write_text(json.dumps([["dog"] if t % 3 else ["man", "car"] for t in range(seconds)]))
        out = tmp_path / f"out{seconds}"
        peaks[seconds], printed = peak_of_predict(video, ckpt, cues, out)
        # it did the whole job: one line and one mask per second, every frame in the overlay
        assert len(printed) == seconds + 1
        assert len(list((out / "masks").iterdir())) == seconds
        summary = json.loads((out / "summary.json").read_text())
        assert summary["seconds"] == seconds and len(summary["per_second"]) == seconds
        with av.open(str(out / "overlay.mp4")) as c:
            assert c.streams.video[0].frames == seconds
            assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - seconds) < 0.2
    growth = peaks[600] - peaks[10]
    assert growth <= GROWTH_BOUND_MB, f"peak RSS {peaks[10]:.0f} MB at 10 s, {peaks[600]:.0f} MB at 10 min"
