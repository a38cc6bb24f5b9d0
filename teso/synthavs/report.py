"""Figures of the demo report: mIoU per audio condition, and overlays under normal vs muted audio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from teso.utils.files import atomic_write


def bar_chart(
    models: dict[str, dict[str, dict[str, Any]]], path: Path, labels: dict[str, str], split: str = "test"
) -> Path:
    """Grouped bars: mIoU (%) per audio condition (groups) for each model (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    conds = list(next(iter(models.values())))
    x = np.arange(len(conds))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for i, name in enumerate(names):
        vals = [100 * models[name][c]["miou"] for c in conds]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=labels.get(name, name))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, conds)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"SynthAVS {split}: a model that listens must drop when the audio is taken away")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def _tile(img: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(img).resize((size, size), Image.NEAREST)


def overlay_grids(
    root: Path,
    checkpoints: dict[str, str],
    path: Path,
    heat_path: Path,
    clips: int = 2,
    size: int = 128,
    split: str = "test",
) -> tuple[Path, Path]:
    """Two pictures from one pass over the models. Rows: frame, ground truth, then each model under
    normal and muted audio; columns: the frames of the first ``clips`` clips of ``split``. ``path``:
    the thresholded masks; ``heat_path``: the pre-threshold sounding probability
    (:func:`teso.video.writer.heatmap`, the paper's Fig. J9 reading)."""
    from teso.audio import load_audio, mute, per_second_examples
    from teso.cues.features import TextFeatures
    from teso.data.avsbench import list_clips
    from teso.model import TeSOPredictor, load_checkpoint, sounding_maps
    from teso.video import read_frames
    from teso.video.writer import heatmap, overlay

    records = list_clips(root, ["v1m"], [split])[:clips]
    frames = [read_frames(r.clip_dir / "frames") for r in records]
    masks = [
        np.stack([np.asarray(Image.open(p).convert("RGB")).any(-1) for p in r.mask_paths]) for r in records
    ]
    waves = [load_audio(r.audio_path) for r in records]
    cols = [(c, t) for c in range(len(records)) for t in range(records[c].num_frames)]
    head: list[tuple[str, list[np.ndarray]]] = [
        ("frame", [frames[c][t] for c, t in cols]),
        ("ground truth", [overlay(frames[c][t], masks[c][t]) for c, t in cols]),
    ]
    mask_rows, heat_rows = list(head), list(head)
    for name, ckpt in checkpoints.items():
        model, extra = load_checkpoint(ckpt)
        data = (extra.get("experiment") or {}).get("data", {})
        feats = (
            TextFeatures.open(root, data.get("text_encoder", "minilm"), data.get("cues", "default"))
            if model.config.ablation.text
            else None
        )
        predictor = TeSOPredictor(model)
        for cond in ("normal", "mute"):
            mask_tiles, heat_tiles = [], []
            for c, r in enumerate(records):
                predictor.set_clip(frames[c])
                wave = waves[c] if cond == "normal" else mute(waves[c])
                audio = per_second_examples(wave, 16000, r.num_frames)
                text, count = feats.get(r.uid) if feats is not None else (None, None)
                probs = predictor.predict(audio, text, count, size=frames[c].shape[1:3])
                fg = sounding_maps(probs, model.config.num_classes)[0].numpy()
                mask_tiles += [overlay(frames[c][t], fg[t] > 0.5) for t in range(r.num_frames)]
                heat_tiles += [heatmap(frames[c][t], fg[t]) for t in range(r.num_frames)]
            mask_rows.append((f"{name} · {cond}", mask_tiles))
            heat_rows.append((f"{name} · {cond}", heat_tiles))
    return _grid(mask_rows, len(cols), size, path), _grid(heat_rows, len(cols), size, heat_path)


def _grid(rows: list[tuple[str, list[np.ndarray]]], columns: int, size: int, path: Path) -> Path:
    label_w = 150
    canvas = Image.new("RGB", (label_w + size * columns, size * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tiles) in enumerate(rows):
        draw.text((4, i * size + size // 2 - 6), label, fill="black")
        for j, tile in enumerate(tiles):
            canvas.paste(_tile(tile, size), (label_w + j * size, i * size))
    atomic_write(path, lambda p: canvas.save(p, format="PNG"))
    return path
