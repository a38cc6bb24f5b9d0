"""load_audio on files the tests write: wav/flac at several rates and formats, mp4/m4a/mp3 via PyAV,
and the documented errors for missing, empty, corrupt, truncated and audio-less files."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from teso.audio import load_audio, resample
from teso.errors import TesoError

TARGET = 16000


def sine(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_hz(x: np.ndarray, sr: int = TARGET) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sr)[spectrum.argmax()])


def write_av(
    path: Path,
    *,
    codec: str | None,
    rate: int = 44100,
    channels: int = 2,
    seconds: float = 2.0,
    freq: float = 1000.0,
    video: bool = True,
    options: dict[str, str] | None = None,
) -> None:
    """Write a container with PyAV: optional 64x48 H.264 video at 4 fps, optional audio of a sine."""
    container = av.open(str(path), mode="w", options=options or {})
    layout = "stereo" if channels == 2 else "mono"
    # every stream is added before the first packet is muxed (that writes the header)
    if video:
        vstream = container.add_stream("libx264", rate=4)
        vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
    if codec is not None:
        astream = container.add_stream(codec, rate=rate)
        astream.layout = layout
    if video:
        for i in range(int(seconds * 4)):
            image = np.full((48, 64, 3), 20 * i, dtype=np.uint8)
            for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
    if codec is not None:
        signal = sine(freq, rate, seconds).astype(np.float32)
        chunk = 4000  # PyAV re-chunks to the codec's frame size
        for start in range(0, len(signal), chunk):
            planes = np.ascontiguousarray(np.tile(signal[start : start + chunk], (channels, 1)))
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_rates_formats_channels(tmp_path, sr, subtype, channels):
    left = sine(440.0, sr, 1.0, amplitude=0.6)
    data = left[:, None] if channels == 1 else np.stack([left, left / 3.0], axis=1)  # mean: 0.4 amplitude
    path = tmp_path / f"a_{sr}_{subtype}_{channels}.wav"
    sf.write(path, data, sr, subtype=subtype)

    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == math.ceil(len(left) * TARGET / sr) == TARGET
    assert abs(dominant_hz(x) - 440.0) <= 1.0
    amplitude = 0.6 if channels == 1 else 0.4  # channels averaged, not summed or first-taken
    want = sine(440.0, TARGET, 1.0, amplitude=amplitude)
    tol = 0.02 if subtype == "PCM_U8" else 0.005
    interior = slice(400, -400)  # the resampling filter tapers the first and last few ms
    assert np.abs(x[interior] - want[interior]).max() < tol


def test_16k_pcm16_is_read_exactly(tmp_path):
    ints = np.array([0, 1, -1, 32767, -32768, 1234] * 100, dtype=np.int16)
    path = tmp_path / "exact.wav"
    sf.write(path, ints, TARGET, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path), ints.astype(np.float32) / 32768.0)


def test_flac_24bit_and_other_target_rate(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, sine(300.0, 48000, 1.5), 48000, subtype="PCM_24")
    x = load_audio(path, target_sr=8000)
    assert len(x) == 12000
    assert abs(dominant_hz(x, 8000) - 300.0) <= 1.0


def test_resample_exact_lengths_and_no_alias():
    x = sine(7000.0, 44100, 1.0)  # below the new Nyquist (8 kHz): kept
    y = resample(x.astype(np.float32), 44100, TARGET)
    assert y.dtype == np.float32 and len(y) == TARGET
    assert abs(dominant_hz(y) - 7000.0) <= 1.0
    assert abs(np.sqrt(np.mean(y[400:-400] ** 2)) - 0.5 / np.sqrt(2)) < 0.02
    assert len(resample(np.zeros(1001, np.float32), 22050, TARGET)) == math.ceil(1001 * 16000 / 22050)
    # tones above 8 kHz would fold into the mel range; the anti-aliasing filter must remove them
    for freq, min_db in ((9000.0, 25.0), (12000.0, 60.0)):
        z = sine(freq, 48000, 1.0).astype(np.float32)
        rms = np.sqrt(np.mean(resample(z, 48000, TARGET)[400:-400] ** 2))
        assert 20 * np.log10(rms / (0.5 / np.sqrt(2))) < -min_db
    with pytest.raises(TesoError, match="orig_sr"):
        resample(z, 0, TARGET)


def test_mp4_with_video_and_aac(tmp_path):
    path = tmp_path / "clip.mp4"
    write_av(path, codec="aac", rate=44100, channels=2, seconds=2.0, freq=1000.0)
    x = load_audio(path)
    # AAC pads its last frame (1024 samples = 23 ms at 44.1 kHz); priming is trimmed by FFmpeg
    assert 32000 <= len(x) <= 32000 + math.ceil(1024 * TARGET / 44100)
    assert abs(dominant_hz(x) - 1000.0) <= 2.0
    # the priming delay is removed: the decoded sine is in phase with the original
    want = sine(1000.0, TARGET, 2.0)
    assert np.abs(x[1000:30000] - want[1000:30000]).max() < 0.05


@pytest.mark.parametrize(
    "name, codec, rate, channels", [("a.m4a", "aac", 48000, 1), ("a.mp3", "mp3", 22050, 2)]
)
def test_audio_only_containers(tmp_path, name, codec, rate, channels):
    path = tmp_path / name
    write_av(path, codec=codec, rate=rate, channels=channels, seconds=1.5, freq=660.0, video=False)
    x = load_audio(path)
    assert abs(len(x) - 24000) <= math.ceil(1152 * TARGET / rate)
    assert abs(dominant_hz(x) - 660.0) <= 2.0
    assert abs(np.sqrt(np.mean(x[2000:-2000] ** 2)) - 0.5 / np.sqrt(2)) < 0.03


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(TesoError, match=r"nope\.wav: audio file not found"):
        load_audio(path)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(TesoError, match="expected an audio file"):
        load_audio(tmp_path)


@pytest.mark.parametrize("name", ["empty.wav", "empty.mp4"])
def test_zero_byte_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(TesoError, match=rf"{name}: the file is empty"):
        load_audio(path)


def test_wav_without_samples(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), TARGET)
    with pytest.raises(TesoError, match=r"nosamples\.wav: the file contains no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("name", ["junk.wav", "junk.flac", "junk.mp4", "junk.mp3"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(TesoError, match=rf"{name}: not a readable"):
        load_audio(path)


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, sine(440.0, TARGET, 1.0), TARGET, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TesoError, match=r"cut\.wav: truncated WAV file"):
        load_audio(path)


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, np.random.default_rng(1).standard_normal(TARGET) * 0.1, TARGET, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TesoError, match=r"cut\.flac: not a readable audio file"):
        load_audio(path)


def test_truncated_mp4_index_at_end(tmp_path):
    path = tmp_path / "cut.mp4"
    write_av(path, codec="aac")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the moov index sits at the end: it is lost
    with pytest.raises(TesoError, match=r"cut\.mp4: not a readable audio or video container"):
        load_audio(path)


def test_truncated_mp4_faststart(tmp_path):
    path = tmp_path / "cut_fs.mp4"
    write_av(path, codec="aac", seconds=3.0, options={"movflags": "faststart"})
    assert len(load_audio(path)) >= 48000
    data = path.read_bytes()
    for fraction in (0.3, 0.6, 0.9):
        cut = tmp_path / f"cut_fs_{fraction}.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        # the index survives; the sample data is cut: either a decode error or a short stream
        with pytest.raises(
            TesoError, match=rf"cut_fs_{fraction}\.mp4: (truncated|the audio stream is corrupt)"
        ):
            load_audio(cut)


def test_video_only_mp4(tmp_path):
    path = tmp_path / "silent_video.mp4"
    write_av(path, codec=None)
    with pytest.raises(TesoError, match=r"silent_video\.mp4: the file has no audio stream"):
        load_audio(path)


def test_non_finite_float_wav(tmp_path):
    path = tmp_path / "nan.wav"
    data = sine(440.0, TARGET, 0.5)
    data[100] = np.nan
    sf.write(path, data, TARGET, subtype="FLOAT")
    with pytest.raises(TesoError, match=r"nan\.wav: the audio contains NaN"):
        load_audio(path)


def test_bad_target_rate(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, sine(440.0, TARGET, 0.1), TARGET)
    with pytest.raises(TesoError, match="target_sr"):
        load_audio(path, target_sr=0)
