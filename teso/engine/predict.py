"""Segment the sounding objects of a video: an mp4, or a folder of frames plus a wav.

Frames at 1 fps and the audio of each second go through a trained checkpoint in windows of the
model's clip length that slide over longer videos; the outputs are a PNG mask per second, an overlay
mp4 that keeps the original audio, and a JSON summary (per second: sounding area, cues used).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from teso.audio import per_second_examples
from teso.cues.features import build_clip_tensor, cue_sentence
from teso.cues.slots import seen_cues
from teso.data.avsbench import FRAMES_PER_SUBSET, SAMPLE_RATE
from teso.errors import TesoError
from teso.model import TeSOPredictor, load_checkpoint, sounding_maps
from teso.utils.files import atomic_write, atomic_write_json
from teso.utils.memory import pin_mmap_threshold
from teso.video.stream import AudioStream, FrameStream, probe_input
from teso.video.writer import LOW_LATENCY_X264, Mp4Writer, heatmap, overlay


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


def window_cue_encoder(
    cues: list[list[str]], encoder, n_t: int
) -> Callable[[list[list[str]]], tuple[torch.Tensor, torch.Tensor]]:
    """``encode_cues`` for :func:`predict_video`: one window's cues -> ``([L, n_t, d_T], [L])``.

    Every distinct cue of the video is encoded once, up front, in one batch — the batch
    :func:`~teso.cues.features.build_clip_tensor` would make for the whole clip — so a window's
    features are those of the whole clip bit for bit (a transformer encoder pads a batch to its
    longest sentence, and another batch could move the features in the last float bits). The
    cache holds one ``[d_T]`` vector per distinct cue, not per second.
    """
    cache: dict[str, torch.Tensor] = {}
    todo = sorted({cue_sentence(c) for frame in cues for c in seen_cues(frame, n_t)})
    if todo:
        for sent, vec in zip(todo, encoder.encode(todo)):
            cache[sent] = vec.float()
    return lambda window: build_clip_tensor(window, encoder, n_t, cache)


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
    foundations: Sequence[str | Path] = (),
    heatmap: bool = False,
) -> dict[str, Any]:
    """Segment ``source`` with ``checkpoint`` into ``out_dir``; returns the JSON summary.

    ``heatmap``: also write the pre-threshold sounding probability of every second (the paper's
    Fig. J9 reading): ``heatmaps/T.png`` (8-bit grey, round(255 · p), p averaged over the windows
    exactly as the mask's) and ``heatmap.mp4`` (:func:`teso.video.writer.heatmap` over the frame,
    with the audio).

    ``foundations``: folders to look in first for a small checkpoint's frozen foundations
    (:mod:`teso.model.foundation_sources`).

    The video is streamed: for each window of the model's clip length (:func:`windows`) its frames
    and audio are decoded, it is segmented, and every second no later window covers is written (mask
    PNG, overlay frame into the mp4 encoder, its audio) and dropped. What stays in memory is the
    current window (frames, probability maps of the seconds still pending) and the per-second
    summaries, so memory does not grow with the video's length.

    ``cues`` (one list per second) are turned into ``([L, N_T, d_T], [L])`` features by
    ``encode_cues``, one window's cues at a time; both are required when the model takes text and
    ignored otherwise. On glibc it pins the process's mmap threshold
    (:func:`teso.utils.memory.pin_mmap_threshold`): large buffers are returned to the OS when freed.
    """
    out_dir = Path(out_dir)
    pin_mmap_threshold()  # per-window buffers go back to the OS: a flat peak over any length
    video = probe_input(source, audio)
    seconds = video.seconds
    model, extra = load_checkpoint(checkpoint, map_location=device, foundations=foundations)
    cfg = model.config
    subset = ((extra.get("experiment") or {}).get("data") or {}).get("subset", "v1m")
    length = FRAMES_PER_SUBSET.get(subset, 5)
    if cfg.ablation.text:
        if cues is None or encode_cues is None:
            raise TesoError(f"{checkpoint}: this model takes text cues: pass --cues auto or --cues FILE")
        if len(cues) != seconds:
            raise TesoError(f"cues: {len(cues)} seconds of cues, but the video has {seconds}")
    predictor = TeSOPredictor(model)
    plan = windows(seconds, length)
    frames_in = FrameStream(video)
    sound = AudioStream(video.audio)
    # Seconds segmented but not yet written: a later window may still cover them (the last one is
    # shifted back). t -> [sum of probability maps, windows that covered it, frame, cues kept].
    pending: dict[int, list] = {}
    per_second: list[dict[str, Any]] = []
    size: tuple[int, int] | None = None
    mp4 = Mp4Writer(
        out_dir / "overlay.mp4", fps=1, audio=True, sample_rate=SAMPLE_RATE, options=LOW_LATENCY_X264
    )
    heat = (
        Mp4Writer(
            out_dir / "heatmap.mp4", fps=1, audio=True, sample_rate=SAMPLE_RATE, options=LOW_LATENCY_X264
        )
        if heatmap
        else None
    )
    try:
        for w, (start, end) in enumerate(plan):
            frames = frames_in.window(start, end)
            if size is None:
                size = (int(frames.shape[1]), int(frames.shape[2]))
            wave = sound.samples(start * SAMPLE_RATE, end * SAMPLE_RATE)
            if len(wave) == 0:
                # The audio ended before this window: its seconds are silence, as the whole-clip
                # padding rule of per_second_examples makes them.
                wave = np.zeros((end - start) * SAMPLE_RATE, np.float32)
            logmel = per_second_examples(wave, SAMPLE_RATE, end - start)  # [L, 1, 96, 64]
            text = count = None
            if cfg.ablation.text:
                text, count = encode_cues(cues[start:end])
                if text.shape[0] != end - start:
                    raise TesoError(
                        f"cues: features for {text.shape[0]} seconds, but the window has {end - start}"
                    )
            predictor.set_clip(frames)
            out = predictor.predict_output(logmel, text, count)
            for i, t in enumerate(range(start, end)):
                fg, _ = sounding_maps(
                    out.frame_probs_at(0, i, size).float().cpu(), cfg.num_classes, threshold
                )
                if t in pending:
                    pending[t][0] = pending[t][0] + fg
                    pending[t][1] += 1
                else:
                    pending[t] = [fg, 1, frames[i], None]
                pending[t][3] = out.cue_keep[0, i].tolist()
            done_until = plan[w + 1][0] if w + 1 < len(plan) else seconds
            for t in sorted(k for k in pending if k < done_until):
                prob_sum, hits, frame, kept = pending.pop(t)
                prob = prob_sum / hits
                mask = (prob > threshold).numpy()
                per_second.append(_write_second(out_dir, mp4, sound, t, frame, mask, cues, kept, cfg))
                if heat is not None:
                    _write_heatmap(out_dir, heat, sound, t, frame, prob.numpy())
            del frames, out
        frames_in.finish()
        mp4.close()
        if heat is not None:
            heat.close()
    except BaseException:
        mp4.abort()
        if heat is not None:
            heat.abort()
        raise
    finally:
        sound.close()
        frames_in.close()
    summary = {
        "source": str(source),
        "checkpoint": str(checkpoint),
        "seconds": seconds,
        "frame_size": list(size),
        "window": length,
        "threshold": threshold,
        "masks": str(out_dir / "masks"),
        "overlay": str(out_dir / "overlay.mp4"),
        "heatmaps": str(out_dir / "heatmaps") if heatmap else None,
        "heatmap_video": str(out_dir / "heatmap.mp4") if heatmap else None,
        "per_second": per_second,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _write_heatmap(
    out_dir: Path, mp4: Mp4Writer, sound: AudioStream, t: int, frame: np.ndarray, prob: np.ndarray
) -> None:
    """Second ``t``'s probability map [H, W] as an 8-bit PNG and as a heat frame (+ audio) of the mp4."""
    grey = np.rint(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8)
    atomic_write(out_dir / "heatmaps" / f"{t}.png", lambda p: Image.fromarray(grey).save(p, format="PNG"))
    mp4.add_frame(heatmap(frame, prob))
    mp4.add_audio(sound.samples(t * SAMPLE_RATE, (t + 1) * SAMPLE_RATE))


def _write_second(
    out_dir: Path,
    mp4: Mp4Writer,
    sound: AudioStream,
    t: int,
    frame: np.ndarray,
    mask: np.ndarray,
    cues: list[list[str]] | None,
    kept: list[bool],
    cfg,
) -> dict[str, Any]:
    """Write second ``t`` (its mask PNG, its overlay frame and audio into the mp4); its summary."""
    atomic_write(
        out_dir / "masks" / f"{t}.png",
        lambda p: Image.fromarray((mask * 255).astype(np.uint8)).save(p, format="PNG"),
    )
    mp4.add_frame(overlay(frame, mask))
    mp4.add_audio(sound.samples(t * SAMPLE_RATE, (t + 1) * SAMPLE_RATE))
    used = seen_cues(cues[t] if cues is not None else [], cfg.text.num_cues)
    return {
        "second": t,
        "sounding_area": float(mask.mean()),
        "cues": used if cfg.ablation.text else [],
        "cues_kept": [c for c, k in zip(used, kept) if k] if cfg.ablation.text else [],
    }
