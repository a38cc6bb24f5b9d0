"""A video's 1 fps frames and 16 kHz audio, read window by window (what ``teso predict`` streams).

Nothing here holds a whole video: :class:`FrameStream` decodes frames as they are asked for and
keeps only those a later window still needs; :class:`AudioStream` decodes, mixes down and resamples
the audio chunk by chunk and keeps only the samples not yet consumed. The values are the same,
bit for bit, as those of the whole-file readers (:func:`teso.video.read_frames`,
:func:`teso.audio.load_audio`):

* frames come from the same generator :func:`~teso.video.read_frames` stacks;
* audio is mixed down per sample exactly as ``load_audio`` does (mean over channels in float64), and
  :class:`StreamResampler` gives the samples of :func:`teso.audio.io.resample` (scipy's
  ``resample_poly`` over the whole signal) by running it on overlapping pieces: an output sample
  depends only on the input within the filter's half length, so a piece that starts on a multiple
  of the decimation factor and carries that much input on each side computes it from the same
  inputs with the same coefficients in the same order (tested equal at 8 to 48 kHz).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly

from teso.audio.io import SOUNDFILE_EXTENSIONS, _check_wav_complete
from teso.errors import TesoError
from teso.video.io import iter_video_frames, list_image_frames, probe_video, read_image_rgb

AUDIO_SAMPLE_RATE = 16000


class StreamResampler:
    """Resample a mono signal pushed in pieces; the concatenated output equals
    :func:`teso.audio.io.resample` of the whole signal (float64 in, float64 out)."""

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        g = math.gcd(orig_sr, target_sr)
        self.up, self.down = target_sr // g, orig_sr // g
        # resample_poly's filter has 10 * max(up, down) taps on each side in the upsampled domain.
        reach = 10 * max(self.up, self.down) // self.up + 2  # input samples an output depends on
        self._margin = (-(-reach // self.down) + 1) * self.down  # a multiple of down, with room
        self._buf = np.zeros(0)
        self._buf_start = 0  # global index of _buf[0]; always a multiple of down
        self._n_in = 0
        self._out_next = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add ``[n]`` input samples; returns the output samples that are now final."""
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float64)])
        self._n_in += len(x)
        return self._emit(final=False)

    def finish(self) -> np.ndarray:
        """The remaining output samples (the signal has ended)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        up, down = self.up, self.down
        if up == down:  # no resampling: resample() returns the input itself
            out, self._buf = self._buf, np.zeros(0)
            self._buf_start = self._out_next = self._n_in
            return out
        if final:
            k_end = -(-self._n_in * up // down)  # ceil(n * up / down), resample_poly's length
        else:
            k_end = max(0, (self._n_in - self._margin) * up // down)
        if k_end <= self._out_next or len(self._buf) == 0:
            return np.zeros(0)
        y = resample_poly(self._buf, up, down)
        offset = self._buf_start * up // down  # exact: _buf_start is a multiple of down
        out = y[self._out_next - offset : k_end - offset]
        self._out_next = k_end
        keep_from = max(0, (self._out_next * down // up - self._margin) // down * down)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return out


def _mono(planar_or_interleaved: np.ndarray, path: Path) -> np.ndarray:
    """``[n, C]`` float32 -> ``[n]`` float64 mono, as :func:`teso.audio.load_audio` mixes down."""
    if not np.isfinite(planar_or_interleaved).all():
        raise TesoError(f"{path}: the audio contains NaN or infinite samples")
    return planar_or_interleaved.mean(axis=1, dtype=np.float64)


def _pyav_chunks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """``([n] float64 mono, native rate)`` per decoded chunk of the first audio stream."""
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable audio or video container ({exc})") from exc
    try:
        if not container.streams.audio:
            raise TesoError(f"{path}: the file has no audio stream (expected a container with audio)")
        stream = container.streams.audio[0]
        # Sample-format conversion only, as in teso.audio.io: FFmpeg never resamples.
        converter = av.AudioResampler(format="fltp")
        rate: int | None = None
        channels: int | None = None

        def emit(out: av.AudioFrame) -> tuple[np.ndarray, int]:
            nonlocal channels
            planar = out.to_ndarray()  # [C, n]
            if channels is None:
                channels = planar.shape[0]
            elif planar.shape[0] != channels:
                raise TesoError(
                    f"{path}: the channel count changes mid-stream ({channels}, {planar.shape[0]})"
                )
            return _mono(np.ascontiguousarray(planar.T, dtype=np.float32), path), rate

        try:
            for frame in container.decode(stream):
                if rate is None:
                    rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != rate:
                    raise TesoError(
                        f"{path}: the audio sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)"
                    )
                for out in converter.resample(frame):
                    yield emit(out)
            for out in converter.resample(None):
                yield emit(out)
        except av.error.FFmpegError as exc:
            raise TesoError(f"{path}: the audio stream is corrupt or truncated ({exc})") from exc
    finally:
        container.close()


def _soundfile_chunks(path: Path, block: int = 65536) -> Iterator[tuple[np.ndarray, int]]:
    _check_wav_complete(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    return
                yield _mono(data, path), rate
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable audio file ({exc})") from exc


class AudioStream:
    """The 16 kHz mono float32 samples of an audio file (or a video's audio track), read forward.

    ``samples(a, b)`` returns samples ``[a, b)`` (fewer at the end of the audio, none past it);
    requests may overlap but must not start before the previous one: what lies before is dropped.
    """

    def __init__(self, path: str | os.PathLike, target_sr: int = AUDIO_SAMPLE_RATE) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise TesoError(f"{self.path}: audio file not found")
        if self.path.suffix.lower() in SOUNDFILE_EXTENSIONS:
            self._chunks = _soundfile_chunks(self.path)
        else:
            self._chunks = _pyav_chunks(self.path)
        self.target_sr = target_sr
        self._resampler: StreamResampler | None = None
        self._parts: list[np.ndarray] = []
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # global index of _buf[0]
        self._ended = False
        self._any = False

    def _fill(self, until: int) -> None:
        while not self._ended and self._buf_start + len(self._buf) < until:
            try:
                mono, rate = next(self._chunks)
            except StopIteration:
                self._ended = True
                if self._resampler is not None:
                    self._append(self._resampler.finish())
                if not self._any:
                    raise TesoError(
                        f"{self.path}: the audio stream decodes to no samples (empty or truncated file)"
                    ) from None
                return
            self._any = self._any or len(mono) > 0
            if self._resampler is None:
                self._resampler = StreamResampler(rate, self.target_sr)
            self._append(self._resampler.push(mono))

    def _append(self, out: np.ndarray) -> None:
        if len(out):
            self._buf = np.concatenate([self._buf, out.astype(np.float32)])

    def samples(self, start: int, stop: int) -> np.ndarray:
        """``[n <= stop - start]`` float32 samples ``[start, stop)`` at ``target_sr``."""
        if start < self._buf_start:
            raise TesoError(f"AudioStream: samples from {start} were already dropped (reads go forward)")
        self._fill(stop)
        if start > self._buf_start:
            self._buf = self._buf[start - self._buf_start :]
            self._buf_start = start
        return self._buf[: stop - start].copy()

    def close(self) -> None:
        self._chunks.close()


@dataclass(frozen=True)
class VideoInput:
    """A checked input of ``teso predict``: a video file, or a frame folder and its audio file.

    Attributes:
        source: the video file or folder.
        audio: the file the audio is read from (the video itself, or the folder's wav).
        seconds: ``T``, the number of 1 fps frames.
        frames: the folder's image files in frame order (``None`` for a video file).
    """

    source: Path
    audio: Path
    seconds: int
    frames: tuple[Path, ...] | None = None


def probe_input(source: str | os.PathLike, audio: str | os.PathLike | None = None) -> VideoInput:
    """Check an input and count its seconds without decoding it (packets, image headers only).

    Raises:
        TesoError: what :func:`teso.video.read_video` / :func:`teso.video.read_frames` reject (no
            such file, no video or audio stream, truncated, shorter than one second, frames of
            different sizes), and a folder without its audio.
    """
    source = Path(source)
    if source.is_dir():
        wav = Path(audio) if audio else source / "audio.wav"
        if not wav.is_file():
            raise TesoError(
                f"{source}: a folder of frames needs its audio: pass --audio FILE or put audio.wav in it"
            )
        paths = list_image_frames(source)
        first = None
        for path in paths:
            try:
                with Image.open(path) as img:  # the header only: the pixels are decoded later
                    size = img.size
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise TesoError(f"{path}: not a readable image ({exc})") from exc
            if first is None:
                first = size
            elif size != first:
                raise TesoError(
                    f"{path}: frame size {size[0]}x{size[1]} differs from {paths[0].name} "
                    f"({first[0]}x{first[1]}); all frames of a clip must match"
                )
        return VideoInput(source, wav, len(paths), tuple(paths))
    if not source.exists():
        raise TesoError(f"{source}: no such video file or frame folder")
    info = probe_video(source)
    if not info.has_audio:
        raise TesoError(
            f"{source}: the file has no audio stream; teso predict needs the audio (or a frame folder "
            "and --audio FILE)"
        )
    return VideoInput(source, source, info.seconds)


class FrameStream:
    """The ``T`` 1 fps frames of a :class:`VideoInput`, decoded as windows ask for them.

    ``window(start, stop)`` returns ``[stop - start, H, W, 3]`` uint8; windows go forward and may
    overlap the one before. ``close()`` reads to the end of the video and checks that it held
    exactly ``T`` frames (the probe's count), so a file that decodes differently from its packets is
    an error, never a shifted clip.
    """

    def __init__(self, video: VideoInput) -> None:
        self.video = video
        self._meta: dict = {}
        if video.frames is None:
            self._iter, self._meta = iter_video_frames(video.source)
        else:
            self._iter = (read_image_rgb(p) for p in video.frames)
        self._buf: list[np.ndarray] = []
        self._buf_start = 0
        self._shape: tuple[int, ...] | None = None

    def _next(self) -> np.ndarray:
        index = self._buf_start + len(self._buf)
        try:
            frame = next(self._iter)
        except StopIteration:
            raise TesoError(
                f"{self.video.source}: decoded {index} frames, but its packets promised "
                f"{self.video.seconds} seconds"
            ) from None
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            name = self.video.frames[index].name if self.video.frames else f"frame {index}"
            raise TesoError(
                f"{self.video.source}: {name} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                f"{self._shape[1]}x{self._shape[0]}; all frames of a clip must match"
            )
        return frame

    def window(self, start: int, stop: int) -> np.ndarray:
        if start < self._buf_start or stop > self.video.seconds:
            raise TesoError(
                f"FrameStream: window [{start}, {stop}) is outside the frames still held "
                f"[{self._buf_start}, {self.video.seconds})"
            )
        while self._buf_start + len(self._buf) < stop:
            self._buf.append(self._next())
        del self._buf[: start - self._buf_start]
        self._buf_start = start
        return np.stack(self._buf[: stop - start])

    def finish(self) -> None:
        """After the last window: for a video file, decode to the end and check the frame count."""
        self._buf = []
        if self.video.frames is not None:
            return
        for _ in self._iter:  # the frames past T (if any) and the file's end-of-stream checks
            pass
        if self._meta.get("total") != self.video.seconds:
            raise TesoError(
                f"{self.video.source}: the frames decode to {self._meta.get('total')} seconds, but its "
                f"packets to {self.video.seconds}"
            )

    def close(self) -> None:
        """Drop the held frames and close the file (without reading further)."""
        self._buf = []
        self._iter.close()
