"""Sampling a SynthAVS **v2** clip: the paper's premises built in (docs/synthavs.md, "SynthAVS v2").

v1 (``scenes.py``) gives every category its own unmistakable sound and draws a per-second activity
cue in the pixels, so audio alone says which object sounds and text has nothing to add. v2 poses the
paper's question instead:

* **P1, audio is weak in multi-source scenes.** Categories come in sound *families*
  (``categories.FAMILIES``) whose members sound alike (``sounds.family_voice``); ``P_PAIR`` (40 %)
  of the v1m / v2 scenes with two or more audible objects hold a *same-family pair* of which one
  member is the source and the other a silent bystander; half of the clips carry an off-screen
  source (a category that is not visible, never in the masks) under the on-screen ones. Audio says
  "a string instrument sounds"; it cannot say which of the two visible ones.
* **P2, text names the candidate sources, audio says when.** Some audible objects are *bystanders*
  that never sound in their clip. The captions say once for the whole clip who is making a sound
  ("someone is playing the guitar", "nobody touches the piano"), right with probability ``Q_CLIP``;
  nothing about it is drawn (every audible object keeps a neutral pose), as a large captioner knows
  more than a small segmenter learns. *When* a source sounds is in the audio only.
* The built-in preference stays: in train a source sounds in a second with its category's prior, in
  val / test with probability 0.5.

A source sounds in at least one second (``k`` of ``T`` seconds, ``E[k] = pT``, as v1's v1m, in every
subset); a bystander in none. In v1s the one source may stand beside audible bystanders. Every
category appears at most once in a scene (the semantic masks stay unambiguous).
"""

from __future__ import annotations

import numpy as np

from teso.synthavs.generator.categories import AUDIBLE, FAMILIES, FAMILY_OF, SILENT
from teso.synthavs.generator.scenes import (
    SUBSETS,
    Scene,
    _schedule,
    assemble_scene,
    draw_looks,
    sounding_probability,
)

P_PAIR = 0.4  # multi-source scenes with a same-family pair: one source, one silent bystander (P1)
P_BYSTANDER = 0.03  # any other audible object is a bystander with this probability (P2)
Q_CLIP = 0.8  # the captions' clip-level "is making a sound" phrase is right with this probability
P_OFFSCREEN = 0.5  # clips with an off-screen source under the on-screen ones (P1)
OFFSCREEN_RATE = 0.5  # per-second probability that the off-screen source sounds
SILENT_ACTIVE = 0.3  # a lamp is lit / a plant flowers (clip-level, says nothing about sound)

PARAMETERS = {
    "p_pair": P_PAIR,
    "p_bystander": P_BYSTANDER,
    "q_clip": Q_CLIP,
    "p_offscreen": P_OFFSCREEN,
    "offscreen_rate": OFFSCREEN_RATE,
}


def _choose(rng: np.random.Generator, subset: str) -> tuple[list[str], list[str]]:
    """``(categories, roles)`` of the visible objects; role is ``source``, ``bystander`` or ``silent``
    (a category that never sounds)."""
    lo, hi = SUBSETS[subset].visible
    n = int(rng.integers(lo, hi + 1))
    if subset == "v1s":
        n_aud = 1 + int(rng.binomial(n - 1, 0.5))
    elif subset == "v1m":
        n_aud = int(rng.integers(2, n + 1))
    else:
        n_aud = 1 + int(rng.binomial(n - 1, 0.75))
    n_aud = max(n_aud, n - len(SILENT))
    cats: list[str] = []
    roles: list[str] = []
    pair = subset != "v1s" and n_aud >= 2 and rng.random() < P_PAIR
    if pair:
        family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
        members = [FAMILIES[family][i] for i in rng.permutation(len(FAMILIES[family]))[:2]]
        cats += members
        roles += ["source", "bystander"]
    rest = [c for c in AUDIBLE if c not in cats]
    extra = [rest[i] for i in rng.choice(len(rest), size=n_aud - len(cats), replace=False)]
    for c in extra:
        cats.append(c)
        if subset == "v1s":
            # v1s: a single source; any other audible object is a bystander.
            roles.append("source" if "source" not in roles else "bystander")
        else:
            roles.append("bystander" if rng.random() < P_BYSTANDER else "source")
    if "source" not in roles:
        roles[int(rng.integers(len(roles)))] = "source"
    sil = [SILENT[i] for i in rng.choice(len(SILENT), size=n - n_aud, replace=False)]
    cats += sil
    roles += ["silent"] * len(sil)
    perm = rng.permutation(len(cats))
    return [cats[i] for i in perm], [roles[i] for i in perm]


def sample_scene_v2(
    rng: np.random.Generator, subset: str, split: str, index: int, image_size: int = 128
) -> Scene:
    """Draw one v2 clip's content from ``rng`` (consumes it deterministically)."""
    seconds = SUBSETS[subset].seconds
    cats, roles = _choose(rng, subset)
    heights, colours, facings, styles = draw_looks(rng, cats, image_size)
    sounding = [
        _schedule(rng, sounding_probability(cat, split), seconds, "v1m")
        if role == "source"
        else [False] * seconds
        for cat, role in zip(cats, roles)
    ]
    active: list[bool | None] = []
    cues: list[list[bool]] = []
    for role in roles:
        if role == "silent":
            lit = bool(rng.random() < SILENT_ACTIVE)
            active.append(lit)
            cues.append([lit] * seconds)  # the lamp's light is drawn: it says nothing about sound
        else:
            right = bool(rng.random() < Q_CLIP)
            active.append((role == "source") == right)
            cues.append([False] * seconds)  # a neutral pose: who sounds is not in the pixels
    offscreen = None
    if rng.random() < P_OFFSCREEN:
        hidden = [c for c in AUDIBLE if c not in cats]
        category = hidden[int(rng.integers(len(hidden)))]
        offscreen = {
            "category": category,
            "family": FAMILY_OF[category],
            "sounding": [bool(v) for v in rng.random(seconds) < OFFSCREEN_RATE],
        }
    return assemble_scene(
        rng,
        subset,
        split,
        index,
        image_size,
        cats,
        heights,
        colours,
        facings,
        styles,
        sounding,
        cues,
        active=active,
        version=2,
        offscreen=offscreen,
    )
