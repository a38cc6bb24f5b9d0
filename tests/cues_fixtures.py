"""Test helpers for the text-cue tests: a tiny dataset tree and a local OpenAI-compatible server."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import threading
import time
from collections import Counter
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


class FakeOpenAI:
    """An OpenAI chat-completions server on 127.0.0.1 (port 0) driven by tags in the query text.

    Tags in the last user message: ``#answer=a,b`` (a CoT reply ending ``Answer: ["a", "b"]``; no tag:
    ``Answer: none``), ``#malformed`` (free prose, no answer line), ``#fail500`` (always HTTP 500),
    ``#flaky`` (500 twice, then fine), ``#slow`` (sleeps ``slow_s`` before answering). A request with an
    image gets the caption ``"frame <md5 of the image bytes>"``. Every reply waits ``delay`` seconds.
    """

    def __init__(self, delay: float = 0.0, slow_s: float = 1.0) -> None:
        self.delay = delay
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.requests = 0
        self.per_key: Counter = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
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
                try:
                    code, reply = server.answer(self.path, body)
                    payload = json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                        if code == 200
                        else {"error": reply}
                    ).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away
                finally:
                    with server.lock:
                        server.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, str]:
        if path != "/v1/chat/completions":
            return 404, "not found"
        time.sleep(self.delay)
        last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if isinstance(last, list):
            url = next(p["image_url"]["url"] for p in last if p["type"] == "image_url")
            data = base64.b64decode(url.split(",", 1)[1])
            text = next(p["text"] for p in last if p["type"] == "text")
            if "see the attached image" in text:  # the vlm reasoner
                return 200, 'Objects: something.\nAnswer: ["dog"]'
            return 200, f"frame {hashlib.md5(data).hexdigest()}"
        with self.lock:
            self.per_key[last] += 1
            attempt = self.per_key[last]
        if "#fail500" in last:
            return 500, "internal error"
        if "#flaky" in last and attempt <= 2:
            return 503, "busy"
        if "#slow" in last:
            time.sleep(self.slow_s)
        if "#malformed" in last:
            return 200, "I am not sure, maybe there is a man singing somewhere in the picture."
        m = re.search(r"#answer=([\w ,-]+)", last)
        items = [s.strip() for s in m.group(1).split(",")] if m else []
        answer = json.dumps(items) if items else "none"
        return 200, f"Objects: listed.\nCategories: grouped.\nSounding together: judged.\nAnswer: {answer}"


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
