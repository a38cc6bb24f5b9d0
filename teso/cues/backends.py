"""Text generators behind the captioners and reasoners: OpenAI-compatible HTTP, transformers, llama.cpp.

Every generator turns a list of :class:`ChatRequest` into a list of strings, one per request, and says
how the runner should drive it: ``batch_size`` requests per call (batched generation for local
models) and ``concurrency`` calls at once (threads for HTTP). A request that fails for good raises
:class:`~teso.cues.http.BackendError`; the runner records the items of that call as failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from teso.cues.http import OpenAIClient, image_data_url
from teso.cues.parse import answer_end
from teso.errors import TesoError


@dataclass(frozen=True)
class ChatRequest:
    """Chat messages (``[{"role", "content": str}]``) and an optional image for the last user turn."""

    messages: list[dict[str, str]]
    image: Path | None = None


class TextGenerator(Protocol):
    backend: str  # "openai", "transformers", "llamacpp"
    model: str  # model name, directory or file as given
    batch_size: int
    concurrency: int

    def generate(self, requests: list[ChatRequest]) -> list[str]: ...


def _last_user_index(messages: list[dict[str, str]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    raise TesoError("a chat request without a user message")


class OpenAIChat:
    """Any OpenAI-compatible chat-completions server; one request per call, ``concurrency`` at once."""

    backend = "openai"
    batch_size = 1

    def __init__(self, client: OpenAIClient, concurrency: int = 8, max_new_tokens: int = 512) -> None:
        if concurrency < 1:
            raise TesoError(f"--concurrency {concurrency}: expected a positive number of requests")
        self.client = client
        self.model = client.model
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        out = []
        for req in requests:
            messages: list[dict[str, Any]] = [dict(m) for m in req.messages]
            if req.image is not None:
                i = _last_user_index(messages)
                messages[i]["content"] = [
                    {"type": "text", "text": messages[i]["content"]},
                    {"type": "image_url", "image_url": {"url": image_data_url(req.image)}},
                ]
            out.append(self.client.chat(messages, max_tokens=self.max_new_tokens))
        return out


def request_query(request: ChatRequest) -> str | None:
    """The frame's own description in a reasoner request (its last user turn, without the
    ``Description:`` prefix): what tells the model's own answer from an echoed demonstration."""
    for msg in reversed(request.messages):
        if msg["role"] == "user":
            text = msg["content"]
            return text.split(":", 1)[1].strip() if text.lower().startswith("description:") else text
    return None


def cut_at_answer(text: str, query: str | None = None) -> str:
    """``text`` up to and including the reply's first answer line (whole when there is none)."""
    end = answer_end(text if text.endswith("\n") else text + "\n", query)
    return (text[:end] if end is not None else text).strip()


class _AnswerLineStop:
    """A transformers stopping criterion: a row is done once its new text holds a complete answer line
    of its own reply (an echoed demonstration's answer does not stop it; ``queries`` per row)."""

    def __init__(self, tokenizer: Any, prompt_len: int, queries: list[str | None] | None = None) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.queries = queries

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        queries = self.queries or [None] * len(texts)
        done = [answer_end(t, q) is not None for t, q in zip(texts, queries)]
        return torch.tensor(done, device=input_ids.device)


def _torch_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else torch.float16
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise TesoError(f"--dtype {dtype!r}: expected one of {sorted(table)}")
    return table[dtype]


class TransformersChatLM:
    """A causal LM with a chat template (the paper's Llama-2-7B chat), batched greedy generation.

    ``model`` is a local directory or a hub id. Prompts are left-padded so that every row of a batch
    continues right after its own prompt; greedy decoding makes a batch give the same text as one
    request at a time. Each row stops at the first answer line of its own reply
    (:func:`answer_line_generate`; ``stop_at_answer=False`` keeps the whole generation).
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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = str(model)
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer = stop_at_answer
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model)
            self.lm = AutoModelForCausalLM.from_pretrained(self.model, dtype=_torch_dtype(dtype, device))
        except (OSError, ValueError) as err:
            raise TesoError(
                f"--model {self.model}: cannot load a causal LM and its tokenizer ({err})"
            ) from err
        prepare_chat_tokenizer(self.tokenizer, self.model)
        self.lm.to(device).eval()

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        if any(r.image is not None for r in requests):
            raise TesoError(
                f"--model {self.model}: a text-only model cannot read images (use llava or openai)"
            )
        return answer_line_generate(self, requests)


def answer_line_generate(gen: Any, requests: list[ChatRequest]) -> list[str]:
    """Greedy chat decoding by ``gen`` (``tokenizer``, ``lm``, ``device``, ``max_new_tokens``,
    ``stop_at_answer``) that stops each row at the first answer line of its own reply and cuts the
    text there, so a row gives the same text in a batch as alone."""
    queries = [request_query(r) for r in requests]
    stop = (lambda n: [_AnswerLineStop(gen.tokenizer, n, queries)]) if gen.stop_at_answer else None
    decoded = greedy_chat(gen.tokenizer, gen.lm, gen.device, requests, gen.max_new_tokens, stop)
    # The token that completed the answer line may carry the start of the next one: cut it.
    return [cut_at_answer(t, q) if gen.stop_at_answer else t.strip() for t, q in zip(decoded, queries)]


def prepare_chat_tokenizer(tokenizer: Any, model: str) -> None:
    """A chat model's tokenizer, ready for batched greedy decoding: it must have a chat template;
    left padding so every row continues right after its own prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise TesoError(f"--model {model}: the tokenizer has no chat template; use a chat model")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def greedy_chat(
    tokenizer: Any,
    lm: Any,
    device: str,
    requests: list[ChatRequest],
    max_new_tokens: int,
    stopping: Callable[[int], list] | None = None,
) -> list[str]:
    """Greedy continuations of the chat-templated ``requests`` (one batch, left-padded), decoded
    without special tokens and not stripped. ``stopping(prompt_len)`` gives stopping criteria."""
    import torch
    from transformers import StoppingCriteriaList

    texts = [
        tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
        for r in requests
    ]
    # The chat template already holds the BOS token; adding it again would change the prompt.
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    prompt_len = enc["input_ids"].shape[1]
    with torch.inference_mode():
        out = lm.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList(stopping(prompt_len) if stopping else []),
        )
    return tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)


class LlavaChat:
    """LLaVA (``LlavaForConditionalGeneration`` + its processor; the paper's LLaVA-1.5-7B), batched."""

    backend = "transformers"
    concurrency = 1

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 256,
    ) -> None:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.model = str(model)
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        try:
            self.processor = AutoProcessor.from_pretrained(self.model)
            self.lm = LlavaForConditionalGeneration.from_pretrained(
                self.model, dtype=_torch_dtype(dtype, device)
            )
        except (OSError, ValueError) as err:
            raise TesoError(
                f"--caption-model {self.model}: cannot load LLaVA and its processor ({err})"
            ) from err
        if not getattr(self.processor, "chat_template", None):
            raise TesoError(f"--caption-model {self.model}: the processor has no chat template")
        self.processor.tokenizer.padding_side = "left"
        if self.processor.tokenizer.pad_token is None:
            self.processor.tokenizer.pad_token = self.processor.tokenizer.eos_token
        self.lm.to(device).eval()

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        import torch
        from PIL import Image

        texts, images = [], []
        for req in requests:
            if req.image is None:
                raise TesoError(f"LLaVA ({self.model}) expects one image per request")
            conv: list[dict[str, Any]] = [
                {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in req.messages
            ]
            conv[_last_user_index(req.messages)]["content"].insert(0, {"type": "image"})
            texts.append(self.processor.apply_chat_template(conv, add_generation_prompt=True))
            try:
                with Image.open(req.image) as im:
                    images.append(im.convert("RGB"))
            except OSError as err:
                raise TesoError(f"{req.image}: cannot read the frame ({err})") from err
        inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.lm.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)]


LLAMACPP_INSTALL = (
    "the llamacpp backend needs the optional package llama-cpp-python: pip install 'teso[llamacpp]' "
    "(it compiles from source, several minutes; set CMAKE_ARGS=-DGGML_CUDA=on for a GPU build)"
)


class LlamaCppChat:
    """A GGUF chat model through ``llama-cpp-python`` (imported only when this backend is chosen)."""

    backend = "llamacpp"
    batch_size = 1
    concurrency = 1

    def __init__(
        self, model: str, n_ctx: int = 4096, n_gpu_layers: int = 0, max_new_tokens: int = 512
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise TesoError(LLAMACPP_INSTALL) from err
        path = Path(model)
        if not path.is_file():
            raise TesoError(f"--model {model}: expected the path of a .gguf file")
        self.model = str(model)
        self.max_new_tokens = max_new_tokens
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, verbose=False)

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        out = []
        for req in requests:
            if req.image is not None:
                raise TesoError(f"--model {self.model}: the llamacpp backend here is text-only")
            reply = self.llm.create_chat_completion(
                messages=req.messages, max_tokens=self.max_new_tokens, temperature=0.0
            )
            out.append(reply["choices"][0]["message"]["content"].strip())
        return out
