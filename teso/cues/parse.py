"""Parse a reasoner's answer into cue words, normalise them, map them onto a vocabulary.

Parsing order (the ``method`` recorded with every answer):

1. ``strict`` — the requested format: the last line that starts with ``Answer:`` holds a JSON list of
   strings or the word ``none``.
2. ``tolerant`` — an explicit answer marker is still required (``Answer``, ``Final answer``,
   ``Sounding objects``, ``Sounding object`` followed by ``:``, case-insensitive, markdown
   bold allowed, the last such marker wins) but what follows may be a Python-style list with single
   quotes, a bulleted list on the following lines, or a list separated by commas / ``and``; ``none``,
   ``nothing``, ``no sounding object(s)`` mean the empty list.
3. Anything else is **malformed**: the raw text is kept and flagged; no word is guessed from free prose.
   An item longer than :data:`MAX_CUE_WORDS` words also makes the answer malformed (it is a sentence,
   not an object name).

Normalisation of a cue: lowercase, strip quotes and punctuation, drop leading articles and simple
quantifiers (``a``, ``the``, ``two``, ``some``...), singularise the last word (irregular table, then
suffix rules), collapse spaces. Duplicates are removed, keeping the first occurrence.

Vocabulary mapping (:class:`Vocabulary`): exact name (spaces and hyphens equivalent) -> synonym table
-> head noun (last word) as a name -> head noun in the synonym table; otherwise the cue is unmapped.
A synonym may list several categories (``"vocalist": ["man", "woman"]``): the cue then counts for each
of them. The default AVSS table lists only unambiguous synonyms; ambiguous words such as ``vocalist``,
``singer`` or ``person`` are left out on purpose and stay unmapped unless a table given by the user
says otherwise.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from teso.errors import TesoError

MAX_CUE_WORDS = 4

_MARKER = re.compile(
    r"^[\s>*_#-]*(?:final\s+answer|answer|sounding\s+objects?)\s*[*_]*\s*:\s*[*_]*\s*(.*)$",
    re.IGNORECASE,
)
_STRICT = re.compile(r"^Answer:\s*(\[.*\]|none)\s*$")
_NONE_WORDS = {"none", "nothing", "no sounding object", "no sounding objects", "no object", "[]", "n/a"}
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*)$")

_ARTICLES = {
    "a", "an", "the", "some", "several", "many", "two", "three", "four", "five", "one", "another", "few",
    "multiple", "various",
}  # fmt: skip
_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "geese": "goose",
    "mice": "mouse", "teeth": "tooth", "feet": "foot", "wolves": "wolf", "knives": "knife",
    "calves": "calf", "leaves": "leaf", "halves": "half", "shelves": "shelf", "oxen": "ox",
    "policemen": "policeman", "firemen": "fireman", "fishermen": "fisherman", "buses": "bus",
    "gases": "gas", "lenses": "lens", "canvases": "canvas", "walruses": "walrus", "octopuses": "octopus",
    "circuses": "circus", "choruses": "chorus", "cactuses": "cactus", "cacti": "cactus",
}  # fmt: skip
# Words that end in "s" but are singular (or identical in both numbers).
_INVARIANT = {
    "bus", "glass", "bass", "species", "sheep", "fish", "deer", "series", "news", "chess", "grass",
    "cactus", "octopus", "walrus", "lens", "canvas", "gas", "class", "boss", "dress", "cross", "moss",
    "aircraft", "hippopotamus", "circus", "bonus", "virus", "chorus", "status", "tennis", "pants",
    "jeans", "scissors", "headphones", "glasses", "cymbals", "clothes", "binoculars", "shorts",
}  # fmt: skip
_O_ES = {
    "tomatoes": "tomato",
    "potatoes": "potato",
    "heroes": "hero",
    "echoes": "echo",
    "volcanoes": "volcano",
}


@dataclass(frozen=True)
class ParseResult:
    """Normalised cues of one answer; ``method`` is ``strict``, ``tolerant`` or ``None`` when malformed."""

    cues: list[str]
    malformed: bool
    method: str | None
    reason: str = ""


def singularise(word: str) -> str:
    """The singular of one lowercase English noun (rules good enough for object names)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _INVARIANT or len(word) <= 3:
        return word
    if word in _O_ES:
        return _O_ES[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zzes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def normalise_cue(text: str) -> str:
    """Lowercase, no quotes or punctuation, no leading articles, singular head; ``""`` if nothing is left."""
    text = text.strip().lower()
    text = re.sub(r"[\"'`“”‘’()\[\]{}.,;:!?*_]", " ", text)
    words = [w for w in re.split(r"\s+", text) if w]
    while words and words[0] in _ARTICLES:
        words.pop(0)
    if not words:
        return ""
    words[-1] = singularise(words[-1])
    return " ".join(words)


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return list(seen)


def _split_free_list(text: str) -> list[str]:
    text = text.strip().rstrip(".")
    parts = re.split(r"\s*(?:,|;|\band\b|&|/)\s*", text)
    return [p for p in (s.strip() for s in parts) if p]


def _finish(items: Sequence[str], method: str) -> ParseResult:
    cues = []
    for item in items:
        if not isinstance(item, str):
            return ParseResult([], True, None, f"list item {item!r} is not a string")
        cue = normalise_cue(item)
        if len(cue.split()) > MAX_CUE_WORDS:
            return ParseResult([], True, None, f"item {item!r} is a phrase, not an object name")
        cues.append(cue)
    return ParseResult(_dedupe(cues), False, method)


def parse_answer(text: str) -> ParseResult:
    """Cues from a reasoner's raw output (see the module docstring for the exact rules)."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    for line in reversed(lines):
        m = _STRICT.match(line.strip())
        if not m:
            continue
        body = m.group(1)
        if body == "none":
            return ParseResult([], False, "strict")
        try:
            items = json.loads(body)
        except json.JSONDecodeError:
            break  # an Answer line with a broken list: let the tolerant rules look at it
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return _finish(items, "strict")
        break

    for idx in range(len(lines) - 1, -1, -1):
        m = _MARKER.match(lines[idx])
        if not m:
            continue
        body = m.group(1).strip().strip("`").strip()
        if not body:
            # A bulleted list on the lines after the marker.
            bullets = []
            for nxt in lines[idx + 1 :]:
                b = _BULLET.match(nxt)
                if b is None:
                    if nxt.strip():
                        break
                    continue
                bullets.append(b.group(1))
            if bullets:
                return _finish(bullets, "tolerant")
            return ParseResult([], True, None, "answer marker without any objects")
        if body.lower().rstrip(".") in _NONE_WORDS:
            return ParseResult([], False, "tolerant")
        if body.startswith("[") and body.rstrip(".").endswith("]"):
            try:
                items = ast.literal_eval(body.rstrip("."))
            except (ValueError, SyntaxError):
                return ParseResult([], True, None, "answer list does not parse")
            if not isinstance(items, list | tuple):
                return ParseResult([], True, None, "answer is not a list")
            return _finish(list(items), "tolerant")
        return _finish(_split_free_list(body), "tolerant")
    return ParseResult([], True, None, "no 'Answer:' line")


# Unambiguous synonyms onto the AVSS classes; keys are normalised cues.
AVSS_SYNONYMS: dict[str, list[str]] = {
    "puppy": ["dog"], "hound": ["dog"], "kitten": ["cat"], "kitty": ["cat"], "guy": ["man"],
    "gentleman": ["man"], "male": ["man"], "lady": ["woman"], "female": ["woman"], "infant": ["baby"],
    "toddler": ["baby"], "chick": ["hen"], "chicken": ["hen"], "rooster": ["hen"], "cockerel": ["hen"],
    "pony": ["horse"], "foal": ["horse"], "lamb": ["sheep"], "piglet": ["pig"], "hog": ["pig"],
    "drum kit": ["drum"], "drum set": ["drum"], "drumset": ["drum"], "snare": ["drum"],
    "police car": ["emergency-car"], "ambulance": ["emergency-car"], "fire truck": ["emergency-car"],
    "fire engine": ["emergency-car"], "plane": ["airplane"], "aeroplane": ["airplane"],
    "jet": ["airplane"], "airliner": ["airplane"], "chopper": ["helicopter"], "ship": ["boat"],
    "motorbike": ["motorcycle"], "scooter": ["motorcycle"], "lawn mower": ["mower"],
    "lawnmower": ["mower"], "hair dryer": ["hair-dryer"], "hairdryer": ["hair-dryer"],
    "blow dryer": ["hair-dryer"], "vacuum": ["vacuum-cleaner"], "hoover": ["vacuum-cleaner"],
    "rocket": ["missile-rocket"], "missile": ["missile-rocket"], "rifle": ["gun"], "pistol": ["gun"],
    "shotgun": ["gun"], "fiddle": ["violin"], "sax": ["saxophone"], "synthesizer": ["keyboard"],
    "electric piano": ["piano"], "grand piano": ["piano"], "xylophone": ["marimba"],
    "hang drum": ["handpan"], "hang": ["handpan"], "chainsaw": ["saw"], "hair clipper": ["clipper"],
    "trimmer": ["clipper"], "locomotive": ["train"], "lorry": ["truck"], "atv": ["utv"],
    "quad bike": ["utv"], "frying pan": ["frying-food"], "frying food": ["frying-food"],
    "wall clock": ["clock"], "alarm clock": ["clock"], "donkeys": ["donkey"], "parakeet": ["parrot"],
    "macaw": ["parrot"], "cub": ["lion"],
}  # fmt: skip


def _key(name: str) -> str:
    return name.replace("-", " ").strip()


@dataclass
class Vocabulary:
    """Category names plus a synonym table; :meth:`map` turns a cue into zero or more category names."""

    names: list[str]
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_key = {_key(n): n for n in self.names}
        self._syn: dict[str, list[str]] = {}
        for word, targets in self.synonyms.items():
            bad = [t for t in targets if t not in self.names]
            if bad:
                raise TesoError(f"synonym table: {word!r} maps to {bad}, which are not vocabulary names")
            self._syn[_key(normalise_cue(word))] = list(targets)

    def map(self, cue: str) -> list[str]:
        """Categories for a normalised cue: exact, synonym, head noun, head noun synonym; ``[]`` if none."""
        key = _key(cue)
        if key in self._by_key:
            return [self._by_key[key]]
        if key in self._syn:
            return list(self._syn[key])
        head = key.split()[-1] if key else ""
        if head and head != key:
            if head in self._by_key:
                return [self._by_key[head]]
            if head in self._syn:
                return list(self._syn[head])
        return []

    def map_all(self, cues: Iterable[str]) -> tuple[list[str], list[str]]:
        """(mapped category names without duplicates, cues that map to nothing)."""
        mapped, unmapped = [], []
        for cue in cues:
            cats = self.map(cue)
            mapped.extend(cats)
            if not cats:
                unmapped.append(cue)
        return _dedupe(mapped), unmapped

    @classmethod
    def avss(cls, synonyms: Mapping[str, list[str]] | None = None) -> Vocabulary:
        """The 70 AVSS object classes (no background) with :data:`AVSS_SYNONYMS` (or a given table)."""
        from teso.data.classes import AVSS_CLASSES

        return cls(
            [c for c in AVSS_CLASSES if c != "background"],
            dict(AVSS_SYNONYMS if synonyms is None else synonyms),
        )

    @classmethod
    def from_label2idx(cls, path: str | Path, synonyms: Mapping[str, list[str]] | None = None) -> Vocabulary:
        """Names from a ``label2idx.json`` ({name: index}), background excluded; synonyms kept if valid."""
        path = Path(path)
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise TesoError(
                f"{path}: cannot read the label index ({err}); expected a JSON {{name: index}}"
            ) from err
        if not isinstance(table, dict) or not table:
            raise TesoError(f"{path}: expected a non-empty JSON object {{name: index}}")
        names = [n for n, _ in sorted(table.items(), key=lambda kv: kv[1]) if n != "background"]
        if synonyms is None:
            synonyms = {w: t for w, t in AVSS_SYNONYMS.items() if all(x in names for x in t)}
        return cls(names, dict(synonyms))


def load_synonyms(path: str | Path) -> dict[str, list[str]]:
    """A user synonym table: JSON ``{"word": ["category", ...]}`` (a string value means one category)."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TesoError(
            f"--synonyms {path}: cannot read ({err}); expected JSON {{word: [categories]}}"
        ) from err
    if not isinstance(table, dict):
        raise TesoError(f"--synonyms {path}: expected a JSON object {{word: [categories]}}")
    out = {}
    for word, targets in table.items():
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise TesoError(f"--synonyms {path}: entry {word!r} must be a category name or a list of them")
        out[word] = targets
    return out
