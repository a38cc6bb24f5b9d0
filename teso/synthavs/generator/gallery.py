"""The README pictures of SynthAVS: frames with their masks, and a spectrogram of every category."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from teso.utils.files import atomic_write


def frames_figure(root: Path, path: Path, clips_per_subset: int = 2) -> Path:
    """Rows of clips (v1s, v1m, v2 test): each frame over its ground-truth overlay, with a caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from teso.data.avsbench import list_clips
    from teso.video.writer import overlay

    rows = []
    for subset in ("v1s", "v1m", "v2"):
        rows += [c for c in list_clips(root, [subset], ["test"])][:clips_per_subset]
    cols = 5
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(cols * 1.6, 2 * len(rows) * 1.75), dpi=100)
    for r, clip in enumerate(rows):
        truth = json.loads((clip.clip_dir / "truth.json").read_text())
        for t in range(cols):
            frame = np.asarray(Image.open(clip.frame_paths[t]).convert("RGB"))
            mask = np.asarray(Image.open(clip.mask_paths[t]).convert("RGB")).any(-1)
            sounding = [o["category"] for o in truth["objects"] if o["sounding"][t]]
            axes[2 * r, t].imshow(frame)
            axes[2 * r, t].set_title(f"{clip.label} t={t}", fontsize=6)
            axes[2 * r + 1, t].imshow(overlay(frame, mask))
            axes[2 * r + 1, t].set_title(", ".join(sounding) or "(silent)", fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("SynthAVS test clips: frames (top) and the sounding objects' masks (red)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def sounds_figure(path: Path, seed: int = 0, version: int = 1) -> Path:
    """The VGGish log-mel of two seconds of every audible category (what the audio encoder sees).

    ``version`` 2 draws each object's voice from its family's pool (``family_voice``) and orders the
    panels by family, so the figure shows what v2 builds in: family members sound alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from teso.audio import log_mel_spectrogram
    from teso.synthavs.generator.categories import AUDIBLE, FAMILIES, FAMILY_OF
    from teso.synthavs.generator.sounds import family_voice, object_voice, sounding_second

    rng = np.random.default_rng(seed)
    voice_of = family_voice if version == 2 else object_voice
    # v2: one column per family, its two members one above the other.
    cats = [m for f in FAMILIES for m in FAMILIES[f][:1]] + [m for f in FAMILIES for m in FAMILIES[f][1:2]]
    cats = cats if version == 2 else list(AUDIBLE)
    fig, axes = plt.subplots(2, 5, figsize=(12, 4.4), dpi=100)
    for ax, cat in zip(axes.flat, cats):
        voice = voice_of(cat, rng)
        wave = np.concatenate([sounding_second(cat, voice, rng) for _ in range(2)])
        mel = log_mel_spectrogram(wave, 16000).numpy()  # [frames, 64]
        ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", vmin=-4.6, vmax=2)
        ax.set_title(f"{cat} ({FAMILY_OF[cat]})" if version == 2 else cat, fontsize=9)
        ax.set_xlabel("10 ms frames", fontsize=7)
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=6)
    title = (
        "SynthAVS v2 sounds: each object's voice drawn from its family's pool (members sound alike)"
        if version == 2
        else "SynthAVS sounds: 2 s of each audible category as VGGish log-mel (125-7500 Hz)"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def render_gallery(root: str | Path, out_dir: str | Path, version: int = 1) -> list[Path]:
    """Write ``synth_frames.png`` and ``synth_sounds.png`` (v1) or ``synth_v2_frames.png`` and
    ``synth_v2_sounds.png`` (v2) into ``out_dir`` (docs/images in the repo)."""
    out_dir = Path(out_dir)
    stem = "synth" if version == 1 else f"synth_v{version}"
    return [
        frames_figure(Path(root), out_dir / f"{stem}_frames.png"),
        sounds_figure(out_dir / f"{stem}_sounds.png", version=version),
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m teso.synthavs.generator.gallery [OUT_DIR] [--root ROOT] [--version 1|2]``: regenerate
    the README pictures of that SynthAVS version.

    Without ``--root`` a small SynthAVS (12 clips per subset, seed 0) is generated in a temporary
    folder first, so the pictures never depend on a dataset lying around.
    """
    import argparse
    import tempfile

    from teso.synthavs.generator import generate

    p = argparse.ArgumentParser(description="write docs/images/synth_frames.png and synth_sounds.png")
    p.add_argument("out_dir", nargs="?", default="docs/images", type=Path)
    p.add_argument("--root", type=Path, default=None, help="an existing SynthAVS tree to draw from")
    p.add_argument("--version", type=int, choices=(1, 2), default=1, help="which pictures (default 1)")
    args = p.parse_args(argv)
    if args.root is not None:
        paths = render_gallery(args.root, args.out_dir, args.version)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "synthavs"
            generate(root, clips=12, seed=0, progress=False, version=args.version)
            paths = render_gallery(root, args.out_dir, args.version)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
