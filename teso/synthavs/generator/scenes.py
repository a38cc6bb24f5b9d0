"""Sampling a SynthAVS clip: which objects are visible, where, and when each one sounds.

Everything random about a clip's *content* is decided here, from one ``numpy`` generator, before
anything is drawn or synthesised; ``render.py``, ``sounds.py`` and ``captions.py`` only turn a
:class:`Scene` into pixels, samples and words. Re-running the generator can therefore rebuild a
finished clip's metadata row without redrawing it.

Sounding schedule (the built-in preference). For an audible object in a clip of T seconds, let
``p`` be its category's train prior in the train split and 0.5 in val / test. The object sounds in
``k`` of the T seconds and the k seconds are placed either as one run that wraps around the clip
(``start, start+1, ... mod T``) or as a uniformly random subset (each with probability 1/2). Both
placements are invariant under a circular shift, so every second is sounding with probability
``E[k] / T``; the count is chosen so that ``E[k] = p T``:

* v1s, v1m: ``k`` is ``floor(pT)`` or ``ceil(pT)`` (mean ``pT``), which is at least 1 because every
  prior is >= 0.2 = 1/T. So every audible object of a v1s / v1m clip sounds at least once and the
  per-second rate is exactly ``p``.
* v2: ``k ~ Binomial(T, p)``, so an audible object may stay silent for the whole clip (the clearest
  case of the preference). A v2 clip in which no object sounds at all is redrawn (schedules only);
  that raises the measured rate of low-prior categories a little in single-object clips.

Activity cue: for an audible object, ``cue[t] = sounding[t]`` with probability ``q`` and the
opposite otherwise, independently per second. Silent categories show their distractor cue with
probability ``silent_cue_rate`` per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from teso.synthavs.generator.categories import AUDIBLE, CATEGORY_BY_NAME, SILENT

SPLITS: tuple[str, ...] = ("train", "val", "test")
EVAL_RATE = 0.5


@dataclass(frozen=True)
class SubsetSpec:
    name: str
    seconds: int
    visible: tuple[int, int]  # inclusive range of visible objects
    rule: str


SUBSETS: dict[str, SubsetSpec] = {
    "v1s": SubsetSpec(
        "v1s", 5, (1, 3), "one audible object (the single source) plus 0-2 objects of silent categories"
    ),
    "v1m": SubsetSpec(
        "v1m",
        5,
        (2, 4),
        "2-4 visible, of which at least 2 are audible; every audible one sounds at least once",
    ),
    "v2": SubsetSpec(
        "v2", 10, (1, 4), "1-4 visible, at least one audible and at most two silent; any may stay silent"
    ),
}


@dataclass
class SceneObject:
    """One visible object. ``x[t]``, ``y[t]``: bottom-centre anchor in pixels at second t."""

    instance_id: int
    category: str
    colour: str
    rgb: tuple[int, int, int]
    height: float
    facing: int
    style: int
    x: list[float]
    y: list[float]
    sounding: list[bool]
    cue: list[bool]
    active_cue: bool | None = None  # v2: what the captions say of it, once for the clip (None in v1)

    @property
    def audible(self) -> bool:
        return CATEGORY_BY_NAME[self.category].audible

    @property
    def width(self) -> float:
        return self.height * CATEGORY_BY_NAME[self.category].aspect


@dataclass
class Scene:
    """A clip's content. ``objects`` are in drawing order: back (index 0) to front."""

    uid: str
    subset: str
    split: str
    index: int
    seconds: int
    image_size: int
    background: dict
    objects: list[SceneObject] = field(default_factory=list)
    version: int = 1
    offscreen: dict | None = None  # v2: {"category", "sounding" [T]} of a source outside the frame

    def sounding_categories(self) -> list[str]:
        """Categories that sound at least once, by instance id (the ``a_obj`` of metadata.csv)."""
        objs = sorted(self.objects, key=lambda o: o.instance_id)
        out: list[str] = []
        for o in objs:
            if any(o.sounding) and o.category not in out:
                out.append(o.category)
        return out


def sounding_probability(category: str, split: str) -> float:
    """Per-second probability that a visible object of ``category`` sounds in ``split``."""
    cat = CATEGORY_BY_NAME[category]
    if not cat.audible:
        return 0.0
    return float(cat.train_prior) if split == "train" else EVAL_RATE


def _schedule(rng: np.random.Generator, p: float, seconds: int, subset: str) -> list[bool]:
    """[T] sounding flags with per-second marginal exactly ``p`` (see the module docstring)."""
    if subset == "v2":
        k = int(rng.binomial(seconds, p))
    else:
        mean = p * seconds
        k = int(math.floor(mean)) + int(rng.random() < mean - math.floor(mean))
        k = max(k, 1)
    on = np.zeros(seconds, dtype=bool)
    if k > 0:
        if rng.random() < 0.5:
            start = int(rng.integers(seconds))
            on[(start + np.arange(k)) % seconds] = True
        else:
            on[rng.choice(seconds, size=k, replace=False)] = True
    return [bool(v) for v in on]


def _choose_categories(rng: np.random.Generator, subset: str) -> list[str]:
    lo, hi = SUBSETS[subset].visible
    n = int(rng.integers(lo, hi + 1))
    if subset == "v1s":
        n_aud = 1
    elif subset == "v1m":
        n_aud = int(rng.integers(2, n + 1))
    else:
        n_aud = 1 + int(rng.binomial(n - 1, 0.75))
    n_aud = max(n_aud, n - len(SILENT))
    aud = [AUDIBLE[i] for i in rng.choice(len(AUDIBLE), size=n_aud, replace=False)]
    sil = [SILENT[i] for i in rng.choice(len(SILENT), size=n - n_aud, replace=False)]
    cats = aud + sil
    return [cats[i] for i in rng.permutation(len(cats))]


def _vertical_range(placement: str, size: int) -> tuple[float, float]:
    """Range of the bottom edge y, as a fraction of the frame height."""
    if placement == "air":
        return 0.22, 0.5
    if placement == "wall":
        return 0.42, 0.62
    return 0.66, 0.97


class _NoRoom(Exception):
    """The objects drawn for a clip do not fit side by side at their sizes."""


MAX_DRIFT = 4.0  # pixels at 128 px: objects move a little from one second to the next
MAX_OVERLAP = 0.2  # of the smaller bounding box, so that no object is hidden by another


def _place(
    rng: np.random.Generator, cats: list[str], heights: list[float], seconds: int, size: int
) -> tuple[list[list[float]], list[list[float]]]:
    """Bottom-centre tracks ``xs[i][t], ys[i][t]`` with bounded drift and little overlap."""
    drift = MAX_DRIFT * size / 128
    # The widest objects go first: they are the hardest to fit once others stand in the frame.
    order = sorted(range(len(cats)), key=lambda i: -heights[i] * CATEGORY_BY_NAME[cats[i]].aspect)
    for _attempt in range(100):
        boxes = np.zeros((0, 4))
        starts: dict[int, tuple[float, float]] = {}
        for i in order:
            c = CATEGORY_BY_NAME[cats[i]]
            h = heights[i]
            w = h * c.aspect
            lo, hi = _vertical_range(c.placement, size)
            lo_y = max(lo * size, h + drift + 1)
            hi_y = hi * size - drift - 1
            lo_x, hi_x = w / 2 + drift + 2, size - w / 2 - drift - 2
            # 60 candidate spots at once; the first one that overlaps nothing too much wins.
            x = rng.uniform(lo_x, hi_x, size=60)
            y = rng.uniform(lo_y, max(lo_y, hi_y), size=60)
            cand = np.stack([x - w / 2 - drift, y - h - drift, x + w / 2 + drift, y + drift], 1)
            ok = np.ones(60, dtype=bool)
            if len(boxes):
                a, b = cand[:, None], boxes[None]
                ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
                iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
                area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
                area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
                ok = (ix * iy / np.maximum(np.minimum(area_a, area_b), 1e-6) <= MAX_OVERLAP).all(1)
            if not ok.any():
                break
            k = int(np.argmax(ok))
            boxes = np.concatenate([boxes, cand[k : k + 1]])
            starts[i] = (float(x[k]), float(y[k]))
        if len(starts) == len(cats):
            break
    else:
        raise _NoRoom(f"could not place {cats} in a {size}px frame without overlap")
    xs, ys = [], []
    for x0, y0 in (starts[i] for i in range(len(cats))):
        # A random walk folded into [-drift, drift] keeps the object inside the box checked above.
        steps = rng.uniform(-0.45, 0.45, size=(seconds, 2)) * drift
        steps[0] = 0.0
        walk = np.clip(np.cumsum(steps, axis=0), -drift, drift)
        xs.append([round(float(x0 + d), 2) for d in walk[:, 0]])
        ys.append([round(float(y0 + d * 0.5), 2) for d in walk[:, 1]])
    return xs, ys


def _background(rng: np.random.Generator) -> dict:
    kind = ["room", "park", "street"][int(rng.integers(3))]
    if kind == "room":
        walls = [("beige", (214, 200, 170)), ("light blue", (170, 196, 220)), ("pale green", (186, 212, 180)),
                 ("grey", (180, 180, 184)), ("pink", (222, 190, 190))]  # fmt: skip
        floors = [("wooden", (150, 110, 70)), ("grey", (110, 110, 116)), ("red", (140, 70, 60))]
        top, bottom = walls[int(rng.integers(len(walls)))], floors[int(rng.integers(len(floors)))]
    elif kind == "park":
        top = ("blue", (140, 185, 235)) if rng.random() < 0.7 else ("grey", (175, 180, 190))
        bottom = ("green", (90, 150, 70)) if rng.random() < 0.7 else ("yellow", (170, 160, 80))
    else:
        top = ("blue", (150, 190, 235)) if rng.random() < 0.7 else ("grey", (170, 175, 185))
        bottom = ("grey", (95, 95, 100))
    return {
        "kind": kind,
        "top_name": top[0],
        "top_rgb": list(top[1]),
        "bottom_name": bottom[0],
        "bottom_rgb": list(bottom[1]),
        "horizon": round(float(rng.uniform(0.5, 0.62)), 3),
        "texture_seed": int(rng.integers(2**31)),
    }


def draw_looks(
    rng: np.random.Generator, cats: list[str], image_size: int
) -> tuple[list[float], list[tuple], list[int], list[int]]:
    """``(heights, colours, facings, styles)`` of the objects of ``cats``, in this order of draws."""
    heights, colours = [], []
    for cat in cats:
        c = CATEGORY_BY_NAME[cat]
        heights.append(float(rng.uniform(*c.height)) * image_size / 128)
        colours.append(c.colours[int(rng.integers(len(c.colours)))])
    facings = [1 if rng.random() < 0.5 else -1 for _ in cats]
    styles = [int(rng.integers(3)) for _ in cats]
    return heights, colours, facings, styles


def sample_scene(
    rng: np.random.Generator,
    subset: str,
    split: str,
    index: int,
    image_size: int = 128,
    q: float = 0.8,
    silent_cue_rate: float = 0.3,
) -> Scene:
    """Draw one clip's content from ``rng`` (consumes it deterministically)."""
    spec = SUBSETS[subset]
    seconds = spec.seconds
    cats = _choose_categories(rng, subset)
    heights, colours, facings, styles = draw_looks(rng, cats, image_size)

    while True:
        sounding = [
            _schedule(rng, sounding_probability(cat, split), seconds, subset)
            if CATEGORY_BY_NAME[cat].audible
            else [False] * seconds
            for cat in cats
        ]
        if subset != "v2" or any(any(s) for s in sounding):
            break
    cues = []
    for cat, snd in zip(cats, sounding):
        if CATEGORY_BY_NAME[cat].audible:
            agree = rng.random(seconds) < q
            cues.append([bool(s if a else not s) for s, a in zip(snd, agree)])
        else:
            cues.append([bool(v) for v in rng.random(seconds) < silent_cue_rate])

    return assemble_scene(
        rng, subset, split, index, image_size, cats, heights, colours, facings, styles, sounding, cues
    )


def assemble_scene(
    rng: np.random.Generator,
    subset: str,
    split: str,
    index: int,
    image_size: int,
    cats: list[str],
    heights: list[float],
    colours: list[tuple],
    facings: list[int],
    styles: list[int],
    sounding: list[list[bool]],
    cues: list[list[bool]],
    active: list[bool | None] | None = None,
    version: int = 1,
    offscreen: dict | None = None,
) -> Scene:
    """Place the drawn objects, pick the background and order the objects by depth (consumes ``rng``
    after everything else about the clip is decided)."""
    seconds = SUBSETS[subset].seconds
    while True:
        try:
            xs, ys = _place(rng, cats, heights, seconds, image_size)
            break
        except _NoRoom:
            # Four large ground objects may not fit side by side: shrink them all a little and retry
            # (deterministic: the same draws lead to the same shrinking).
            heights = [h * 0.9 for h in heights]
    background = _background(rng)
    active = active if active is not None else [None] * len(cats)

    # Drawing order = depth: what stands lower in the frame is nearer the camera.
    order = sorted(range(len(cats)), key=lambda i: (ys[i][0], i))
    objects = [
        SceneObject(
            instance_id=rank + 1,
            category=cats[i],
            colour=colours[i][0],
            rgb=tuple(colours[i][1]),
            height=round(heights[i], 2),
            facing=facings[i],
            style=styles[i],
            x=xs[i],
            y=ys[i],
            sounding=sounding[i],
            cue=cues[i],
            active_cue=active[i],
        )
        for rank, i in enumerate(order)
    ]
    return Scene(
        uid=f"synth_{subset}_{split}_{index:05d}",
        subset=subset,
        split=split,
        index=index,
        seconds=seconds,
        image_size=image_size,
        background=background,
        objects=objects,
        version=version,
        offscreen=offscreen,
    )
