"""Frames at 1 fps from an mp4 or a folder of images, and the mp4's audio track.

Which frame stands for second ``t`` (video input)
    AVSBench extracted, for second ``t`` of a clip, the frame shown at about 15/16 of that second.
    :func:`read_frames` takes, for output frame ``k`` at rate ``fps``, the decoded frame **on screen**
    at ``(k + 15/16) / fps`` seconds: the last frame whose presentation time is at or before it (a
    frame is shown from its timestamp until the next one's). At ``fps = 1`` that is the frame on
    screen at ``t + 0.9375 s``; for a 1 fps mp4 it is frame ``t`` itself (the nearest-timestamp rule
    would take frame ``t + 1``, shifting the whole clip by a second). Times are compared as exact
    fractions of the stream's time base, so the choice is deterministic.

How many seconds ``T`` a video has
    The decoded video ends at ``end = pts(last frame) + duration(last frame)``; ``T = floor(end *
    fps)`` output frames (at 1 fps: the whole seconds of video). A video shorter than one second
    (``T = 0``) is an error. When the container declares a longer duration than the frames that
    actually decode, the file is truncated and that is an error too, never a shorter clip.

A folder of images
    Every ``.jpg/.jpeg/.png/.bmp/.webp`` file in it is one frame, ordered by the **last integer in
    the file name** (``0.jpg, 1.jpg, ..., 10.jpg``; ``name_1.png``; MS3's ``{video_id}.mp4_{k}.png``),
    not alphabetically. The folder is taken to be already at 1 fps.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from teso.errors import TesoError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# The fraction of a second at which AVSBench's preprocessing took its frame.
FRAME_PHASE = Fraction(15, 16)
AUDIO_SAMPLE_RATE = 16000
# Decoded frames may stop this far short of the declared duration before we call the file truncated:
# muxers round the last frame's duration, one frame or 50 ms is rounding, more is missing data.
_TRUNCATION_SLACK_S = Fraction(1, 20)

_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class VideoClip:
    """One decoded mp4.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB, one frame per second (see the module doc for which).
        audio: ``[N]`` float32 mono at ``sample_rate`` Hz (the whole track, as decoded; it is not
            cut or padded to ``T`` seconds — :func:`teso.audio.per_second_examples` does that).
        sample_rate: 16000.
        seconds: ``T``, the whole seconds of video.
        fps: the source video's average frame rate (frames per second of the file, not of ``frames``).
        path: the file read.
    """

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    seconds: int
    fps: float
    path: Path


def frame_index_from_name(name: str) -> int | None:
    """The last integer in a file name without its extension (``"vid.mp4_3.png" -> 3``), or None."""
    match = _LAST_INT.search(Path(name).stem)
    return int(match.group(1)) if match else None


def list_image_frames(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` in frame order (by the last integer in each name).

    Raises:
        TesoError: not a folder, no images, an image name without a number, or two images with the
            same number.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TesoError(f"{folder}: expected a folder of frame images")
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise TesoError(
            f"{folder}: no frame images found "
            f"(expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    numbered: dict[int, Path] = {}
    for path in images:
        index = frame_index_from_name(path.name)
        if index is None:
            raise TesoError(
                f"{path}: a frame image name must contain its frame number (e.g. 0.jpg, name_1.png)"
            )
        if index in numbered:
            raise TesoError(f"{path}: frame number {index} is also used by {numbered[index].name}")
        numbered[index] = path
    return [numbered[i] for i in sorted(numbered)]


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """One image file -> ``[H, W, 3]`` uint8 RGB. TesoError naming the file when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise TesoError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TesoError(f"{path}: not a readable image ({exc})") from exc


def _read_folder(folder: Path) -> np.ndarray:
    paths = list_image_frames(folder)
    frames = []
    for path in paths:
        rgb = read_image_rgb(path)
        if frames and rgb.shape != frames[0].shape:
            raise TesoError(
                f"{path}: frame size {rgb.shape[1]}x{rgb.shape[0]} differs from "
                f"{paths[0].name} ({frames[0].shape[1]}x{frames[0].shape[0]}); "
                "all frames of a clip must match"
            )
        frames.append(rgb)
    return np.stack(frames)


def _open_container(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise TesoError(f"{path}: video file not found")
    if not path.is_file():
        raise TesoError(f"{path}: expected a video file, found a directory or special file")
    if path.stat().st_size == 0:
        raise TesoError(f"{path}: the file is empty (0 bytes); expected an mp4 video")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise TesoError(
            f"{path}: not a readable video container; the file is truncated or corrupt ({exc})"
        ) from exc


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> Fraction | None:
    if stream.duration is not None and stream.time_base is not None:
        return Fraction(stream.duration) * stream.time_base
    if container.duration is not None:
        return Fraction(container.duration, av.time_base)
    return None


def _iter_selected(path: Path, fps: Fraction, meta: dict) -> Iterator[np.ndarray]:
    """Stream-decode the first video stream, yielding only the frames on screen at the target times.

    Yields ``[H, W, 3]`` uint8 frames for output frames ``0, 1, ...`` (possibly a few past ``T``: the
    number ``T`` is known only once the stream has ended, so a caller keeps the first
    ``meta["total"]``). When the generator is exhausted, ``meta`` holds ``total`` (``T``) and
    ``source_fps``; the truncation and length checks run then, so a caller must exhaust it.
    """
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise TesoError(f"{path}: the file has no video stream (expected an mp4 with video)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        meta["source_fps"] = float(rate) if rate else float("nan")
        nominal_step = Fraction(1) / Fraction(rate) if rate else None

        prev: tuple[Fraction, av.VideoFrame] | None = None
        k = 0  # next output frame to choose
        end: Fraction | None = None
        count = 0

        def target(i: int) -> Fraction:
            return (i + FRAME_PHASE) / fps

        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = Fraction(frame.pts) * time_base
                elif nominal_step is not None:
                    t = count * nominal_step
                else:
                    raise TesoError(f"{path}: video frames carry no timestamps and the stream no frame rate")
                count += 1
                step = Fraction(frame.duration) * time_base if frame.duration else nominal_step
                end = t + step if step is not None else t
                # Every target before this frame's timestamp was on screen with the previous frame.
                while prev is not None and target(k) < t:
                    yield prev[1].to_ndarray(format="rgb24")
                    k += 1
                prev = (t, frame)
        except av.error.FFmpegError as exc:
            raise TesoError(f"{path}: the video stream is corrupt or truncated ({exc})") from exc

        if prev is None or end is None:
            raise TesoError(f"{path}: the video stream decodes to no frames (empty or truncated file)")
        _check_declared(path, _declared_duration(container, stream), end, nominal_step)
        total = _seconds_of(path, end, fps)
        meta["total"] = total
        # The remaining targets (before ``end``) all fall on the last frame.
        last = None
        while k < total:
            if last is None:
                last = prev[1].to_ndarray(format="rgb24")
            yield last
            k += 1
    finally:
        container.close()


def _check_declared(
    path: Path, declared: Fraction | None, end: Fraction, nominal_step: Fraction | None
) -> None:
    slack = max(_TRUNCATION_SLACK_S, nominal_step or Fraction(0))
    if declared is not None and end + slack < declared:
        raise TesoError(
            f"{path}: the file is truncated: it declares {float(declared):.3f} s of video but frames "
            f"decode only up to {float(end):.3f} s"
        )


def _seconds_of(path: Path, end: Fraction, fps: Fraction) -> int:
    total = math.floor(end * fps)
    if total < 1:
        raise TesoError(
            f"{path}: the video is {float(end):.3f} s long; at least {float(1 / fps):.3f} s "
            f"(one output frame at {float(fps):g} fps) is needed"
        )
    return total


def _decode_selected(path: Path, fps: Fraction) -> tuple[np.ndarray, float]:
    """All selected frames at once: ``([T, H, W, 3] uint8, source fps)``."""
    meta: dict = {}
    picked = list(_iter_selected(path, fps, meta))
    return np.stack(picked[: meta["total"]]).astype(np.uint8, copy=False), meta["source_fps"]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from a file's packets, without decoding a frame.

    Attributes:
        seconds: ``T`` at 1 fps, by the rule of the module doc (``floor(end)``).
        has_audio: whether the file has an audio stream.
        source_fps: the video stream's average frame rate.
    """

    seconds: int
    has_audio: bool
    source_fps: float


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Check a video file and count its seconds from the packet timestamps (demuxing only).

    The same rules as :func:`read_frames` at 1 fps, applied to packets instead of decoded frames:
    ``end`` = the latest packet ``pts + duration``, and the declared durations of the video (and, in
    an mp4/mov, of the audio) must be there. Reading the packets is I/O only, so a long video is
    checked in a fraction of its decoding time and nothing is held in memory.

    Raises:
        TesoError: missing/empty/truncated/corrupt file, no video stream, shorter than one second.
    """
    path = Path(path)
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise TesoError(f"{path}: the file has no video stream (expected an mp4 with video)")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        nominal_step = Fraction(1) / Fraction(rate) if rate else None
        audio = container.streams.audio[0] if container.streams.audio else None
        indexed = bool({"mp4", "mov"} & set(container.format.name.split(",")))
        end: Fraction | None = None
        audio_span = Fraction(0)
        count = 0
        selected = [stream] if audio is None else [stream, audio]
        try:
            for packet in container.demux(selected):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.stream.index == stream.index:
                    if packet.pts is not None:
                        t = Fraction(packet.pts) * time_base
                    elif nominal_step is not None:
                        t = count * nominal_step
                    else:
                        raise TesoError(
                            f"{path}: video frames carry no timestamps and the stream no frame rate"
                        )
                    count += 1
                    step = Fraction(packet.duration) * time_base if packet.duration else nominal_step
                    stop = t + step if step is not None else t
                    end = stop if end is None else max(end, stop)
                elif packet.duration and packet.time_base is not None:
                    audio_span += Fraction(packet.duration) * packet.time_base
        except av.error.FFmpegError as exc:
            raise TesoError(f"{path}: the file is corrupt or truncated ({exc})") from exc
        if end is None:
            raise TesoError(f"{path}: the video stream decodes to no frames (empty or truncated file)")
        _check_declared(path, _declared_duration(container, stream), end, nominal_step)
        if audio is not None and indexed and audio.duration is not None and audio.time_base is not None:
            # The same rule as teso.audio.load_audio (slack: codec padding of up to two frames).
            declared = Fraction(audio.duration) * audio.time_base
            frame = Fraction(int(audio.codec_context.frame_size or 0), int(audio.rate or 1))
            if declared > 0 and audio_span < declared - max(Fraction(1, 10), 2 * frame):
                raise TesoError(
                    f"{path}: truncated audio stream: its packets hold {float(audio_span):.3f} s of the "
                    f"{float(declared):.3f} s the container declares"
                )
        return VideoInfo(
            seconds=_seconds_of(path, end, Fraction(1)),
            has_audio=audio is not None,
            source_fps=float(rate) if rate else float("nan"),
        )
    finally:
        container.close()


def iter_video_frames(path: str | os.PathLike) -> tuple[Iterator[np.ndarray], dict]:
    """The 1 fps frames of a video file one at a time: ``(iterator of [H, W, 3] uint8, meta)``.

    The iterator yields frames ``0, 1, ...`` as they decode (only the current and previous decoded
    frame are held) and may yield a few past ``T``; once exhausted, ``meta["total"]`` is ``T`` and
    the file's truncation checks have run. :func:`read_frames` is this, stacked.
    """
    meta: dict = {}
    return _iter_selected(Path(path), Fraction(1), meta), meta


def read_frames(source: str | os.PathLike, fps: float = 1.0) -> np.ndarray:
    """Frames of a video file or a folder of images as ``[T, H, W, 3]`` uint8 RGB.

    Video: ``T = floor(duration * fps)``; output frame ``k`` is the decoded frame on screen at
    ``(k + 15/16) / fps`` s — see the module doc. Folder: every
    image, ordered by the number in its name; ``fps`` must then be 1 (a folder is taken to be at
    1 fps already and is never resampled).

    Raises:
        TesoError: missing/empty/truncated/corrupt file, no video stream, shorter than ``1 / fps``
            s, an empty folder, unreadable images, or frames of different sizes.
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not fps > 0:
        raise TesoError(f"fps must be a positive number of frames per second, got {fps!r}")
    path = Path(source)
    if path.is_dir():
        if fps != 1:
            raise TesoError(
                f"{path}: a folder of frames is read as stored (1 frame per second); fps={fps!r} "
                "cannot be applied to it (pass fps=1)"
            )
        return _read_folder(path)
    return _decode_selected(path, Fraction(fps).limit_denominator(1_000_000))[0]


def read_video(path: str | os.PathLike) -> VideoClip:
    """An mp4 (or any container with video and audio) -> :class:`VideoClip` at 1 fps and 16 kHz.

    The frames come from :func:`read_frames` at 1 fps; the audio from
    :func:`teso.audio.load_audio` (16 kHz mono float32). ``read_video`` needs an audio stream —
    use :func:`read_frames` for a silent video.

    Raises:
        TesoError: missing, truncated or corrupt file, no video stream, no audio stream, shorter
            than one second.
    """
    from teso.audio import load_audio

    path = Path(path)
    if path.is_dir():
        raise TesoError(
            f"{path}: read_video needs a video file with audio; use read_frames for a folder of images"
        )
    container = _open_container(path)
    try:
        has_video = bool(container.streams.video)
        has_audio = bool(container.streams.audio)
    finally:
        container.close()
    if not has_video:
        raise TesoError(f"{path}: the file has no video stream (expected an mp4 with video and audio)")
    if not has_audio:
        raise TesoError(
            f"{path}: the file has no audio stream; read_video needs audio (use read_frames for video only)"
        )
    frames, source_fps = _decode_selected(path, Fraction(1))
    audio = load_audio(path, target_sr=AUDIO_SAMPLE_RATE)
    return VideoClip(
        frames=frames,
        audio=audio,
        sample_rate=AUDIO_SAMPLE_RATE,
        seconds=int(frames.shape[0]),
        fps=source_fps,
        path=path,
    )
