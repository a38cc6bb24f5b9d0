"""Decode any audio file to float32 mono at one sample rate.

Two decoders, one resampler:

* wav / flac / ogg / aiff / au / caf / w64 / rf64 go through **soundfile** (libsndfile), which
  returns every PCM width (8/16/24/32-bit int) and float already scaled to [-1, 1).
* everything else (mp3, mp4, m4a, mkv, webm, ...) goes through **PyAV** (bundled FFmpeg); decoded
  frames are converted to planar float32 at their *native* rate — FFmpeg only changes the sample
  format, never the rate.

Channels are mixed down by their mean, then the mono signal is resampled with
:func:`scipy.signal.resample_poly` (see :func:`resample` for why), so the result for the same
audio does not depend on which container carried it.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from teso.errors import TesoError

# Extensions libsndfile reads natively; mp3 is deliberately left to PyAV so that every lossy
# codec goes through the same FFmpeg decoder (decoder delay and padding handled one way).
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".snd", ".caf", ".w64", ".rf64"}
)


def _check_rate(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise TesoError(f"{name} must be a positive integer sample rate in Hz, got {value!r}")
    return int(value)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono waveform ``[N]`` (or a batch ``[B, N]``, along the last axis).

    The resampler is :func:`scipy.signal.resample_poly` with the exact rational ratio
    ``target_sr / orig_sr`` reduced by their gcd (e.g. 44.1 kHz -> 16 kHz is up 160 / down 441).
    Why this one: the ratio is exact (no drift over long clips), the polyphase FIR
    (Kaiser window, beta 5) low-passes at the new Nyquist so nothing aliases, it is deterministic
    and platform-independent, and it is applied after decoding so wav and mp4 inputs take the same
    path. The output has ``ceil(N * target_sr / orig_sr)`` samples.

    Returns float32 (float64 input stays float64).
    """
    orig_sr = _check_rate(orig_sr, "orig_sr")
    target_sr = _check_rate(target_sr, "target_sr")
    x = np.asarray(waveform)
    if not np.issubdtype(x.dtype, np.floating):
        raise TesoError(f"resample expects a floating-point waveform, got dtype {x.dtype}")
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    if orig_sr == target_sr:
        return x.astype(out_dtype, copy=False)
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    if x.shape[-1] == 0:
        return np.zeros(x.shape, dtype=out_dtype)
    y = resample_poly(x.astype(np.float64, copy=False), up, down, axis=-1)
    return y.astype(out_dtype, copy=False)


def _check_wav_complete(path: Path) -> None:
    """Raise when a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds.

    libsndfile reads such a file without complaint, just shorter; a cut-off download must not pass
    as a short clip. Streaming writers that leave the size at 0 or 0xFFFFFFFF are not judged.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size not in (0, 0xFFFFFFFF) and pos + 8 + chunk_size > size:
                    raise TesoError(
                        f"{path}: truncated WAV file: the data chunk declares {chunk_size} bytes, "
                        f"the file holds {size - pos - 8}"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    """Returns ``([N, C] float32, sample_rate)``."""
    _check_wav_complete(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable audio file ({exc})") from exc
    return data, int(sr)


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    """Returns ``([N, C] float32, sample_rate)`` from the first audio stream of a container."""
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise TesoError(f"{path}: not a readable audio or video container ({exc})") from exc
    chunks: list[np.ndarray] = []
    rate: int | None = None
    try:
        if not container.streams.audio:
            raise TesoError(f"{path}: the file has no audio stream (expected a container with audio)")
        stream = container.streams.audio[0]
        # Only the MP4/MOV demuxer takes durations from an index (exact); elsewhere (VBR mp3, ...)
        # FFmpeg may estimate them from the bitrate, which must not be mistaken for truncation.
        indexed = "mp4" in container.format.name.split(",") or "mov" in container.format.name.split(",")
        declared = (
            float(stream.duration * stream.time_base)
            if indexed and stream.duration is not None and stream.time_base is not None
            else None
        )
        frame_size = int(stream.codec_context.frame_size or 0)
        # Sample-format conversion only: rate and layout stay as decoded, so FFmpeg does no resampling.
        converter = av.AudioResampler(format="fltp")
        try:
            for frame in container.decode(stream):
                if rate is None:
                    rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != rate:
                    raise TesoError(
                        f"{path}: the audio sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)"
                    )
                for out in converter.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in converter.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise TesoError(f"{path}: the audio stream is corrupt or truncated ({exc})") from exc
    finally:
        container.close()
    if rate is None or not chunks:
        raise TesoError(f"{path}: the audio stream decodes to no samples (empty or truncated file)")
    channels = {c.shape[0] for c in chunks}
    if len(channels) != 1:
        raise TesoError(f"{path}: the channel count changes mid-stream ({sorted(channels)})")
    planar = np.concatenate(chunks, axis=1)  # [C, N]
    # An mp4 cut inside its sample data often decodes without any FFmpeg error, just shorter than its
    # index says; compare with the declared duration (slack: codec padding of up to two frames).
    if declared is not None and declared > 0:
        decoded = planar.shape[1] / rate
        slack = max(0.1, 2 * frame_size / rate)
        if decoded < declared - slack:
            raise TesoError(
                f"{path}: truncated audio stream: decoded {decoded:.3f} s of the {declared:.3f} s "
                "the container declares"
            )
    return np.ascontiguousarray(planar.T, dtype=np.float32), rate


def load_audio(path: str | os.PathLike, target_sr: int = 16000) -> np.ndarray:
    """Decode ``path`` to a float32 mono waveform ``[N]`` at ``target_sr`` Hz.

    Accepts wav/flac (soundfile) and mp3/mp4/m4a or any container with an audio stream (PyAV), at
    any sample rate, channel count and sample format (8/16/24/32-bit int or float). Integer PCM is
    scaled to [-1, 1) (divided by 2^(bits-1)); channels are averaged; the mono signal is resampled
    with :func:`resample` (scipy polyphase, exact rational ratio), the same path for every container.

    Raises:
        TesoError: missing file, unreadable or corrupt file, no audio stream, no samples, or
            non-finite samples — the message names ``path``.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    path = Path(path)
    if not path.exists():
        raise TesoError(f"{path}: audio file not found")
    if not path.is_file():
        raise TesoError(f"{path}: expected an audio file, found a directory or special file")
    if path.stat().st_size == 0:
        raise TesoError(f"{path}: the file is empty (0 bytes); expected audio")
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        data, sr = _read_soundfile(path)
    else:
        data, sr = _read_pyav(path)
    if data.shape[0] == 0:
        raise TesoError(f"{path}: the file contains no audio samples")
    if not np.isfinite(data).all():
        raise TesoError(f"{path}: the audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float64)
    return resample(mono, sr, target_sr).astype(np.float32, copy=False)
