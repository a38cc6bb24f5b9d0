"""SynthAVS categories: what each looks like, what it sounds like, and how often it sounds in train.

Audible categories carry AVSBench-semantic (AVSS) class names so that cue words and class names
mean the same thing on real and synthetic data. Names use hyphens, never underscores, because
``metadata.csv`` joins the sounding categories of a clip with ``_``.

The train priors are the built-in segmentation preference: in the train split an audible object
sounds in a given second with its category's prior; in val and test with probability 0.5 whatever
its category (see ``scenes.py``). They are spread from 0.2 to 0.9 so that a model which learns
"guitars sound, cars do not" is rewarded in train and exposed in test.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Category:
    """One SynthAVS class.

    ``height`` is the object's height range in pixels for a 128-pixel frame (scaled with the frame
    size); ``aspect`` is width / height; ``placement`` says where it stands: on the ground, in the
    air, or hung on the wall / upper half.
    """

    name: str
    noun: str
    audible: bool
    train_prior: float | None
    look: str
    sound: str
    cue: str
    cue_on: tuple[str, ...]
    cue_off: tuple[str, ...]
    colours: tuple[tuple[str, RGB], ...]
    height: tuple[int, int]
    aspect: float
    placement: str

    def describe(self, index: int) -> dict:
        """The JSON record written to ``synth.json``."""
        return {
            "name": self.name,
            "index": index,
            "audible": self.audible,
            "train_prior": self.train_prior,
            "sound": self.sound,
            "look": self.look,
            "activity_cue": self.cue,
            "colours": [c for c, _ in self.colours],
            "height_px_at_128": list(self.height),
        }


CATEGORIES: tuple[Category, ...] = (
    Category(
        name="guitar",
        noun="guitar",
        audible=True,
        train_prior=0.9,
        look="figure-eight body with wood-grain stripes, dark sound hole, long neck with light strings",
        sound="plucked string (Karplus-Strong), 2-4 plucks a second, 110-330 Hz",
        cue="a hand rests on the strings",
        cue_on=("a hand rests on its strings", "someone's hand is on its strings"),
        cue_off=("no hand touches its strings", "its strings are untouched"),
        colours=(("brown", (139, 84, 40)), ("orange", (214, 120, 36)), ("red", (170, 30, 30)),
                 ("black", (35, 30, 30)), ("yellow", (222, 184, 80))),
        height=(44, 62),
        aspect=0.42,
        placement="ground",
    ),
    Category(
        name="emergency-car",
        noun="emergency car",
        audible=True,
        train_prior=0.85,
        look="boxy van with a coloured side stripe, dark windows, black wheels and a roof light bar",
        sound="siren: a tone sweeping up and down between about 600 and 1500 Hz (wail or hi-lo)",
        cue="the roof light is lit and flashing",
        cue_on=("its roof light is lit", "the light on its roof is flashing"),
        cue_off=("its roof light is dark", "the light on its roof is off"),
        colours=(("white", (236, 236, 232)), ("red", (200, 36, 36)), ("yellow", (235, 205, 40))),
        height=(30, 40),
        aspect=1.7,
        placement="ground",
    ),
    Category(
        name="dog",
        noun="dog",
        audible=True,
        train_prior=0.75,
        look="four-legged: oval body, round head with snout and ears, tail; plain or spotted coat",
        sound="barking: 1-3 short harmonic bursts a second with a falling pitch near 300-600 Hz",
        cue="the mouth is open",
        cue_on=("its mouth is open", "it has its mouth wide open"),
        cue_off=("its mouth is closed", "it keeps its mouth shut"),
        colours=(("brown", (140, 90, 50)), ("black", (40, 36, 34)), ("white", (230, 226, 218)),
                 ("golden", (214, 168, 80)), ("grey", (130, 130, 128))),
        height=(28, 40),
        aspect=1.35,
        placement="ground",
    ),
    Category(
        name="bird",
        noun="bird",
        audible=True,
        train_prior=0.7,
        look="small oval body with a darker wing, round head, orange beak, thin legs",
        sound="chirps: 3-6 fast frequency sweeps a second between about 2 and 6 kHz",
        cue="the beak is open",
        cue_on=("its beak is open", "it holds its beak open"),
        cue_off=("its beak is closed", "its beak is shut"),
        colours=(("blue", (40, 90, 200)), ("red", (200, 40, 40)), ("yellow", (230, 200, 40)),
                 ("green", (50, 160, 70))),
        height=(18, 26),
        aspect=1.2,
        placement="air",
    ),
    Category(
        name="piano",
        noun="piano",
        audible=True,
        train_prior=0.6,
        look="upright piano: large case with a keyboard strip of white and black keys",
        sound="piano-like tones: 1-2 struck notes a second, inharmonic partials, exponential decay",
        cue="hands are on the keys",
        cue_on=("hands are on its keys", "two hands rest on its keyboard"),
        cue_off=("its keys are untouched", "nobody's hands are on its keyboard"),
        colours=(("black", (28, 26, 30)), ("brown", (110, 62, 34)), ("white", (236, 232, 224))),
        height=(40, 54),
        aspect=1.25,
        placement="ground",
    ),
    Category(
        name="woman",
        noun="woman",
        audible=True,
        train_prior=0.5,
        look="standing figure: head with long hair, dress, arms and legs",
        sound="speech-like voiced syllables: glottal pulses at 170-260 Hz through moving vowel formants",
        cue="the mouth is open",
        cue_on=("her mouth is open", "she has her mouth open"),
        cue_off=("her mouth is closed", "she keeps her lips together"),
        colours=(("red", (200, 40, 60)), ("purple", (120, 60, 160)), ("green", (50, 150, 80)),
                 ("blue", (50, 90, 200)), ("yellow", (230, 190, 50))),
        height=(48, 66),
        aspect=0.42,
        placement="ground",
    ),
    Category(
        name="man",
        noun="man",
        audible=True,
        train_prior=0.45,
        look="standing figure: head with short hair, shirt, trousers, arms",
        sound="speech-like voiced syllables: glottal pulses at 90-140 Hz through moving vowel formants",
        cue="the mouth is open",
        cue_on=("his mouth is open", "he has his mouth open"),
        cue_off=("his mouth is closed", "he keeps his lips together"),
        colours=(("blue", (40, 70, 170)), ("green", (40, 120, 60)), ("grey", (120, 120, 124)),
                 ("orange", (220, 120, 40)), ("white", (232, 232, 228))),
        height=(50, 68),
        aspect=0.45,
        placement="ground",
    ),
    Category(
        name="drum",
        noun="drum",
        audible=True,
        train_prior=0.35,
        look="cylinder with a pale drumhead on top and a zig-zag rope pattern on the shell",
        sound="drum hits: 2-4 a second, a low tone with a falling pitch plus a noise burst",
        cue="a drumstick is raised above the head",
        cue_on=("a stick is raised above it", "a drumstick is lifted over it"),
        cue_off=("the sticks lie on its head", "a drumstick rests on it"),
        colours=(("red", (180, 30, 40)), ("blue", (40, 60, 160)), ("green", (40, 120, 70)),
                 ("silver", (180, 182, 190))),
        height=(26, 38),
        aspect=1.0,
        placement="ground",
    ),
    Category(
        name="clock",
        noun="clock",
        audible=True,
        train_prior=0.25,
        look="tall wooden case with a round white face, hands and a pendulum window",
        sound="ticking: 1-2 sharp band-limited clicks a second (tick-tock pitch alternation)",
        cue="the pendulum is swung to one side",
        cue_on=("its pendulum is swung to one side", "its pendulum hangs at an angle"),
        cue_off=("its pendulum hangs straight down", "its pendulum is still and upright"),
        colours=(("brown", (120, 70, 36)), ("black", (40, 34, 32)), ("gold", (200, 160, 60))),
        height=(40, 56),
        aspect=0.45,
        placement="wall",
    ),
    Category(
        name="car",
        noun="car",
        audible=True,
        train_prior=0.2,
        look="low body with a rounded cabin, light-blue windows, black wheels with grey hubs",
        sound="engine hum: a 30-60 Hz harmonic series with firing-rate amplitude modulation and rumble",
        cue="exhaust smoke comes out of the back",
        cue_on=("smoke comes out of its exhaust", "a puff of smoke trails behind it"),
        cue_off=("no smoke is at its exhaust", "nothing comes out of its exhaust"),
        colours=(("red", (190, 30, 30)), ("blue", (40, 80, 190)), ("silver", (175, 178, 184)),
                 ("green", (40, 140, 70)), ("yellow", (230, 200, 40))),
        height=(24, 32),
        aspect=2.1,
        placement="ground",
    ),
    Category(
        name="lamp",
        noun="lamp",
        audible=False,
        train_prior=None,
        look="floor lamp: round base, thin pole, trapezoid shade",
        sound="never sounds",
        cue="distractor: the bulb glows (has nothing to do with sound)",
        cue_on=("its light is on", "it glows brightly"),
        cue_off=("its light is off", "it is switched off"),
        colours=(("white", (236, 230, 210)), ("green", (60, 140, 90)), ("red", (190, 50, 50)),
                 ("blue", (60, 90, 180))),
        height=(44, 60),
        aspect=0.45,
        placement="ground",
    ),
    Category(
        name="plant",
        noun="potted plant",
        audible=False,
        train_prior=None,
        look="pot with a rim and a bunch of leaf ellipses",
        sound="never sounds",
        cue="distractor: a flower has opened (has nothing to do with sound)",
        cue_on=("a flower has opened on it", "it carries an open flower"),
        cue_off=("it has no open flower", "its buds are closed"),
        colours=(("terracotta", (190, 100, 60)), ("blue", (60, 90, 170)), ("white", (230, 230, 226))),
        height=(32, 48),
        aspect=0.75,
        placement="ground",
    ),
)  # fmt: skip

CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
AUDIBLE: tuple[str, ...] = tuple(c.name for c in CATEGORIES if c.audible)
SILENT: tuple[str, ...] = tuple(c.name for c in CATEGORIES if not c.audible)


def label2idx() -> dict[str, int]:
    """SynthAVS's own class list: background 0, then every category (audible and silent)."""
    out = {"background": 0}
    for i, c in enumerate(CATEGORIES, start=1):
        out[c.name] = i
    return out


# ---- SynthAVS v2: sound families (docs/synthavs.md, "SynthAVS v2") --------------------------------
# Members of a family look clearly different and *sound alike*: in v2 every object of a family draws
# its voice from the same pool (the sound recipes of all its members, pitch and rate ranges pooled),
# so the audio can say that "a string instrument" sounds but not which one. AVSS class names as above.
FAMILIES: dict[str, tuple[str, ...]] = {
    "strings": ("guitar", "piano"),
    "voices": ("man", "woman"),
    "engines": ("car", "emergency-car"),
    "animals": ("dog", "bird"),
    "percussion": ("drum", "clock"),
}
FAMILY_OF: dict[str, str] = {c: f for f, members in FAMILIES.items() for c in members}

# v2 captions say, once for the whole clip, whether an object is the one making the sound ("someone
# plays the guitar") or a bystander ("nobody touches the piano"): (active phrases, idle phrases).
# Silent categories keep their distractor phrases (``cue_on`` / ``cue_off``).
ACTIVITY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "guitar": (("someone is playing it", "a musician strums it"),
               ("nobody is playing it", "it leans there unused")),
    "piano": (("someone is playing it", "a pianist sits at its keys"),
              ("nobody is playing it", "its lid is closed and nobody sits at it")),
    "man": (("he is talking", "he is speaking to someone"),
            ("he is listening quietly", "he stands there in silence")),
    "woman": (("she is talking", "she is speaking to someone"),
              ("she is listening quietly", "she stands there in silence")),
    "car": (("its engine is running", "it is revving its engine"),
            ("it is parked with the engine off", "its engine is switched off")),
    "emergency-car": (("it is on a call with its siren on", "its siren is on"),
                      ("it is parked with its siren off", "its siren is switched off")),
    "dog": (("it is barking", "it is barking at something"),
            ("it is lying quietly", "it is calm and quiet")),
    "bird": (("it is singing", "it is chirping loudly"),
             ("it is sitting quietly", "it is silent")),
    "drum": (("someone is beating it", "a drummer is playing it"),
             ("nobody is playing it", "its sticks lie unused")),
    "clock": (("it is ticking loudly", "its pendulum is swinging"),
              ("it has stopped", "its pendulum is still")),
}  # fmt: skip
