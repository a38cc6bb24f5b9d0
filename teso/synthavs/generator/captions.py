"""Scene descriptions written from what is visible only: the dataset's built-in captioner.

A caption names each object's colour, category and position and describes its activity cue as it
looks ("its mouth is open"), never what is heard: the cue agrees with the sound only with
probability q, so the caption helps without deciding. v2 captions say once for the clip who is
making a sound ("it is barking", right with probability q_clip) and never when. The wording
varies (seeded) like a real captioner's would.
"""

from __future__ import annotations

import numpy as np

from teso.synthavs.generator.categories import ACTIVITY, CATEGORY_BY_NAME
from teso.synthavs.generator.scenes import Scene, SceneObject

INTRO = {
    "room": ("In a room with a {top} wall and a {bottom} floor", "Inside a room with {top} walls"),
    "park": ("In a park under a {top} sky", "Outdoors on {bottom} grass"),
    "street": ("On a street under a {top} sky", "Outside by a {bottom} road"),
}
LEAD = ("there is", "we can see", "the picture shows")
NEXT = ("There is also", "Next to it stands", "The picture also shows", "Another object is")


def _where(obj: SceneObject, t: int, size: int) -> str:
    x = obj.x[t] / size
    horizontal = "on the left" if x < 0.36 else "on the right" if x > 0.64 else "in the middle"
    placement = CATEGORY_BY_NAME[obj.category].placement
    if placement == "air":
        return f"in the air {horizontal}"
    if placement == "wall":
        return f"on the wall {horizontal}"
    return horizontal


def caption_frame(scene: Scene, t: int, rng: np.random.Generator) -> str:
    """The description of frame t (objects from left to right)."""
    bg = scene.background
    intros = INTRO[bg["kind"]]
    intro = intros[int(rng.integers(len(intros)))].format(top=bg["top_name"], bottom=bg["bottom_name"])
    objects = sorted(scene.objects, key=lambda o: o.x[t])
    sentences = []
    for i, obj in enumerate(objects):
        cat = CATEGORY_BY_NAME[obj.category]
        if scene.version >= 2 and obj.audible:
            # v2: one clip-level statement of who makes a sound (right with probability Q_CLIP).
            on, off = ACTIVITY[obj.category]
            phrases = on if obj.active_cue else off
        else:
            phrases = cat.cue_on if obj.cue[t] else cat.cue_off
        cue = phrases[int(rng.integers(len(phrases)))]
        thing = f"a {obj.colour} {cat.noun} {_where(obj, t, scene.image_size)}"
        if i == 0:
            sentences.append(f"{intro}, {LEAD[int(rng.integers(len(LEAD)))]} {thing}; {cue}.")
        else:
            sentences.append(f"{NEXT[int(rng.integers(len(NEXT)))]} {thing}; {cue}.")
    return " ".join(sentences)


def caption_clip(scene: Scene, rng: np.random.Generator) -> list[str]:
    return [caption_frame(scene, t, rng) for t in range(scene.seconds)]


def ideal_reading(truth: dict) -> list[list[str]]:
    """What an ideal reader of each caption concludes: per frame, the sounding objects' categories.

    The reader trusts every activity cue the caption describes ("its mouth is open" -> the dog
    sounds) and knows which categories can make sound at all: a lamp's glowing bulb or a plant's
    open flower says nothing about sound, so silent categories never appear. The result is a list
    of T lists of distinct category names in caption order (left to right in that frame, as
    :func:`caption_frame` writes them). Because the cue agrees with the sound with probability q,
    these cues are right about an object-second with probability q: the stand-in for a capable LLM
    reasoner (docs/synthavs.md).

    In v2 (``truth["version"] == 2``) the captions say once for the whole clip who makes a sound
    ("someone is playing the guitar"): the reader names, in every frame, the audible objects so
    described (``active_cue``), right about an object with probability ``Q_CLIP`` for the clip and
    silent about *when* it sounds.

    ``truth`` is a ``truth.json`` record (:func:`teso.synthavs.generator.writer.truth_record`); the caption
    order is recomputed from each object's ``anchor_xy`` exactly as the captioner sorts ``x[t]``.
    """
    seconds = int(truth["seconds"])
    objects = truth["objects"]
    v2 = int(truth.get("version", 1)) >= 2
    out = []
    for t in range(seconds):
        # sorted() is stable and the objects are in drawing order, as in caption_frame: same ties.
        in_caption = sorted(objects, key=lambda o: o["anchor_xy"][t][0])
        names: dict[str, None] = {}
        for obj in in_caption:
            said = obj["active_cue"] if v2 else obj["cue"][t]
            if obj["audible"] and said:
                names[obj["category"]] = None
        out.append(list(names))
    return out
