"""Test helpers for the text-cue tests: a tiny dataset tree and a local OpenAI-compatible server."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from teso.data.classes import AVSS_CLASSES


def make_tree(root: Path, clips: list[dict], label2idx: bool = True, synth: bool = False) -> Path:
    """A released-layout tree: ``clips`` = [{"uid", "label", "split", "a_obj", "captions", "truth"?}].

    Frames are small JPEGs with a colour fixed by (uid, t); captions.json and truth.json are written
    when given.
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for c in clips:
            w.writerow([c["uid"][:11], c["uid"], 0, 0, "_".join(c.get("a_obj", [])), c["split"], c["label"]])
    if label2idx:
        (root / "label2idx.json").write_text(json.dumps({n: i for i, n in enumerate(AVSS_CLASSES)}))
    if synth:
        (root / "synth.json").write_text(json.dumps({"categories": [{"name": n} for n in AVSS_CLASSES[1:]]}))
    for c in clips:
        d = root / c["label"] / c["uid"]
        (d / "frames").mkdir(parents=True, exist_ok=True)
        n = len(c["captions"])
        for t in range(n):
            seed = int(hashlib.md5(f"{c['uid']}/{t}".encode()).hexdigest()[:8], 16)
            px = np.random.default_rng(seed).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(px).save(d / "frames" / f"{t}.jpg")
        (d / "captions.json").write_text(json.dumps(c["captions"]))
        if "truth" in c:
            (d / "truth.json").write_text(json.dumps({"objects": c["truth"]}))
    return root


def five(*captions: str) -> list[str]:
    """Five captions (v1m clips have 5 frames); the last one given repeats."""
    caps = list(captions)
    return caps + [caps[-1]] * (5 - len(caps))


@contextmanager
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port where every connection is refused, for as long as the block runs.

    The port is bound (so no other process can take it, and the kernel never hands it out as the
    source port of a connection) but not listening, so a connect gets a reset at once: no luck about
    what runs on a fixed port, no waiting for a timeout.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


MALFORMED_REPLY = "I am not sure, maybe there is a man singing somewhere in the picture."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # a burst of concurrent connects must not wait for a SYN retry


class FakeOpenAI:
    """An OpenAI chat-completions server on 127.0.0.1 (port 0) driven by tags in the query text.

    Tags in the last user message: ``#answer=a,b`` (a CoT reply ending ``Answer: ["a", "b"]``; no tag:
    ``Answer: none``), ``#malformed`` (free prose, no answer line), ``#fail500`` (always HTTP 500),
    ``#flaky`` (500 twice, then fine), ``#slow`` (held until :attr:`release` is set, so a client timeout
    fires for certain). A request with an image gets ``caption(image bytes)``, by default
    ``"frame <md5 of the image bytes>"``.

    Synchronisation, all with threading events, none with sleeps (``delay`` is only for benchmarks):

    * ``hold_after=N``: the first N chat requests are answered, later ones wait for :attr:`release`;
    * ``gate_at=K``: every request waits until K requests are in flight at once (then all go on);
    * every wait gives up after ``hold_cap_s`` and then answers, so a broken client makes a test fail
      on its assertions instead of hanging (:attr:`gate_timed_out` records a gate that never opened).

    Counters (under :attr:`lock`): ``requests``, ``inflight`` / ``max_inflight`` (a request is in
    flight from the moment its body is read until its reply is computed, so at most as many as the
    client has open), ``per_key`` (requests per query text), ``held`` (requests waiting now),
    ``bodies``, ``headers`` and ``log`` (``(kind, key, reply)``: kind ``caption`` keyed by the image
    md5, ``vlm``, or ``reason`` keyed by the query text). :meth:`wait_for` waits for a condition.
    """

    def __init__(
        self,
        delay: float = 0.0,
        caption: Callable[[bytes], str] | None = None,
        hold_after: int | None = None,
        gate_at: int | None = None,
        hold_cap_s: float = 60.0,
    ) -> None:
        self.delay = delay
        self.caption = caption or (lambda data: f"frame {hashlib.md5(data).hexdigest()}")
        self.hold_after = hold_after
        self.gate_at = gate_at
        self.hold_cap_s = hold_cap_s
        self.release = threading.Event()
        self.gate = threading.Event()
        self.gate_timed_out = False
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.inflight = 0
        self.max_inflight = 0
        self.requests = 0
        self.chat_requests = 0
        self.held = 0
        self.per_key: Counter = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.log: list[tuple[str, str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                    server.requests += 1
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    if server.gate_at is not None and server.inflight >= server.gate_at:
                        server.gate.set()
                    server.changed.notify_all()
                try:
                    code, reply = server.answer(self.path, body)
                finally:
                    # Before the reply goes out: the client cannot send its next request while this
                    # one still counts, so max_inflight never exceeds the client's open requests.
                    with server.lock:
                        server.inflight -= 1
                        server.changed.notify_all()
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                    if code == 200
                    else {"error": reply}
                ).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out (or was killed) and went away

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()  # held handlers finish (into closed sockets) instead of lingering
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Wait until ``condition()`` (evaluated under :attr:`lock`) holds; False if it never did."""
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def _hold(self, event: threading.Event) -> None:
        with self.lock:
            self.held += 1
            self.changed.notify_all()
        try:
            if not event.wait(self.hold_cap_s) and event is self.gate:
                self.gate_timed_out = True
                self.gate.set()
        finally:
            with self.lock:
                self.held -= 1
                self.changed.notify_all()

    def answer(self, path: str, body: dict) -> tuple[int, str]:
        if path != "/v1/chat/completions":
            return 404, "not found"
        with self.lock:
            self.chat_requests += 1
            beyond = self.hold_after is not None and self.chat_requests > self.hold_after
        if self.gate_at is not None:
            self._hold(self.gate)
        if beyond:
            self._hold(self.release)
        if self.delay:
            time.sleep(self.delay)
        code, key, kind, reply = self._reply(body)
        with self.lock:
            self.log.append((kind, key, reply))
        return code, reply

    def _reply(self, body: dict) -> tuple[int, str, str, str]:
        last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if isinstance(last, list):
            url = next(p["image_url"]["url"] for p in last if p["type"] == "image_url")
            data = base64.b64decode(url.split(",", 1)[1])
            text = next(p["text"] for p in last if p["type"] == "text")
            key = hashlib.md5(data).hexdigest()
            if "see the attached image" in text:  # the vlm reasoner
                return 200, key, "vlm", 'Objects: something.\nAnswer: ["dog"]'
            return 200, key, "caption", self.caption(data)
        with self.lock:
            self.per_key[last] += 1
            attempt = self.per_key[last]
            self.changed.notify_all()
        if "#fail500" in last:
            return 500, last, "reason", "internal error"
        if "#flaky" in last and attempt <= 2:
            return 503, last, "reason", "busy"
        if "#slow" in last:
            self._hold(self.release)
        if "#malformed" in last:
            return 200, last, "reason", MALFORMED_REPLY
        m = re.search(r"#answer=([\w ,-]+)", last)
        items = [s.strip() for s in m.group(1).split(",")] if m else []
        answer = json.dumps(items) if items else "none"
        reply = f"Objects: listed.\nCategories: grouped.\nSounding together: judged.\nAnswer: {answer}"
        return 200, last, "reason", reply


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer (400 tokens) trained on the prompt demonstrations, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from teso.cues.prompts import DEMOS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([d.description + d.reasoning for d in DEMOS.values()] * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast
