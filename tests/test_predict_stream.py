"""`teso predict` streams a video window by window; its outputs equal those of the whole clip.

The reference below decodes the whole video (read_video), computes every second's log-mel from the
whole waveform, encodes the cues of the whole clip in one batch and calls the model itself on each
window (on the whole clip when the clip is one window), averaging the overlap; then it writes the
overlay mp4 from the whole arrays with ``write_mp4`` (with predict's x264 settings). Streaming must
give the same mask PNGs byte for byte, the same summary, and an overlay mp4 whose encoded video and
audio packets are the same bytes (only the interleaving of the two streams in the file may differ).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from teso.audio import load_audio, per_second_examples
from teso.cues.features import build_clip_tensor
from teso.cues.text_encoders import build_text_encoder
from teso.engine.predict import predict_video, window_cue_encoder, windows
from teso.model import TeSOPredictor, build_teso, get_variant, save_checkpoint, sounding_maps
from teso.video import read_video
from teso.video.writer import LOW_LATENCY_X264, overlay, write_mp4

W, H = 40, 30
WORDS = ["man", "dog", "guitar", "piano", "car"]


def tiny_checkpoint(path: Path, subset: str = "v1m", seed: int = 0) -> Path:
    """A random `tiny` TeSO (32 px, 32-d `tiny` text cues) with its zero-initialised output layers
    perturbed so that every part shapes the masks; v1m: windows of 5 frames. The class head leans
    to "no object" (bias 3): a random model's queries otherwise sum to a probability of 1 everywhere."""
    torch.manual_seed(seed)
    config = get_variant("tiny", image_size=32, text_dim=32, num_classes=1)
    model = build_teso(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".up." in name or "out_proj" in name:
                param.normal_(std=0.2)
        model.foundation.m2f.class_predictor.bias.copy_(torch.tensor([0.0, 3.0]))
    extra = {"experiment": {"data": {"subset": subset}}, "text_features": {"encoder": "tiny"}}
    return save_checkpoint(model, path, extra=extra)


def painted_mp4(path: Path, seconds: int, fps: int = 4, rate: int = 44100, channels: int = 2) -> Path:
    """A video whose frames move (a bright square walking across noise) with a chirp on ``channels``
    channels at ``rate`` Hz: the streamed audio goes through resampling and the channel mix-down."""
    rng = np.random.default_rng(seconds)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": "18"}
        a = out.add_stream("aac", rate=rate)
        a.layout = "stereo" if channels == 2 else "mono"
        for i in range(seconds * fps):
            img = rng.integers(0, 80, (H, W, 3), dtype=np.uint8)
            x = (3 * i) % (W - 10)
            img[8:20, x : x + 10] = 230
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        n = seconds * rate
        t = np.arange(n) / rate
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
        planar = np.stack([wave, 0.5 * wave][:channels]).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 1024]),
                format="fltp",
                layout=a.layout.name,
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return path


def cues_for(seconds: int) -> list[list[str]]:
    return [[WORDS[t % 5], WORDS[(t * 2 + 1) % 5]][: 1 + t % 2] if t % 4 else [] for t in range(seconds)]


def reference(video: Path, ckpt: Path, cues: list[list[str]], length: int, whole: bool) -> dict:
    """Masks, summary rows and overlay frames + audio from the whole clip in memory. The threshold
    is the median probability, so that about half the pixels are sounding whatever the weights."""
    from teso.model import load_checkpoint

    clip = read_video(video)
    frames, wave, seconds = clip.frames, clip.audio, clip.seconds
    model, _ = load_checkpoint(ckpt)
    cfg = model.config
    logmel = per_second_examples(wave, 16000, seconds)
    text, count = build_clip_tensor(cues, build_text_encoder("tiny"), cfg.text.num_cues)
    h, w = frames.shape[1:3]
    prob_sum, hits = torch.zeros(seconds, h, w), torch.zeros(seconds)
    kept = [None] * seconds
    spans = [(0, seconds)] if whole else windows(seconds, length)
    with torch.no_grad():
        for start, end in spans:
            predictor = TeSOPredictor(model)
            predictor.set_clip(frames[start:end])
            out = predictor.predict_output(logmel[start:end], text[start:end], count[start:end])
            for i, t in enumerate(range(start, end)):
                fg, _ = sounding_maps(out.frame_probs_at(0, i, (h, w)).float(), cfg.num_classes, 0.5)
                prob_sum[t] += fg
                hits[t] += 1
                kept[t] = out.cue_keep[0, i].tolist()
    probs = prob_sum / hits[:, None, None]
    threshold = float(probs.median())
    masks = (probs > threshold).numpy()
    rows = [
        {
            "second": t,
            "sounding_area": float(masks[t].mean()),
            "cues": cues[t][: cfg.text.num_cues],
            "cues_kept": [c for c, k in zip(cues[t], kept[t]) if k],
        }
        for t in range(seconds)
    ]
    return {
        "masks": masks,
        "rows": rows,
        "overlays": np.stack([overlay(frames[t], masks[t]) for t in range(seconds)]),
        "audio": wave[: seconds * 16000],
        "threshold": threshold,
        "probs": probs.numpy(),
    }


def packets(path: Path) -> dict[str, list[tuple]]:
    """Every encoded packet of each stream: (pts, dts, bytes)."""
    with av.open(str(path)) as c:
        found: dict[str, list[tuple]] = {s.type: [] for s in c.streams}
        for p in c.demux():
            if p.size:
                found[p.stream.type].append((p.pts, p.dts, bytes(p)))
    return found


def png_bytes(mask: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def predict_tiny(video: Path, ckpt: Path, out: Path, cues: list[list[str]], threshold: float, **kw) -> dict:
    """``predict_video`` with the tiny checkpoint's 32-d text features (4 cue slots)."""
    encode = window_cue_encoder(cues, build_text_encoder("tiny"), 4)
    return predict_video(video, ckpt, out, cues=cues, encode_cues=encode, threshold=threshold, **kw)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.mark.parametrize(
    ("seconds", "whole"),
    [(5, True), (13, False)],
    ids=["one-window-whole-clip", "three-windows-last-shifted"],
)
def test_streamed_predict_equals_the_whole_clip(ckpt, tmp_path, seconds, whole):
    video = painted_mp4(tmp_path / "v.mp4", seconds)
    cues = cues_for(seconds)
    ref = reference(video, ckpt, cues, 5, whole)
    # The masks must not be trivial, or equality would say little; the windows overlap at 13 s.
    assert 0 < ref["masks"].mean() < 1 and len({m.tobytes() for m in ref["masks"]}) > 1
    if not whole:
        assert windows(seconds, 5) == [(0, 5), (5, 10), (8, 13)]
    out = tmp_path / "out"
    summary = predict_tiny(video, ckpt, out, cues, ref["threshold"])
    for t in range(seconds):
        assert (out / "masks" / f"{t}.png").read_bytes() == png_bytes(ref["masks"][t]), t
    assert summary["per_second"] == ref["rows"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (summary["seconds"], summary["frame_size"], summary["window"]) == (seconds, [H, W], 5)
    written = write_mp4(
        tmp_path / "ref.mp4", ref["overlays"], fps=1, audio=ref["audio"], options=LOW_LATENCY_X264
    )
    got, want = packets(out / "overlay.mp4"), packets(written)
    assert len(got["video"]) == seconds and len(got["audio"]) > seconds * 15
    assert got == want
    # The overlay's audio is the original audio (16 kHz, AAC): its loudness follows the source.
    decoded = load_audio(out / "overlay.mp4")
    assert abs(len(decoded) - seconds * 16000) <= 2048


def test_audio_shorter_than_the_video_is_silence_and_a_folder_streams_too(ckpt, tmp_path):
    """A frame folder with a wav that ends after 3 of 7 seconds: the later seconds get silence, as
    the whole-clip padding rule gives them (the reference pads the whole waveform)."""
    import soundfile as sf

    from teso.video import read_frames

    video = painted_mp4(tmp_path / "v.mp4", 7, rate=16000, channels=1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(read_frames(video)):
        Image.fromarray(frame).save(folder / f"{t}.png")
    wave = load_audio(video)[: 3 * 16000 + 100]
    sf.write(folder / "audio.wav", wave, 16000, subtype="FLOAT")
    cues = cues_for(7)
    # reference: whole frames, whole (short) waveform padded by per_second_examples
    from teso.model import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    frames = read_frames(folder)
    logmel = per_second_examples(wave, 16000, 7)
    text, count = build_clip_tensor(cues, build_text_encoder("tiny"), 4)
    prob_sum, hits = torch.zeros(7, H, W), torch.zeros(7)
    with torch.no_grad():
        for start, end in windows(7, 5):
            predictor = TeSOPredictor(model)
            predictor.set_clip(frames[start:end])
            out = predictor.predict_output(logmel[start:end], text[start:end], count[start:end])
            for i, t in enumerate(range(start, end)):
                prob_sum[t] += sounding_maps(out.frame_probs_at(0, i, (H, W)).float(), 1, 0.5)[0]
                hits[t] += 1
    probs = prob_sum / hits[:, None, None]
    # The median of the reference's own probabilities: a threshold that splits this random model's
    # maps whatever its initialisation (transformers releases draw other random weights).
    threshold = float(probs.median())
    masks = (probs > threshold).numpy()
    assert 0 < masks.mean() < 1
    summary = predict_video(
        folder,
        ckpt,
        tmp_path / "out",
        cues=cues,
        encode_cues=window_cue_encoder(cues, build_text_encoder("tiny"), 4),
        threshold=threshold,
    )
    for t in range(7):
        assert (tmp_path / "out" / "masks" / f"{t}.png").read_bytes() == png_bytes(masks[t])
    assert [s["sounding_area"] for s in summary["per_second"]] == [float(m.mean()) for m in masks]
    with av.open(str(tmp_path / "out" / "overlay.mp4")) as c:
        assert c.streams.video[0].frames == 7


def test_heatmap_writes_the_pre_threshold_probability_the_masks_come_from(ckpt, tmp_path):
    """``--heatmap``: every second's probability as 8-bit PNG (the reference's, window-averaged as the
    masks are) and a heat video; the masks are unchanged and nothing is written without it."""
    from teso.cli.main import main

    seconds = 7  # two windows, the last shifted back: the heat map averages the overlap
    video = painted_mp4(tmp_path / "v.mp4", seconds)
    cues = cues_for(seconds)
    ref = reference(video, ckpt, cues, 5, False)
    out = tmp_path / "out"
    summary = predict_tiny(video, ckpt, out, cues, ref["threshold"], heatmap=True)
    assert summary["heatmaps"] == str(out / "heatmaps") and summary["heatmap_video"] == str(
        out / "heatmap.mp4"
    )
    for t in range(seconds):
        assert (out / "masks" / f"{t}.png").read_bytes() == png_bytes(ref["masks"][t]), t
        grey = np.asarray(Image.open(out / "heatmaps" / f"{t}.png"))
        assert grey.shape == (H, W) and grey.dtype == np.uint8
        # 8-bit rounding moves a probability by at most half a step; the model's float sums may
        # differ from the reference's in the last bits, which can flip a value sitting on a .5 step.
        assert np.abs(grey / 255.0 - ref["probs"][t]).max() <= 0.5 / 255 + 1e-6, t
    assert len({(out / "heatmaps" / f"{t}.png").read_bytes() for t in range(seconds)}) > 1
    assert len(packets(out / "heatmap.mp4")["video"]) == seconds
    # The heat frame is the frame where the probability is 0; at 1 it is 70 % white (the default
    # alpha), 30 % frame: 0.3 · 100 + 0.7 · 255 = 208.5, truncated to 208.
    from teso.video.writer import heatmap

    frame = np.full((2, 2, 3), 100, np.uint8)
    hot = heatmap(frame, np.array([[0.0, 1.0], [0.5, 0.2]]))
    assert (hot[0, 0] == 100).all() and tuple(hot[0, 1]) == (208, 208, 208)
    assert hot[1, 0, 0] > hot[1, 0, 2]  # half way: red before blue
    plain = tmp_path / "plain"
    cue_file = tmp_path / "cues.json"
    cue_file.write_text(json.dumps({"cues": cues}))
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--cues", str(cue_file), "--out", str(plain)]
    assert main([*argv, "--threshold", str(ref["threshold"])]) == 0
    assert not (plain / "heatmaps").exists() and not (plain / "heatmap.mp4").exists()
    assert json.loads((plain / "summary.json").read_text())["heatmaps"] is None
