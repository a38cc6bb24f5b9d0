"""Write one SynthAVS clip in AVSBench's released layout (atomically: a temporary folder renamed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from teso.data.palette import colorize
from teso.synthavs.generator.captions import caption_clip, ideal_reading
from teso.synthavs.generator.categories import CATEGORY_BY_NAME, FAMILY_OF, label2idx
from teso.synthavs.generator.render import render_clip
from teso.synthavs.generator.scenes import Scene
from teso.synthavs.generator.sounds import (
    OFFSCREEN_GAIN,
    SR,
    family_voice,
    mix_second,
    object_voice,
    sounding_second,
)

JPEG_QUALITY = 90


def clip_audio(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """[T * 16000] float32: per second, the sum of the objects sounding in it plus the noise floor
    (v2: voices from the family's pool, and the off-screen source ``OFFSCREEN_GAIN`` under them)."""
    voice_of = family_voice if scene.version >= 2 else object_voice
    voices = {o.instance_id: voice_of(o.category, rng) for o in scene.objects if o.audible}
    off = scene.offscreen
    off_voice = family_voice(off["category"], rng) if off else None
    seconds = []
    for t in range(scene.seconds):
        parts = [
            sounding_second(o.category, voices[o.instance_id], rng)
            for o in scene.objects
            if o.audible and o.sounding[t]
        ]
        if off and off["sounding"][t]:
            parts.append(sounding_second(off["category"], off_voice, rng) * np.float32(OFFSCREEN_GAIN))
        seconds.append(mix_second(parts, rng))
    return np.concatenate(seconds).astype(np.float32)


def _boxes(instances: list[np.ndarray], instance_id: int) -> tuple[list[list[int] | None], list[int]]:
    """Per frame: the box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of the object's visible pixels, or None
    when it is fully hidden, and the visible pixel count."""
    boxes: list[list[int] | None] = []
    areas: list[int] = []
    for ids in instances:
        sel = ids == instance_id
        areas.append(int(sel.sum()))
        if not areas[-1]:
            boxes.append(None)
            continue
        rows, cols = np.nonzero(sel.any(1))[0], np.nonzero(sel.any(0))[0]
        boxes.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
    return boxes, areas


def truth_record(scene: Scene, instances: list[np.ndarray]) -> dict:
    """``truth.json``: every visible object with its per-second sounding and activity-cue flags.

    ``instances``: the clip's T instance-id masks ``[H, W]`` uint8, from which each object's
    per-frame ``bbox`` and ``visible_pixels`` are measured. Objects are listed in drawing order
    (back to front): ``instance_id`` 1 is the farthest.
    """
    objects = []
    for o in scene.objects:
        boxes, areas = _boxes(instances, o.instance_id)
        v2 = {}
        if scene.version >= 2:
            v2 = {"family": FAMILY_OF.get(o.category), "source": any(o.sounding), "active_cue": o.active_cue}
        objects.append(
            {
                "instance_id": o.instance_id,
                "category": o.category,
                "audible": o.audible,
                "colour": o.colour,
                "sounding": list(o.sounding),
                "cue": list(o.cue),
                "bbox": boxes,
                "visible_pixels": areas,
                "anchor_xy": [[x, y] for x, y in zip(o.x, o.y)],
                "height": o.height,
                **v2,
            }
        )
    extra = {"version": scene.version, "offscreen": scene.offscreen} if scene.version >= 2 else {}
    return {
        "uid": scene.uid,
        "subset": scene.subset,
        "split": scene.split,
        "seconds": scene.seconds,
        "image_size": scene.image_size,
        "background": scene.background["kind"],
        "objects": objects,
        **extra,
    }


def write_clip(scene: Scene, rng: np.random.Generator, clip_dir: Path) -> None:
    """Render, synthesise and caption ``scene`` into ``clip_dir`` (skipped if it already exists).

    Everything goes to ``.{uid}.tmp`` beside it first and is renamed into place at the end, so a
    killed run leaves either a complete clip or a temporary folder that the next run replaces.
    """
    if clip_dir.is_dir():
        return
    tmp = clip_dir.parent / f".{clip_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("frames", "labels_rgb", "labels_semantic", "instances"):
        (tmp / sub).mkdir(parents=True)
    frames, instances = render_clip(scene, rng)
    classes = label2idx()
    num_classes = len(classes)
    for t, (rgb, ids) in enumerate(zip(frames, instances)):
        Image.fromarray(rgb).save(tmp / "frames" / f"{t}.jpg", quality=JPEG_QUALITY)
        Image.fromarray(ids).save(tmp / "instances" / f"{t}.png")
        semantic = np.zeros(ids.shape, dtype=np.uint8)
        for o in scene.objects:
            if o.sounding[t]:
                semantic[ids == o.instance_id] = classes[o.category]
        Image.fromarray(semantic).save(tmp / "labels_semantic" / f"{t}.png")
        Image.fromarray(colorize(semantic, num_classes)).save(tmp / "labels_rgb" / f"{t}.png")
    audio = clip_audio(scene, rng)
    assert len(audio) == scene.seconds * SR
    sf.write(tmp / "audio.wav", audio, SR, subtype="PCM_16")
    (tmp / "captions.json").write_text(json.dumps(caption_clip(scene, rng), indent=1) + "\n")
    truth = truth_record(scene, instances)
    (tmp / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    # Beside the captions: what an ideal reader of them concludes (the `reasoned` cue source).
    (tmp / "reasoned.json").write_text(json.dumps(ideal_reading(truth)) + "\n")
    os.replace(tmp, clip_dir)


def metadata_row(scene: Scene) -> dict:
    return {
        "vid": scene.uid,
        "uid": scene.uid,
        "s_min": 0,
        "s_sec": 0,
        "a_obj": "_".join(scene.sounding_categories()),
        "split": scene.split,
        "label": scene.subset,
    }


def describe_categories(version: int = 1) -> list[dict]:
    classes = label2idx()
    out = [CATEGORY_BY_NAME[name].describe(index) for name, index in classes.items() if name != "background"]
    if version >= 2:
        for record in out:
            record["family"] = FAMILY_OF.get(record["name"])
            if record["family"]:
                record["sound"] = f"the {record['family']} family's pool (v2: members sound alike)"
    return out
