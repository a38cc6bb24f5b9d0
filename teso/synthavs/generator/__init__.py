"""SynthAVS: a procedural audio-visual segmentation dataset with the segmentation preference built in.

``generate(out, clips=None, seed=0, version=2)`` writes it in AVSBench's released layout (plus captions,
per-object truth and instance masks); see docs/synthavs.md. Each clip's randomness derives from
(seed, subset, split, index) alone, so clips are independent, the output is the same bytes for the
same seed, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from teso.errors import TesoError
from teso.synthavs.generator.categories import FAMILIES, label2idx
from teso.synthavs.generator.scenes import SPLITS, SUBSETS, sample_scene
from teso.synthavs.generator.scenes_v2 import PARAMETERS as V2_PARAMETERS
from teso.synthavs.generator.scenes_v2 import sample_scene_v2
from teso.synthavs.generator.writer import describe_categories, metadata_row, write_clip
from teso.utils.files import atomic_write_json, atomic_write_text

VERSIONS = {1: "1.0", 2: "2.0"}  # --version N -> the version string recorded in synth.json
DEFAULT_VERSION = 2  # v2 poses the paper's question (docs/synthavs.md); v1 stays for its findings
DEFAULT_CLIPS = {"v1s": 300, "v1m": 300, "v2": 120}  # under two minutes on 2 cores (docs/synthavs.md)
SPLIT_SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
IMAGE_SIZE = 128
Q = 0.8  # probability that an object's activity cue agrees with its sounding state

__all__ = ["DEFAULT_CLIPS", "DEFAULT_VERSION", "SynthSummary", "generate", "scene_for", "split_counts"]


@dataclass
class SynthSummary:
    out: Path
    clips: dict[str, dict[str, int]] = field(default_factory=dict)
    written: int = 0
    skipped: int = 0
    seconds_of_audio: int = 0
    elapsed: float = 0.0

    def describe(self) -> str:
        lines = [f"SynthAVS in {self.out}: {self.written} clip(s) written, {self.skipped} already there"]
        for subset, splits in self.clips.items():
            lines.append(f"  {subset}: " + ", ".join(f"{k} {v}" for k, v in splits.items()))
        rate = self.written / self.elapsed if self.elapsed > 0 else 0.0
        lines.append(
            f"  {self.seconds_of_audio} s of audio; {self.elapsed:.1f} s ({rate:.1f} clips/s written)"
        )
        return "\n".join(lines)


def split_counts(n: int) -> dict[str, int]:
    """Clips per split for ``n`` clips of a subset: 70 / 10 / 20 %, at least one each."""
    if n < 3:
        raise TesoError(f"--clips {n}: at least 3 clips per subset are needed (one per split)")
    val = max(1, round(n * SPLIT_SHARES["val"]))
    test = max(1, round(n * SPLIT_SHARES["test"]))
    return {"train": n - val - test, "val": val, "test": test}


def _clip_rng(seed: int, subset: str, split: str, index: int) -> np.random.Generator:
    key = [seed, list(SUBSETS).index(subset), SPLITS.index(split), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def scene_for(seed: int, subset: str, split: str, index: int, version: int) -> tuple:
    """``(scene, rng)`` of one clip: the content drawn, the generator positioned for drawing it."""
    rng = _clip_rng(seed, subset, split, index)
    if version >= 2:
        return sample_scene_v2(rng, subset, split, index, IMAGE_SIZE), rng
    return sample_scene(rng, subset, split, index, IMAGE_SIZE, Q), rng


def _task(args: tuple) -> int:
    seed, subset, split, index, out, version = args
    scene, rng = scene_for(seed, subset, split, index, version)
    clip_dir = Path(out) / subset / scene.uid
    if clip_dir.is_dir():
        return 0
    write_clip(scene, rng, clip_dir)
    return 1


def _check_out(out: Path, params: dict) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise TesoError(f"--out {out}: exists and is not a directory")
    entries = [p for p in out.iterdir() if p.name not in ("cues",)]
    if not entries:
        return
    meta = out / "synth.json"
    if not meta.is_file():
        raise TesoError(f"--out {out}: a non-empty directory that is not a SynthAVS tree (no synth.json)")
    old = json.loads(meta.read_text()).get("parameters")
    if old != params:
        diff = {k: (old.get(k) if old else None, v) for k, v in params.items() if not old or old.get(k) != v}
        hint = ""
        if "version" in diff:
            hint = (
                f" (it is SynthAVS {diff['version'][0]}: `--version` / `teso demo --data-version` reuse it)"
            )
        raise TesoError(
            f"--out {out}: holds SynthAVS made with other parameters {diff} (old, new){hint}; "
            "use another --out"
        )


def generate(
    out: str | Path,
    clips: int | None = None,
    seed: int = 0,
    subsets: tuple[str, ...] | list[str] = ("v1s", "v1m", "v2"),
    progress: bool = True,
    workers: int | None = None,
    version: int = DEFAULT_VERSION,
) -> SynthSummary:
    """Generate SynthAVS ``version`` (1 or 2) into ``out``.

    ``clips``: clips per subset (None: ``DEFAULT_CLIPS``).
    """
    out = Path(out)
    if version not in VERSIONS:
        raise TesoError(f"--version {version}: expected one of {', '.join(map(str, VERSIONS))}")
    subsets = tuple(subsets)
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or not subsets:
        raise TesoError(f"--subsets {','.join(subsets)}: expected some of {', '.join(SUBSETS)}")
    counts = {s: split_counts(clips if clips is not None else DEFAULT_CLIPS[s]) for s in subsets}
    params = {"version": VERSIONS[version], "seed": seed, "subsets": list(subsets), "counts": counts,
              "image_size": IMAGE_SIZE, "q": Q}  # fmt: skip
    if version >= 2:
        params = {k: v for k, v in params.items() if k != "q"} | V2_PARAMETERS
    _check_out(out, params)
    out.mkdir(parents=True, exist_ok=True)
    # synth.json first: it marks the folder as this generator's, so a killed run can be resumed.
    atomic_write_json(
        out / "synth.json",
        {
            "generator": "teso.synthavs.generator",
            "parameters": params,
            "categories": describe_categories(version),
            "splits": {
                "train": f"each audible {'source' if version >= 2 else 'category'} sounds with its own prior",
                "val": f"every audible {'source' if version >= 2 else 'object'} sounds with probability 0.5",
                "test": f"every audible {'source' if version >= 2 else 'object'} sounds with probability 0.5",
            },
            **({"families": {f: list(m) for f, m in FAMILIES.items()}} if version >= 2 else {}),
        },  # fmt: skip
    )
    atomic_write_json(out / "label2idx.json", label2idx())
    tasks = [
        (seed, subset, split, i, str(out), version)
        for subset in subsets
        for split in SPLITS
        for i in range(counts[subset][split])
    ]
    start = time.perf_counter()
    summary = SynthSummary(out=out, clips=counts)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(tasks), desc="SynthAVS", unit="clip", disable=not progress, leave=False)
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            for written in pool.imap(_task, tasks, chunksize=4):
                summary.written += written
                bar.update(1)
    else:
        for task in tasks:
            summary.written += _task(task)
            bar.update(1)
    bar.close()
    summary.skipped = len(tasks) - summary.written
    # metadata.csv last, from the scenes alone (cheap: no drawing), so it never lists a missing clip.
    rows = []
    for seed_, subset, split, i, _, _ in tasks:
        scene, _ = scene_for(seed_, subset, split, i, version)
        rows.append(metadata_row(scene))
        summary.seconds_of_audio += scene.seconds
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "metadata.csv", buf.getvalue())
    summary.elapsed = time.perf_counter() - start
    return summary
