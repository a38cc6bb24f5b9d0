"""A small OpenAI-compatible chat-completions client (stdlib only): timeouts, retries with backoff.

Works with any server that speaks ``POST {base_url}/chat/completions`` — vLLM, Ollama, the llama.cpp
server, hosted services. Images travel inline as base64 ``data:`` URLs. The client is thread-safe
(one ``urllib`` request per call, no shared connection state), so the runner calls it from many
threads at once for concurrency.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teso.errors import TesoError


class BackendError(Exception):
    """One request failed for good (after retries); the runner records the item as failed."""


class _Retryable(Exception):
    pass


def image_data_url(path: str | Path) -> str:
    """``data:image/...;base64,...`` for an image file (the OpenAI way of sending a local image)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TesoError(f"{path}: cannot read the frame ({err})") from err
    mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def probe_server(base_url: str, timeout: float = 10.0) -> None:
    """Fail at once, with no HTTP request and no retries, when nothing accepts connections at the
    address of ``base_url``: one TCP connect of at most ``timeout`` seconds.

    For callers that would rather stop than spend the retries of every item on a server that is not
    there (``teso predict``). Raises :class:`BackendError` naming the address and the reason
    (refused, unknown host, unreachable, timed out). Does nothing when a proxy from the environment
    handles the URL: the proxy, not this machine, connects to the server then.
    """
    _check_url(base_url)
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise BackendError(f"{base_url}: bad port ({err})") from err
    if not host:
        raise BackendError(f"{base_url}: no host name")
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise BackendError(f"cannot connect to {host}:{port}: {err.strerror or err}") from err


def _check_url(base_url: str | None) -> None:
    if not base_url or not base_url.startswith(("http://", "https://")):
        raise TesoError(f"--base-url {base_url!r}: expected an http(s) URL such as http://host:8000/v1")


@dataclass
class OpenAIClient:
    """``chat(messages)`` against ``{base_url}/chat/completions``.

    Retries ``retries`` times after the first attempt on HTTP 429/5xx, timeouts and connection errors,
    sleeping ``backoff * 2**k`` seconds before retry ``k`` (0-based). Other HTTP errors (400, 401,
    404...) fail at once: repeating them cannot help.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        _check_url(self.base_url)
        if not self.model:
            raise TesoError("--model: the openai backend needs the model name the server serves")
        if self.api_key is None:
            self.api_key = os.environ.get("OPENAI_API_KEY")
        self.url = self.base_url.rstrip("/") + "/chat/completions"

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 512, temperature: float = 0.0) -> str:
        """The assistant text of one completion; raises :class:`BackendError` after the last retry."""
        body = json.dumps(
            {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._once(body, headers)
            except _Retryable as err:
                last = str(err)
        raise BackendError(f"{last} (gave up after {self.retries + 1} attempts)")

    def _once(self, body: bytes, headers: dict[str, str]) -> str:
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode("utf-8", "replace")
            msg = f"HTTP {err.code} from {self.url}: {detail}".strip()
            if err.code == 429 or err.code >= 500:
                raise _Retryable(msg) from err
            raise BackendError(msg) from err
        except TimeoutError as err:
            raise _Retryable(f"timeout after {self.timeout:g} s from {self.url}") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError | socket.timeout):
                raise _Retryable(f"timeout after {self.timeout:g} s from {self.url}") from err
            raise _Retryable(f"connection error to {self.url}: {err.reason}") from err
        except (ConnectionError, OSError) as err:
            raise _Retryable(f"connection error to {self.url}: {err}") from err
        try:
            data = json.loads(payload)
            content = data["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise BackendError(f"unexpected reply from {self.url}: {payload[:200]!r}") from err
        if not isinstance(content, str):
            raise BackendError(
                f"unexpected reply from {self.url}: message content is {type(content).__name__}"
            )
        return content
