"""Write frames (and the original audio) to an H.264 + AAC mp4, and draw mask overlays."""

from __future__ import annotations

import contextlib
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from teso.utils.files import fsync_dir

OVERLAY_COLOR = np.array([255, 40, 40], dtype=np.float32)  # sounding pixels tinted red
# x264 settings for a stream written while it is made (teso predict's overlay): no look-ahead, no
# B-frames, slice threads. The default (preset medium) holds ~50 frames inside the encoder (look-ahead
# 40, B-frames, frame threads): at 720p that was ~350 MB more at the peak of a long video than of a
# 10-second one, and 4x that at 4K. The encoder then holds about one frame.
LOW_LATENCY_X264 = {"tune": "zerolatency"}


def overlay(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """[H, W, 3] uint8 frame + [H, W] bool/float mask -> [H, W, 3] uint8 with the mask tinted."""
    m = mask.astype(np.float32)[..., None] * alpha
    out = frame.astype(np.float32) * (1 - m) + OVERLAY_COLOR * m
    # A one-pixel outline keeps thin masks visible at any alpha.
    b = mask.astype(bool)
    edge = b & ~(np.roll(b, 1, 0) & np.roll(b, -1, 0) & np.roll(b, 1, 1) & np.roll(b, -1, 1))
    out[edge] = OVERLAY_COLOR
    return out.clip(0, 255).astype(np.uint8)


def heatmap(frame: np.ndarray, prob: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """[H, W, 3] uint8 frame + [H, W] probability in [0, 1] -> [H, W, 3] uint8: the pre-threshold
    sounding probability as a black-red-yellow-white ramp laid over the frame, each pixel weighted by
    its own probability, so that where the model sees no sound the frame shows through."""
    p = np.clip(prob.astype(np.float32), 0.0, 1.0)[..., None]
    ramp = np.clip(3.0 * p - np.array([0.0, 1.0, 2.0], np.float32), 0.0, 1.0) * 255.0
    w = alpha * p
    out = frame.astype(np.float32) * (1 - w) + ramp * w
    return out.clip(0, 255).astype(np.uint8)


class Mp4Writer:
    """An H.264 (+ AAC mono) mp4 written frame by frame, made visible at ``path`` only when complete.

    ``add_frame`` encodes one [H, W, 3] uint8 frame at once; ``add_audio`` takes float32 mono samples
    in any pieces and encodes them in frames of 1,024 samples (``pts`` = the first sample's index),
    so the streams are those :func:`write_mp4` makes from the whole arrays. The file is written to a
    temporary name beside ``path`` and renamed over it by ``close()``; ``abort()`` (or an exception
    inside ``with``) removes it. Odd frame sides are cropped by one pixel: H.264 with yuv420p needs
    even sides.
    """

    AUDIO_FRAME = 1024

    def __init__(
        self,
        path: str | Path,
        fps: float,
        audio: bool = False,
        sample_rate: int = 16000,
        options: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        if options:
            self._video.options = dict(options)
        self._size: tuple[int, int] | None = None
        self._audio = None
        self.sample_rate = sample_rate
        if audio:
            self._audio = self._container.add_stream("aac", rate=sample_rate)
            self._audio.layout = "mono"
        self._pending = np.zeros(0, np.float32)
        self._audio_pts = 0

    def add_frame(self, img: np.ndarray) -> None:
        if self._size is None:
            self._size = (img.shape[0] // 2 * 2, img.shape[1] // 2 * 2)
            self._video.height, self._video.width = self._size
            self._video.pix_fmt = "yuv420p"
        h, w = self._size
        img = np.ascontiguousarray(img[:h, :w])
        for packet in self._video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            self._container.mux(packet)

    def add_audio(self, samples: np.ndarray) -> None:
        if self._audio is None:
            raise ValueError("Mp4Writer: opened without audio")
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        n = len(self._pending) // self.AUDIO_FRAME * self.AUDIO_FRAME
        for start in range(0, n, self.AUDIO_FRAME):
            self._encode_audio(self._pending[start : start + self.AUDIO_FRAME])
        self._pending = self._pending[n:]

    def _encode_audio(self, part: np.ndarray) -> None:
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part[None]), format="fltp", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._audio_pts
        self._audio_pts += len(part)
        for packet in self._audio.encode(af):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it to ``path``."""
        if self._size is None:
            self.abort()
            raise ValueError(f"{self.path}: an mp4 needs at least one frame")
        for packet in self._video.encode():
            self._container.mux(packet)
        if self._audio is not None:
            if len(self._pending):
                self._encode_audio(self._pending)
                self._pending = self._pending[:0]
            for packet in self._audio.encode():
                self._container.mux(packet)
        self._container.close()
        # As teso.utils.files.atomic_write: data on disk before the rename, readable by others.
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        # The file is being thrown away; a half-written container may not close cleanly.
        with contextlib.suppress(av.error.FFmpegError):
            self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    options: dict[str, str] | None = None,
) -> Path:
    """Write [T, H, W, 3] uint8 frames at ``fps`` (+ float32 mono audio) atomically to ``path``.

    Odd frame sides are cropped by one pixel: H.264 with yuv420p needs even sides. ``options``: x264
    settings (e.g. :data:`LOW_LATENCY_X264`); default x264's own (preset medium).
    """
    with Mp4Writer(path, fps, audio=audio is not None, sample_rate=sample_rate, options=options) as mp4:
        for img in np.asarray(frames):
            mp4.add_frame(img)
        if audio is not None:
            mp4.add_audio(audio)
    return Path(path)
