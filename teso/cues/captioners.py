"""Captioners: one frame -> a dense description (SPEC §4).

* ``llava``: LLaVA through ``transformers`` (:class:`~teso.cues.backends.LlavaChat`), batched.
* ``openai``: any OpenAI-compatible server that accepts images (:class:`~teso.cues.backends.OpenAIChat`).
* ``dataset``: the descriptions shipped with the dataset (SynthAVS ``{label}/{uid}/captions.json``).

All use the paper's prompt (:data:`~teso.cues.prompts.CAPTION_INSTRUCTION`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teso.cues.backends import ChatRequest, TextGenerator
from teso.cues.http import BackendError
from teso.cues.prompts import CAPTION_INSTRUCTION, CAPTION_PROMPT_NAME, CAPTION_PROMPT_VERSION
from teso.cues.store import text_sha
from teso.errors import TesoError


@dataclass(frozen=True)
class FrameItem:
    """One frame to process: its key, image, clip folder and (for reasoning) its caption."""

    uid: str
    frame: int
    image: Path
    clip_dir: Path
    caption: str | None = None


class ModelCaptioner:
    """Caption frames with a vision-language generator and the paper's prompt."""

    stage = "caption"

    def __init__(self, generator: TextGenerator, name: str) -> None:
        self.generator = generator
        self.name = name
        self.batch_size = generator.batch_size
        self.concurrency = generator.concurrency

    def provenance(self) -> dict[str, Any]:
        return {
            "captioner": self.name,
            "backend": self.generator.backend,
            "model": self.generator.model,
            "prompt": CAPTION_PROMPT_NAME,
            "prompt_version": CAPTION_PROMPT_VERSION,
            "prompt_sha": text_sha(CAPTION_INSTRUCTION),
        }

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        """``[{"caption": str}]`` or ``[{"error": str}]`` per item."""
        requests = [ChatRequest([{"role": "user", "content": CAPTION_INSTRUCTION}], it.image) for it in items]
        try:
            texts = self.generator.generate(requests)
        except BackendError as err:
            return [{"error": str(err)} for _ in items]
        return [{"caption": t} if t.strip() else {"error": "empty caption"} for t in texts]


class DatasetCaptioner:
    """Read the captions a dataset ships: ``{clip_dir}/captions.json``, a list of T strings."""

    stage = "caption"
    batch_size = 256
    concurrency = 1
    name = "dataset"

    def __init__(self) -> None:
        self._cache: dict[Path, list[str]] = {}

    def provenance(self) -> dict[str, Any]:
        return {"captioner": "dataset", "backend": "dataset", "model": "captions.json", "prompt": None,
                "prompt_version": None, "prompt_sha": None}  # fmt: skip

    def _clip(self, clip_dir: Path) -> list[str]:
        if clip_dir not in self._cache:
            path = clip_dir / "captions.json"
            if not path.is_file():
                raise TesoError(
                    f"{path}: missing; the 'dataset' captioner reads the captions a dataset ships "
                    "(SynthAVS); for AVSBench use --captioner llava or --captioner openai"
                )
            try:
                caps = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise TesoError(f"{path}: cannot read ({err}); expected a JSON list of strings") from err
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise TesoError(f"{path}: expected a JSON list of strings, one per frame")
            self._cache[clip_dir] = caps
        return self._cache[clip_dir]

    def process(self, items: list[FrameItem]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            caps = self._clip(it.clip_dir)
            if it.frame >= len(caps):
                raise TesoError(
                    f"{it.clip_dir / 'captions.json'}: {len(caps)} captions, but frame {it.frame} exists"
                )
            out.append({"caption": caps[it.frame]})
        return out
