"""A tiny released-layout tree with cached text features, and fast experiment overrides."""

from __future__ import annotations

from pathlib import Path

from teso.cues.features import build_clip_tensor, clip_file, cues_sha, write_index
from teso.cues.store import CueStore
from teso.cues.text_encoders import build_text_encoder
from teso.data.avsbench import list_clips
from tests.avsbench_fixtures import write_released_tree


def write_tree_with_features(root: Path) -> Path:
    """The AVSBench fixture tree plus `tiny` (32-d, random) text features: cue = the clip's a_obj."""
    write_released_tree(root)
    encoder = build_text_encoder("tiny")
    fdir = CueStore(root, "default").features_dir(encoder.name)
    write_index(fdir, encoder, 4)
    for clip in list_clips(root):
        cues = [list(clip.a_obj) for _ in range(clip.num_frames)]
        feats, counts = build_clip_tensor(cues, encoder, 4)
        write_clip_features(fdir, clip.uid, feats, counts, cues_sha(cues, 4))
    return root


def write_clip_features(fdir: Path, uid: str, feats, counts, sha: str) -> None:
    from teso.cues.features import write_clip

    write_clip(clip_file(fdir, uid), uid, feats, counts, sha)


def fast_overrides(root: Path, **extra: str) -> list[str]:
    """The synth config shrunk to seconds: 64 px, 32-d tiny text, v2 clips (two in the test split)."""
    base = {
        "data.root": str(root),
        "data.subset": "v2",
        "data.train_split": "test",
        "data.val_split": "test",
        "data.test_split": "test",
        "data.text_encoder": "tiny",
        "model.text.dim": "32",
        "model.visual.image_size": "64",
        "train.batch_size": "1",
        "train.log_every": "1",
        "train.epochs": "2",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
