"""Parse a reasoner's answer into cue words, normalise them, map them onto a vocabulary.

First the model's own reply is separated from turns it echoes or invents (:func:`reply_lines`): a
``Description: X`` / ``Caption: X`` line whose X is not the frame's own description opens such a
turn, which ends with its first answer. Then the **first** answer of the reply counts (the one local
generation stops at, :func:`answer_end`); the ``method`` recorded with every answer:

1. ``strict`` — the requested format: a line ``Answer:`` with a JSON list of strings or ``none``.
2. ``tolerant`` — an explicit answer marker is still required (``Answer``, ``Final answer``, ``The
   answer is``, ``Sounding objects``, ``The objects making sound are``...; case-insensitive,
   markdown bold and a courtesy such as "Sure!" allowed) but what follows may be a Python-style
   list, a bulleted or numbered list on the following lines, or names separated by commas /
   ``and``, each cut before its explanation; a sentence that says nothing sounds
   (:func:`is_none_phrase`: "none of the objects", "No object is producing sound.") means the
   empty list.
3. Without a marker only a reply whose first sentence says nothing sounds ("None.", "Nothing is
   making sound."), a bare list, or a reply made only of a bulleted list of short names is read.
   Anything else is **malformed**: the raw text is kept and flagged; no word is guessed from free
   prose. An item longer than :data:`MAX_CUE_WORDS` words also makes the answer malformed (it is a
   sentence, not an object name).

Normalisation of a cue: lowercase, strip quotes and punctuation, drop leading articles and simple
quantifiers (``a``, ``the``, ``two``, ``some``...), singularise the last word (irregular table, then
suffix rules), collapse spaces. Duplicates are removed, keeping the first occurrence.

Vocabulary mapping (:class:`Vocabulary`): exact name (spaces and hyphens equivalent) -> synonym table
-> head noun (last word) as a name -> head noun in the synonym table; otherwise the cue is unmapped.
A free-text phrase is first cut to the noun phrase it names ("man playing guitar" -> "man").
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

# An answer marker at the start of a line: "Answer:", "Final answer:", "The answer is", "Sounding
# objects:", "The objects making sound are", optionally after a courtesy ("Sure! ...") and markdown.
# Forms ending in "is"/"are" need no colon ("The sounding objects are the man and the guitar.").
_MARKER = re.compile(
    r"^[\s>*_#-]*(?:(?:sure|okay|ok|certainly|of\s+course|yes|great)\b[!,.]*\s*)?[*_]*\s*"
    r"(?:(?:the\s+|my\s+)?(?:final\s+)?answer(?:\s+is)?"
    r"|(?:here\s+(?:are|is)\s+)?(?:the\s+)?(?:sounding\s+objects?"
    r"|objects?\s+(?:that\s+(?:are|is)\s+)?(?:making|producing|emitting)\s+(?:a\s+)?sounds?)"
    r"(?:\s+in\s+(?:the|this)\s+\w+)?(?:\s+(?:are|is))?)"
    r"(?:\s*[*_]*\s*:|(?<=are)\b|(?<=is)\b)\s*[*_]*\s*(.*)$",
    re.IGNORECASE,
)
_STRICT = re.compile(r"^Answer:\s*(\[.*\]|none)\s*$")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(.*)$")
# A line opening a user turn of the prompt: the model is echoing a demonstration (or inventing one).
_TURN = re.compile(r"^[\s>*_#-]*(?:description|caption)\s*[*_]*\s*:\s*[*_]*\s*(.*)$", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s+(?=(?:final\s+)?answer\s*[*_]*\s*:)", re.IGNORECASE)
# Where a free-text answer stops naming objects and starts explaining them.
_EXPLANATION = re.compile(
    r"(?<=[^\s.])\.(?:\s|$)|\s[-–—]{1,2}\s|:|\s(?:because|since|as\s+(?:they|it|he|she)|due\s+to)\b",
    re.IGNORECASE,
)
# Words a "nothing is sounding" sentence is made of, after its head (none / nothing / no ... object).
_NONE_HEADS = {"none", "nothing", "nobody", "na"}
_NONE_NOUNS = {"object", "objects", "item", "items", "thing", "things", "one", "ones", "source", "sources",
               "sound", "sounds", "noise", "noises"}  # fmt: skip
_NONE_TAIL = _NONE_NOUNS | {
    "of", "the", "these", "those", "is", "are", "was", "were", "making", "producing", "emitting",
    "makes", "produces", "make", "produce", "a", "any", "sounding", "in", "this", "that", "caption",
    "description", "frame", "image", "scene", "picture", "here", "at", "all", "currently", "right",
    "now", "audible", "appears", "appear", "to", "be", "seems", "seem", "visible", "mentioned", "can",
    "heard", "clearly", "obviously", "likely", "probably", "it", "which", "there", "particular",
    "specific", "obvious", "clear", "actually", "really", "answer", "my",
}  # fmt: skip
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


def is_none_phrase(text: str, allow_bare_no: bool = True) -> bool:
    """Whether ``text`` says that nothing is sounding: "none", "None.", "nothing is making sound",
    "none of the objects", "no object is producing sound", "there are no sounding objects", "n/a".

    Only sentences made of such words count: "nothing suggests the dog is quiet" is not one. A bare
    "no" counts only when ``allow_bare_no`` (after an answer marker, not as a whole reply).
    """
    clean = re.sub(r"[^a-z0-9]+", " ", text.lower().replace("n/a", "na")).split()
    if clean[:3] == ["the", "answer", "is"] or clean[:3] == ["my", "answer", "is"]:
        clean = clean[3:]
    if clean[:2] in (["there", "is"], ["there", "are"]):
        clean = clean[2:]
    if not clean or clean in (["no"], ["nope"]):
        return bool(clean) and allow_bare_no
    head, rest = clean[0], clean[1:]
    if head == "no":
        # "no object", "no sounding objects", "no audible source": a thing-word within three words.
        if not any(w in _NONE_NOUNS for w in rest[:3]):
            return False
    elif head not in _NONE_HEADS:
        return False
    return all(w in _NONE_TAIL for w in rest)


def _trim(item: str) -> str:
    """An answer item without markdown, parentheticals and the explanation after it."""
    item = re.sub(r"\([^)]*\)?", " ", item.replace("**", "").replace("__", "").replace("`", ""))
    return _EXPLANATION.split(item, maxsplit=1)[0].strip()


def _split_free_list(text: str) -> list[str]:
    text = _trim(text).rstrip(".")
    parts = re.split(r"\s*(?:,|;|\band\b|&|/)\s*", text)
    return [p for p in (s.strip() for s in parts) if p]


def _finish(items: Sequence[str], method: str) -> ParseResult:
    cues = []
    for item in items:
        if not isinstance(item, str):
            return ParseResult([], True, None, f"list item {item!r} is not a string")
        if is_none_phrase(item):  # Answer: ["none"]
            continue
        cue = normalise_cue(item)
        if len(cue.split()) > MAX_CUE_WORDS:
            return ParseResult([], True, None, f"item {item!r} is a phrase, not an object name")
        cues.append(cue)
    return ParseResult(_dedupe(cues), False, method)


def _text_key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _is_query(caption: str, query_key: str | None) -> bool:
    """Whether an echoed "Description: ..." line restates the frame's own description (or its start)."""
    cap = _text_key(caption)
    if query_key is None or not cap:
        return False
    return cap.startswith(query_key) or (len(cap) >= min(len(query_key), 15) and query_key.startswith(cap))


def reply_lines(text: str, query: str | None = None) -> list[str]:
    """The lines of a model's output that answer the frame's own description ``query``.

    A line ``Description: X`` / ``Caption: X`` opens a turn the model echoes or invents: unless X is
    ``query`` (the model restating its input), that turn's lines and its first answer (with the
    bulleted list after a bare marker) are dropped, and the lines after that answer count again. So a
    model that re-generates a demonstration ("Caption: ... Answer: dog") before its own answer, or
    goes on inventing demonstrations after it, gives its own answer. With ``query`` None every such
    turn is an echo.
    """
    query_key = _text_key(query) if query else None
    lines: list[str] = []
    for line in text.strip().splitlines():
        if _TURN.match(line):
            lines.extend(_INLINE_ANSWER.split(line, maxsplit=1))  # "Caption: ... Answer: dog"
        else:
            lines.append(line.rstrip())
    out: list[str] = []
    echo = bullets = False
    for line in lines:
        turn = _TURN.match(line)
        if turn:
            echo, bullets = not _is_query(turn.group(1), query_key), False
            continue
        if bullets:
            if not line.strip() or _BULLET.match(line):
                continue
            bullets = False
        if echo:
            marker = _MARKER.match(line)
            if marker:
                echo, bullets = False, not marker.group(1).strip()
            continue
        out.append(line)
    return out


def _at_marker(lines: list[str], idx: int) -> ParseResult | None:
    """The answer at line ``idx`` when it holds an answer marker, else None."""
    strict = _STRICT.match(lines[idx].strip())
    if strict:
        body = strict.group(1)
        if body == "none":
            return ParseResult([], False, "strict")
        try:
            items = json.loads(body)
        except json.JSONDecodeError:
            items = None  # a broken list: the tolerant rules look at it
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return _finish(items, "strict")
    m = _MARKER.match(lines[idx])
    if not m:
        return None
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
            bullets.append(_trim(b.group(1)))
        if bullets:
            return _finish(bullets, "tolerant")
        return ParseResult([], True, None, "answer marker without any objects")
    if body.startswith("["):
        close = body.find("]")
        if close < 0:  # a list cut short: its items are still there
            return _finish(_split_free_list(body.lstrip("[")), "tolerant")
        try:
            items = ast.literal_eval(body[: close + 1])
        except (ValueError, SyntaxError):
            if _UNQUOTED_LIST.fullmatch(body[1:close]):  # chat models often drop the quotes: [dog, guitar]
                return _finish(_split_free_list(body[1:close]), "tolerant")
            return ParseResult([], True, None, "answer list does not parse")
        return _finish(list(items), "tolerant")
    if is_none_phrase(_trim(body)) or is_none_phrase(body):
        return ParseResult([], False, "tolerant")
    return _finish(_split_free_list(body), "tolerant")


# The inside of a bracketed list written without quotes: names, spaces, commas, hyphens only.
_UNQUOTED_LIST = re.compile(r"[A-Za-z][\w \t,-]*")


def parse_answer(text: str, query: str | None = None) -> ParseResult:
    """Cues from a reasoner's raw output (see the module docstring for the exact rules).

    ``query`` is the frame's own description: a turn the model echoes with another description (a
    demonstration) does not count (:func:`reply_lines`).
    """
    lines = reply_lines(text, query)
    for idx in range(len(lines)):
        res = _at_marker(lines, idx)
        if res is not None:
            return res
    body = "\n".join(lines).strip()
    # No marker. A reply that only says nothing sounds ("None.", "Nothing is making sound."), in its
    # first sentence; a bare list; or only a bulleted list of short names. Never words from prose.
    first = re.split(r"[.!\n]", body, maxsplit=1)[0]
    if body and is_none_phrase(first, allow_bare_no=False):
        return ParseResult([], False, "tolerant")
    if body.startswith("[") and body.endswith("]"):
        try:
            items = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            items = _split_free_list(body[1:-1]) if _UNQUOTED_LIST.fullmatch(body[1:-1]) else None
        if isinstance(items, list):
            return _finish(items, "tolerant")
    filled = [line for line in lines if line.strip()]
    bullets = [_BULLET.match(line) for line in filled]
    if filled and all(bullets):
        items = [b.group(1) for b in bullets if b]
        if all(":" not in i and len(_trim(i).split()) <= MAX_CUE_WORDS for i in items):
            return _finish([_trim(i) for i in items], "tolerant")
    return ParseResult([], True, None, "no 'Answer:' line")


def answer_end(text: str, query: str | None = None) -> int | None:
    """Index in ``text`` just after the first complete answer line of the reply, or None.

    "Complete" means a marker with something after it, ended by a newline; a bare marker may be
    followed by a bulleted list, so it ends nothing by itself. Lines of echoed turns
    (:func:`reply_lines`) are skipped, so generation that stops here never stops at a re-generated
    demonstration's answer.
    """
    lines = text.splitlines(keepends=True)
    pos, seen = 0, 0
    for k, line in enumerate(lines):
        pos += len(line)
        if not line.endswith("\n"):
            return None  # the line is still being written
        reply = reply_lines("".join(lines[: k + 1]), query)
        if len(reply) > seen:
            m = _MARKER.match(reply[-1])
            if m and m.group(1).strip():
                return pos
        seen = len(reply)
    return None


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


# Words after which a free-text cue stops naming its object: verbs, prepositions, relative pronouns.
_RELATIONAL = {"is", "are", "was", "were", "on", "in", "with", "at", "near", "by", "next", "from",
               "that", "who", "which", "while", "and", "under", "behind", "inside", "beside", "to",
               "for", "being", "has", "have", "sits", "stands"}  # fmt: skip
_SOUND_OF = re.compile(
    r"^(?:(?:sound|sounds|noise|noises|voice|voices)\s+(?:of|from)\s+(?:a\s+|an\s+|the\s+)?)+"
)


def _noun_part(key: str) -> str:
    """The noun phrase a free-text cue names: "sound of a dog barking" -> "dog"."""
    words = _SOUND_OF.sub("", key).split()
    for i, w in enumerate(words[1:], start=1):
        if w in _RELATIONAL or (w.endswith("ing") and len(w) > 4):
            words = words[:i]
            break
    return " ".join(words)


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
        """Categories for a normalised cue: exact, synonym, head noun, head noun synonym; ``[]`` if none.

        A free-text phrase is first cut to the noun phrase it names ("man playing guitar" -> "man",
        "sound of a dog" -> "dog", "dog on the grass" -> "dog"), so its head is the object's noun,
        not the last word; a phrase naming no category is rejected (``[]``).
        """
        key = _key(cue)
        if key not in self._by_key and key not in self._syn:
            key = _noun_part(key)
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
