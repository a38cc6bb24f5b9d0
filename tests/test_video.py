"""Video reading: mp4s written with PyAV in the test, folders of frames, and the documented errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from teso.errors import TesoError
from teso.video import frame_index_from_name, list_image_frames, read_frames, read_video

W, H = 64, 48


def _painted(i: int, fps: int) -> np.ndarray:
    """Frame ``i``: left half encodes its second, right half its index within that second."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (20 + 40 * (i // fps)) % 256  # wraps after 6 s (only short clips decode it)
    img[:, W // 2 :] = 10 * (i % fps)
    return img


def write_mp4(
    path: Path,
    seconds: float = 3.5,
    fps: int = 24,
    video: bool = True,
    audio: bool = True,
    faststart: bool = False,
    freq: float = 440.0,
) -> Path:
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        if video:
            vstream = out.add_stream("libx264", rate=fps)
            vstream.width, vstream.height, vstream.pix_fmt = W, H, "yuv420p"
            vstream.options = {"crf": "10"}
        if audio:
            astream = out.add_stream("aac", rate=16000)
            astream.layout = "mono"
        if video:
            for i in range(int(round(seconds * fps))):
                for packet in vstream.encode(av.VideoFrame.from_ndarray(_painted(i, fps), format="rgb24")):
                    out.mux(packet)
            for packet in vstream.encode():
                out.mux(packet)
        if audio:
            n = int(seconds * 16000)
            wave = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / 16000)).astype(np.float32)
            for start in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(
                    wave[None, start : start + 1024], format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, start
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4")


def _decode_painted(frames: np.ndarray) -> list[tuple[int, int]]:
    """(second, index within second) painted into each returned frame."""
    left = frames[:, :, : W // 2].astype(float).mean(axis=(1, 2, 3))
    right = frames[:, :, W // 2 :].astype(float).mean(axis=(1, 2, 3))
    return [(int(round((a - 20) / 40)), int(round(b / 10))) for a, b in zip(left, right)]


def test_read_frames_takes_the_frame_on_screen_at_15_16_of_each_second(mp4):
    frames = read_frames(mp4)
    # 3.5 s -> T = 3; (t + 15/16) s * 24 fps = frame 22.5 of the second: frame 22 is on screen.
    assert frames.shape == (3, H, W, 3) and frames.dtype == np.uint8
    assert _decode_painted(frames) == [(0, 22), (1, 22), (2, 22)]


def test_read_frames_at_other_rates(mp4):
    two = read_frames(mp4, fps=2)
    # T = floor(3.5 * 2) = 7; frame k at (k + 15/16) / 2 s:
    # 0.469 s -> frame 11.25 -> 11, 0.969 s -> frame 23.25 -> 23.
    assert two.shape[0] == 7
    assert _decode_painted(two) == [(0, 11), (0, 23), (1, 11), (1, 23), (2, 11), (2, 23), (3, 11)]
    # At 25 fps the target 0.9375 s is frame 23.4 -> 23: no tie.
    assert _decode_painted(
        read_frames(write_mp4(mp4.parent / "25.mp4", seconds=2.2, fps=25, audio=False))
    ) == [
        (0, 23),
        (1, 23),
    ]


def test_a_one_fps_video_gives_each_second_its_own_frame(mp4):
    # At 1 fps frame t is on screen from t to t + 1 s, so second t is frame t; the nearest-timestamp
    # rule would pick frame t + 1 (0.0625 s away) and shift the clip by one second.
    one = write_mp4(mp4.parent / "1fps.mp4", seconds=4, fps=1, audio=False)
    assert [second for second, _ in _decode_painted(read_frames(one))] == [0, 1, 2, 3]


def test_read_video(mp4):
    clip = read_video(mp4)
    assert clip.seconds == 3 and clip.sample_rate == 16000 and clip.fps == pytest.approx(24.0)
    assert clip.path == mp4
    np.testing.assert_array_equal(clip.frames, read_frames(mp4))
    assert clip.audio.dtype == np.float32 and abs(len(clip.audio) - 56000) <= 1024
    spectrum = np.abs(np.fft.rfft(clip.audio[4000:36000]))
    assert np.argmax(spectrum) * 16000 / 32000 == pytest.approx(440, abs=1)
    assert 0.25 < np.abs(clip.audio[4000:36000]).max() < 0.35


def test_folder_of_frames_sorted_by_number(tmp_path):
    for name_of in (lambda k: f"{k}.png", lambda k: f"clip_{k}.png", lambda k: f"vid9.mp4_{k + 1}.png"):
        folder = tmp_path / name_of(0).replace(".", "_")
        folder.mkdir()
        for k in range(12):  # 12 frames: "10" sorts before "2" alphabetically
            Image.fromarray(np.full((8, 10, 3), 10 * k, np.uint8)).save(folder / name_of(k))
        frames = read_frames(folder)
        assert frames.shape == (12, 8, 10, 3)
        assert frames[:, 0, 0, 0].tolist() == [10 * k for k in range(12)]
    assert frame_index_from_name("vid9.mp4_3.png") == 3 and frame_index_from_name("x.png") is None


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TesoError, match="empty: no frame images found"):
        read_frames(empty)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(folder / "0.jpg")
    Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(folder / "1.jpg")
    with pytest.raises(TesoError, match=r"1\.jpg: frame size 10x9 differs from 0\.jpg \(10x8\)"):
        read_frames(folder)
    with pytest.raises(TesoError, match="fps=2"):
        read_frames(folder, fps=2)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(folder / "a_1.png")
    with pytest.raises(TesoError, match="frame number 1 is also used"):
        list_image_frames(folder)
    (folder / "a_1.png").unlink()
    (folder / "1.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(TesoError, match=r"1\.jpg: not a readable image"):
        read_frames(folder)
    with pytest.raises(TesoError, match="use read_frames"):
        read_video(folder)


def test_truncated_mp4(mp4, tmp_path):
    data = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov atom at the end is lost
    with pytest.raises(TesoError, match=r"cut\.mp4: not a readable video container; the file is truncated"):
        read_frames(cut)
    with pytest.raises(TesoError, match=r"cut\.mp4"):
        read_video(cut)
    fast = write_mp4(tmp_path / "fast.mp4", faststart=True)  # index first: the frame data is cut instead
    cut_fast = tmp_path / "cut_fast.mp4"
    cut_fast.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    with pytest.raises(TesoError, match=r"cut_fast\.mp4: the file is truncated: it declares 3\.500 s"):
        read_frames(cut_fast)


def test_missing_streams_and_short_videos(tmp_path):
    silent = write_mp4(tmp_path / "silent.mp4", audio=False)
    assert read_frames(silent).shape == (3, H, W, 3)
    with pytest.raises(TesoError, match=r"silent\.mp4: the file has no audio stream.*read_frames"):
        read_video(silent)
    audio_only = write_mp4(tmp_path / "sound.m4a", video=False)
    with pytest.raises(TesoError, match=r"sound\.m4a: the file has no video stream"):
        read_frames(audio_only)
    with pytest.raises(TesoError, match=r"sound\.m4a: the file has no video stream"):
        read_video(audio_only)
    short = write_mp4(tmp_path / "short.mp4", seconds=0.5)
    with pytest.raises(TesoError, match=r"short\.mp4: the video is 0\.500 s long"):
        read_video(short)
    with pytest.raises(TesoError, match=r"nothere\.mp4: video file not found"):
        read_frames(tmp_path / "nothere.mp4")
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(TesoError, match=r"zero\.mp4: the file is empty"):
        read_video(tmp_path / "zero.mp4")
    with pytest.raises(TesoError, match="fps"):
        read_frames(silent, fps=0)


# ----- streaming readers (teso predict) ---------------------------------------------------------


def test_stream_resampler_equals_resampling_the_whole_signal():
    """Pieces of any size give the samples of teso.audio.io.resample (scipy resample_poly over the
    whole signal) bit for bit: see teso.video.stream for why that holds."""
    from teso.audio.io import resample
    from teso.video.stream import StreamResampler

    rng = np.random.default_rng(0)
    for rate in (8000, 11025, 16000, 22050, 44100, 48000):
        x = rng.standard_normal(rate * 3 + 123)
        whole = resample(x, rate, 16000)
        for piece in (333, 1024, 4096, 10**6):
            rs = StreamResampler(rate, 16000)
            parts = [rs.push(x[i : i + piece]) for i in range(0, len(x), piece)] + [rs.finish()]
            np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"{rate} Hz, {piece}")


def _stereo_mp4(path: Path, rate: int, seconds: float = 3.3) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=5)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a = out.add_stream("aac", rate=rate)
        a.layout = "stereo"
        for i in range(int(seconds * 5)):
            for packet in vs.encode(av.VideoFrame.from_ndarray(_painted(i, 5), format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        planar = np.stack([np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 700 * t)]).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return path


def test_audio_stream_equals_load_audio(mp4, tmp_path):
    import soundfile as sf

    from teso.audio import load_audio
    from teso.video.stream import AudioStream

    wav = tmp_path / "a.wav"
    rng = np.random.default_rng(1)
    sf.write(
        wav, (0.2 * rng.standard_normal((48000 * 2 + 77, 2))).astype(np.float32), 48000, subtype="PCM_24"
    )
    for path in (
        mp4,
        _stereo_mp4(tmp_path / "s44.mp4", 44100),
        _stereo_mp4(tmp_path / "s48.mp4", 48000),
        wav,
    ):
        whole = load_audio(path)
        stream = AudioStream(path)
        # forward reads, overlapping ones, and one past the end
        got = [stream.samples(0, 7000), stream.samples(5000, 16000), stream.samples(16000, 10**7)]
        stream.close()
        np.testing.assert_array_equal(got[0], whole[:7000], err_msg=str(path))
        np.testing.assert_array_equal(got[1], whole[5000:16000], err_msg=str(path))
        np.testing.assert_array_equal(got[2], whole[16000:], err_msg=str(path))
    stream = AudioStream(mp4)
    stream.samples(16000, 17000)
    with pytest.raises(TesoError, match="already dropped"):
        stream.samples(0, 100)


def test_probe_and_frame_stream_agree_with_read_frames(mp4, tmp_path):
    from teso.video.stream import FrameStream, probe_input

    videos = [
        mp4,
        write_mp4(tmp_path / "25.mp4", seconds=2.2, fps=25),
        write_mp4(tmp_path / "1.mp4", seconds=4, fps=1),
        write_mp4(tmp_path / "long.mp4", seconds=13.5, fps=3),
    ]
    for video in videos:
        whole = read_frames(video)
        info = probe_input(video)
        assert info.seconds == len(whole), video
        stream = FrameStream(info)
        spans = [(0, 1)] if len(whole) < 5 else [(0, 5), (5, 10), (8, 13)]
        for start, stop in spans:
            np.testing.assert_array_equal(stream.window(start, stop), whole[start:stop])
        stream.finish()
    with pytest.raises(TesoError, match="outside the frames still held"):
        stream.window(0, 5)


def test_probe_input_errors(mp4, tmp_path):
    from teso.video.stream import probe_input

    silent = write_mp4(tmp_path / "silent.mp4", audio=False)
    with pytest.raises(TesoError, match=r"silent\.mp4: the file has no audio stream; teso predict needs"):
        probe_input(silent)
    with pytest.raises(TesoError, match=r"short\.mp4: the video is 0\.500 s long"):
        probe_input(write_mp4(tmp_path / "short.mp4", seconds=0.5))
    fast = write_mp4(tmp_path / "fast.mp4", faststart=True)
    cut = tmp_path / "cut_fast.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    with pytest.raises(TesoError, match=r"cut_fast\.mp4: the file is truncated: it declares 3\.500 s"):
        probe_input(cut)
    with pytest.raises(TesoError, match="no such video file or frame folder"):
        probe_input(tmp_path / "none.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(folder / "0.png")
    with pytest.raises(TesoError, match="needs its audio"):
        probe_input(folder)
    (folder / "audio.wav").write_bytes(b"")
    Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(folder / "1.png")
    with pytest.raises(TesoError, match=r"1\.png: frame size 10x9 differs from 0\.png \(10x8\)"):
        probe_input(folder)
