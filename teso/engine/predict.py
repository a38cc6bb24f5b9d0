"""Segment the sounding objects of a video: an mp4, or a folder of frames plus a wav.

Frames at 1 fps and the audio of each second go through a trained checkpoint in windows of the
model's clip length that slide over longer videos; the outputs are a PNG mask per second, an overlay
mp4 that keeps the original audio, and a JSON summary (per second: sounding area, cues used).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from teso.audio import load_audio, per_second_examples
from teso.data.avsbench import FRAMES_PER_SUBSET, SAMPLE_RATE
from teso.errors import TesoError
from teso.model import TeSOPredictor, load_checkpoint, sounding_maps
from teso.utils.files import atomic_write, atomic_write_json
from teso.video import read_frames, read_video
from teso.video.writer import overlay, write_mp4


def load_input(source: str | Path, audio: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [S, H, W, 3] at 1 fps, mono float32 audio at 16 kHz) of an mp4 or a frame folder.

    A folder needs its audio: ``audio`` or an ``audio.wav`` inside the folder.
    """
    source = Path(source)
    if source.is_dir():
        wav = Path(audio) if audio else source / "audio.wav"
        if not wav.is_file():
            raise TesoError(
                f"{source}: a folder of frames needs its audio: pass --audio FILE or put audio.wav in it"
            )
        frames = read_frames(source)
        return frames, load_audio(wav)
    if not source.exists():
        raise TesoError(f"{source}: no such video file or frame folder")
    clip = read_video(source)
    return clip.frames, clip.audio


def windows(num_frames: int, length: int) -> list[tuple[int, int]]:
    """[start, end) windows of ``length`` covering ``num_frames``; the last one is shifted back to end
    at the last frame (overlapping the one before) so every window has the model's clip length."""
    if num_frames <= length:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - length + 1, length))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return [(s, s + length) for s in starts]


def read_cue_file(path: str | Path, num_frames: int) -> list[list[str]]:
    """Cues per second from JSON: ``[["man", "guitar"], [], ...]`` or ``{"cues": [...]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TesoError(f"{path}: cannot read the cue file ({err}); expected JSON [[cue, ...], ...]") from err
    if isinstance(data, dict):
        data = data.get("cues")
    if not isinstance(data, list) or not all(
        isinstance(c, list) and all(isinstance(w, str) for w in c) for c in data
    ):
        raise TesoError(f"{path}: expected a JSON list with one list of cue strings per second")
    if len(data) != num_frames:
        raise TesoError(f"{path}: cues for {len(data)} seconds, but the video has {num_frames}")
    return data


def predict_video(
    source: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    cues: list[list[str]] | None = None,
    encode_cues: Callable[[list[list[str]]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    audio: str | Path | None = None,
    threshold: float = 0.5,
    device: str = "cpu",
) -> dict[str, Any]:
    """Segment ``source`` with ``checkpoint`` into ``out_dir``; returns the JSON summary.

    ``cues`` (one list per second) are turned into [S, N_T, d_T] features by ``encode_cues``; both are
    required when the model takes text and ignored otherwise.
    """
    out_dir = Path(out_dir)
    frames, wave = load_input(source, audio)
    seconds = frames.shape[0]
    model, extra = load_checkpoint(checkpoint, map_location=device)
    cfg = model.config
    subset = ((extra.get("experiment") or {}).get("data") or {}).get("subset", "v1m")
    length = FRAMES_PER_SUBSET.get(subset, 5)
    logmel = per_second_examples(wave, SAMPLE_RATE, seconds)  # [S, 1, 96, 64]
    text = count = None
    if cfg.ablation.text:
        if cues is None or encode_cues is None:
            raise TesoError(f"{checkpoint}: this model takes text cues: pass --cues auto or --cues FILE")
        text, count = encode_cues(cues)
        if text.shape[0] != seconds:
            raise TesoError(f"cues: features for {text.shape[0]} seconds, but the video has {seconds}")
    predictor = TeSOPredictor(model)
    h, w = frames.shape[1:3]
    prob_sum = torch.zeros(seconds, h, w)
    hits = torch.zeros(seconds)
    kept: list[list[bool]] = [[] for _ in range(seconds)]
    for start, end in windows(seconds, length):
        predictor.set_clip(frames[start:end])
        out = predictor.predict_output(
            logmel[start:end],
            None if text is None else text[start:end],
            None if count is None else count[start:end],
        )
        for i, t in enumerate(range(start, end)):
            fg, _ = sounding_maps(out.frame_probs_at(0, i, (h, w)).float().cpu(), cfg.num_classes, threshold)
            prob_sum[t] += fg
            hits[t] += 1
            kept[t] = out.cue_keep[0, i].tolist()
    probs = prob_sum / hits[:, None, None]
    masks = (probs > threshold).numpy()

    for t in range(seconds):
        png = out_dir / "masks" / f"{t}.png"
        atomic_write(
            png, lambda p, m=masks[t]: Image.fromarray((m * 255).astype(np.uint8)).save(p, format="PNG")
        )
    write_mp4(
        out_dir / "overlay.mp4",
        np.stack([overlay(frames[t], masks[t]) for t in range(seconds)]),
        fps=1,
        audio=wave[: seconds * SAMPLE_RATE],
        sample_rate=SAMPLE_RATE,
    )
    per_second = []
    for t in range(seconds):
        used = (cues[t] if cues is not None else [])[: cfg.text.num_cues]
        per_second.append(
            {
                "second": t,
                "sounding_area": float(masks[t].mean()),
                "cues": used if cfg.ablation.text else [],
                "cues_kept": [c for c, k in zip(used, kept[t]) if k] if cfg.ablation.text else [],
            }
        )
    summary = {
        "source": str(source),
        "checkpoint": str(checkpoint),
        "seconds": seconds,
        "frame_size": [h, w],
        "window": length,
        "threshold": threshold,
        "masks": str(out_dir / "masks"),
        "overlay": str(out_dir / "overlay.mp4"),
        "per_second": per_second,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
