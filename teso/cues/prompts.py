"""Prompt templates for the captioner and the reasoner, versioned and selectable by name.

The paper's few-shot chain-of-thought prompt was never published (SPEC §4). ``fewshot-cot`` is our own
template following its recipe: (1) list the objects of the description, (2) group them by category and
judge whether each category can make sound, (3) judge which of them sound at the same time given the
described interactions, (4) answer with the group of higher confidence. The demonstrations cover a scene
with no sounding object, one, several, audible objects that stay static, and a complex multi-source
scene. Every template ends with the same machine-readable line, ``Answer: ["man", "guitar"]`` or
``Answer: none``, parsed by :mod:`teso.cues.parse`.

The other nine templates reproduce the variants of the paper's Table G9 (numbers 1-10). Each template
carries a ``version`` (bumped by hand whenever its text changes) and a content hash; both go into the
provenance of every stored answer, so answers from different prompt texts are never mixed silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from teso.errors import TesoError

# The paper's captioning prompt (§3.2.1), verbatim.
CAPTION_INSTRUCTION = (
    "Please carefully understand the image content and provide as rich a description as possible."
)
CAPTION_PROMPT_NAME = "dense-caption"
CAPTION_PROMPT_VERSION = "1"

ANSWER_FORMAT = (
    "End with exactly one final line: `Answer: ` followed by a JSON list of short object names "
    '(lowercase, singular, no articles), for example `Answer: ["man", "guitar"]`, '
    "or `Answer: none` when nothing is making sound."
)

_COT_INSTRUCTION = (
    "You read the description of one video frame and find the objects that are making sound right now. "
    "Think step by step:\n"
    "1. Objects: list every object mentioned in the description.\n"
    "2. Categories: group the objects by category and say whether each category can make sound at all.\n"
    "3. Sounding together: from the described actions and interactions, judge which of the objects that "
    "can make sound are making sound at the same time (a person singing while playing a guitar: both "
    "sound; hands off the strings: the guitar is silent; a closed piano or a sleeping dog is silent).\n"
    "4. Answer with the group you are most confident about.\n" + ANSWER_FORMAT
)

_DIRECT_INSTRUCTION = (
    "You read the description of one video frame and name the objects that are making sound right now. "
    "Reply with the answer line only. " + ANSWER_FORMAT
)


@dataclass(frozen=True)
class Demo:
    """One demonstration: a description, the chain of thought, and the answer list (empty = none)."""

    description: str
    reasoning: str
    answer: tuple[str, ...]

    def answer_line(self) -> str:
        return "Answer: " + (json.dumps(list(self.answer)) if self.answer else "none")


DEMOS: dict[str, Demo] = {
    "none": Demo(
        "A quiet living room with a grey sofa, a wooden table with a vase of flowers on it and a bookshelf "
        "against the wall. Sunlight falls through the window; nobody is in the room.",
        "Objects: sofa, table, vase, flower, bookshelf, window.\n"
        "Categories: furniture (sofa, table, bookshelf) and decoration (vase, flower, window) cannot make "
        "sound on their own.\n"
        "Sounding together: no object can make sound and nothing is happening in the room.",
        (),
    ),
    "one": Demo(
        "A brown dog stands on the grass of a park with its mouth wide open, barking at something out of "
        "view. A wooden bench and some trees are in the background.",
        "Objects: dog, grass, bench, tree.\n"
        "Categories: animal (dog) can make sound; plants (grass, tree) and furniture (bench) cannot.\n"
        "Sounding together: the dog is barking, so it is the only sounding object.",
        ("dog",),
    ),
    "several": Demo(
        "A bearded man sings into a microphone while strumming an acoustic guitar on a small stage. "
        "Colourful lights shine behind him and a speaker stands at the edge of the stage.",
        "Objects: man, microphone, guitar, stage, light, speaker.\n"
        "Categories: person (man) can make sound; instrument (guitar) can make sound; equipment "
        "(microphone, speaker, light) and the stage do not produce a sound of their own.\n"
        "Sounding together: the man is singing while strumming the guitar, so both sound at the same time.",
        ("man", "guitar"),
    ),
    "static": Demo(
        "A young woman plays the violin on a street corner with her eyes closed. Next to her a cello rests "
        "in an open case and an upright piano stands with its lid closed; nobody touches them.",
        "Objects: woman, violin, cello, case, piano, street.\n"
        "Categories: person (woman) can make sound; instruments (violin, cello, piano) can make sound; the "
        "case and the street cannot.\n"
        "Sounding together: the woman plays the violin, so the violin sounds; she is not singing or "
        "talking; the cello and the piano are untouched and stay silent.",
        ("violin",),
    ),
    "complex": Demo(
        "On a busy city street a police car with flashing lights drives past. A man on the pavement talks "
        "on his phone, a woman next to him holds a guitar with her hands off the strings, and a small dog "
        "sleeps by a shop door.",
        "Objects: police car, light, street, man, phone, woman, guitar, dog, door.\n"
        "Categories: vehicle (police car) can make sound; people (man, woman) can make sound; instrument "
        "(guitar) can make sound; animal (dog) can make sound; the light, street, phone and door do not "
        "produce a sound of their own here.\n"
        "Sounding together: the police car drives past with its lights on, so its siren and engine sound; "
        "the man is talking; the woman's hands are off the strings, so the guitar is silent; the woman "
        "only holds it and the dog is asleep. The police car and the man sound at the same time.",
        ("police car", "man"),
    ),
}

_FEW_SHOT = ("none", "one", "several", "static", "complex")
_ONE_SHOT = ("several",)


@dataclass(frozen=True)
class Prompt:
    """A reasoner prompt: a system instruction, demonstrations, and the per-frame query.

    ``number`` is the row of the paper's Table G9 it reproduces; ``cot`` whether the demonstrations
    show the reasoning or only the answer line.
    """

    name: str
    version: str
    number: int
    category: str  # instructive, misleading or irrelevant (Table G9)
    instruction: str
    demos: tuple[str, ...] = ()
    cot: bool = False
    summary: str = ""

    def messages(self, description: str | None) -> list[dict[str, str]]:
        """Chat messages ``[{"role", "content"}]`` for one frame.

        ``description=None`` asks about an attached image instead (the ``vlm`` reasoner); the caller
        attaches the image to the last user message.
        """
        msgs = [{"role": "system", "content": self.instruction}]
        for key in self.demos:
            demo = DEMOS[key]
            reply = f"{demo.reasoning}\n{demo.answer_line()}" if self.cot else demo.answer_line()
            msgs.append({"role": "user", "content": f"Description: {demo.description}"})
            msgs.append({"role": "assistant", "content": reply})
        query = (
            "Description: see the attached image." if description is None else f"Description: {description}"
        )
        msgs.append({"role": "user", "content": query})
        return msgs

    @property
    def sha(self) -> str:
        """12 hex digits of the rendered template: changes whenever any of its text changes."""
        blob = json.dumps(self.messages("{description}"), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:12]


def _zero_shot(sentence: str) -> str:
    return f"You read the description of one video frame. {sentence} {ANSWER_FORMAT}"


PROMPTS: dict[str, Prompt] = {
    p.name: p
    for p in (
        Prompt("fewshot-cot", "1", 1, "instructive", _COT_INSTRUCTION, _FEW_SHOT, True,
               "few-shot chain of thought (the default; Table G9 no. 1)"),
        Prompt("oneshot-cot", "1", 2, "instructive", _COT_INSTRUCTION, _ONE_SHOT, True,
               "one-shot chain of thought (TeSO-p; no. 2)"),
        Prompt("zeroshot-cot", "1", 3, "instructive",
               _zero_shot("Let's think step by step to obtain sounding objects in the caption."), (), True,
               "zero-shot chain of thought (no. 3)"),
        Prompt("fewshot-direct", "1", 4, "instructive", _DIRECT_INSTRUCTION, _FEW_SHOT, False,
               "few-shot direct answers (no. 4)"),
        Prompt("oneshot-direct", "1", 5, "instructive", _DIRECT_INSTRUCTION, _ONE_SHOT, False,
               "one-shot direct answer (no. 5)"),
        Prompt("zeroshot-direct", "1", 6, "instructive",
               _zero_shot("Please tell me the sounding objects in the caption."), (), False,
               "zero-shot question (no. 6)"),
        Prompt("most-possible", "1", 7, "misleading",
               _zero_shot("Please tell me the most possible sounding object in the caption."), (), False,
               "misleading: a single object (no. 7)"),
        Prompt("any-objects", "1", 8, "misleading",
               _zero_shot("Please tell me any objects in the caption."), (), False,
               "misleading: any objects (no. 8)"),
        Prompt("background-objects", "1", 9, "misleading",
               _zero_shot("Please tell me the background objects in the caption."), (), False,
               "misleading: background objects (no. 9)"),
        Prompt("random-object", "1", 10, "irrelevant", _zero_shot("Tell me any random object."), (), False,
               "irrelevant: a random object (no. 10)"),
    )
}  # fmt: skip

DEFAULT_PROMPT = "fewshot-cot"


def get_prompt(name: str) -> Prompt:
    """A prompt by name, or by its Table G9 number written ``g9-N``."""
    if name.startswith("g9-"):
        for prompt in PROMPTS.values():
            if f"g9-{prompt.number}" == name:
                return prompt
    if name in PROMPTS:
        return PROMPTS[name]
    known = ", ".join(f"{p.name} (g9-{p.number})" for p in PROMPTS.values())
    raise TesoError(f"--prompt {name!r}: unknown prompt; expected one of: {known}")


def describe_prompts() -> str:
    """One line per prompt: name, version, Table G9 number, category and summary."""
    rows = [f"{'name':<20} {'ver':<4} {'G9':<3} {'category':<12} summary"]
    for p in PROMPTS.values():
        rows.append(f"{p.name:<20} {p.version:<4} {p.number:<3} {p.category:<12} {p.summary}")
    return "\n".join(rows)
