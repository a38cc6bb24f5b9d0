"""Write frames (and the original audio) to an H.264 + AAC mp4, and draw mask overlays."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from teso.utils.files import atomic_write

OVERLAY_COLOR = np.array([255, 40, 40], dtype=np.float32)  # sounding pixels tinted red


def overlay(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """[H, W, 3] uint8 frame + [H, W] bool/float mask -> [H, W, 3] uint8 with the mask tinted."""
    m = mask.astype(np.float32)[..., None] * alpha
    out = frame.astype(np.float32) * (1 - m) + OVERLAY_COLOR * m
    # A one-pixel outline keeps thin masks visible at any alpha.
    b = mask.astype(bool)
    edge = b & ~(np.roll(b, 1, 0) & np.roll(b, -1, 0) & np.roll(b, 1, 1) & np.roll(b, -1, 1))
    out[edge] = OVERLAY_COLOR
    return out.clip(0, 255).astype(np.uint8)


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Write [T, H, W, 3] uint8 frames at ``fps`` (+ float32 mono audio) atomically to ``path``.

    Odd frame sides are cropped by one pixel: H.264 with yuv420p needs even sides.
    """
    frames = np.asarray(frames)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    frames = np.ascontiguousarray(frames[:, :h, :w])

    def _write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            a_stream = None
            if audio is not None:
                a_stream = container.add_stream("aac", rate=sample_rate)
                a_stream.layout = "mono"
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            if a_stream is not None:
                samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
                chunk = 1024
                for start in range(0, samples.shape[1], chunk):
                    part = np.ascontiguousarray(samples[:, start : start + chunk])
                    af = av.AudioFrame.from_ndarray(part, format="fltp", layout="mono")
                    af.sample_rate = sample_rate
                    af.pts = start
                    for packet in a_stream.encode(af):
                        container.mux(packet)
                for packet in a_stream.encode():
                    container.mux(packet)

    return atomic_write(path, _write)
