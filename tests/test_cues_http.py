"""Text cues through a real OpenAI-compatible HTTP server on 127.0.0.1: canned, malformed, failing,
held answers; retries, timeouts, failure recording, concurrency, images, resumability.

No assertion depends on elapsed time or thread timing: concurrency is counted at the server, slow
and killed runs are synchronised with events (see FakeOpenAI), a dead server is a refused port.
Deadlines appear only as hang guards, so that a broken run fails instead of waiting forever."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import teso.cli.main as cli_main
from teso.cues.backends import OpenAIChat
from teso.cues.captioners import DatasetCaptioner
from teso.cues.http import BackendError, OpenAIClient, probe_server
from teso.cues.prompts import get_prompt
from teso.cues.reasoners import LLMReasoner
from teso.cues.runner import list_clips, run_caption, run_reason
from teso.cues.store import CueStore
from tests.cues_fixtures import FakeOpenAI, make_tree, refused_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return cli_main.main


def _clips(n: int, tags: list[str] | None = None) -> list[dict]:
    tags = tags or ["#answer=man,guitar"]
    out = []
    for i in range(n):
        caps = [
            f"clip {i} frame {t}: a man sings with a guitar {tags[(i * 5 + t) % len(tags)]}" for t in range(5)
        ]
        out.append(
            {
                "uid": f"clip{i:02d}_000",
                "label": "v1m",
                "split": "test",
                "a_obj": ["man", "guitar"],
                "captions": caps,
            }
        )
    return out


def test_all_with_openai_reasoner_stores_cues_provenance_and_malformed(tmp_path, cli, capsys):
    root = make_tree(tmp_path / "ds", _clips(2, ["#answer=Men,the Guitars", "#malformed", ""]))
    with FakeOpenAI() as srv:
        code = cli(
            [
                "cues",
                "all",
                str(root),
                "--captioner",
                "dataset",
                "--base-url",
                srv.url,
                "--model",
                "m1",
                "--concurrency",
                "3",
                "--encoder",
                "tiny",
                "--no-progress",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    recs = CueStore(root).reasoning()
    assert len(recs) == 10
    by_tag = {}
    for (uid, t), rec in recs.items():
        i = int(uid[4:6])
        by_tag.setdefault((i * 5 + t) % 3, []).append(rec)
    for rec in by_tag[0]:
        assert rec["cues"] == ["man", "guitar"] and rec["parse"] == "strict" and not rec["malformed"]
    for rec in by_tag[1]:
        assert rec["malformed"] and rec["cues"] == [] and "maybe there is a man" in rec["raw"]
    for rec in by_tag[2]:
        assert rec["cues"] == [] and not rec["malformed"] and rec["raw"].endswith("Answer: none")
    prov = recs[("clip00_000", 0)]["provenance"]
    prompt = get_prompt("fewshot-cot")
    assert prov["backend"] == "openai" and prov["model"] == "m1" and prov["reasoner"] == "llm"
    assert (prov["prompt"], prov["prompt_version"], prov["prompt_sha"]) == ("fewshot-cot", "1", prompt.sha)
    # The request carried the key, the system prompt, five demonstrations and the frame's caption.
    assert srv.headers[0]["Authorization"] == "Bearer sk-test"
    msgs = srv.bodies[0]["messages"]
    assert len(msgs) == 12 and msgs[0]["role"] == "system" and srv.bodies[0]["model"] == "m1"
    assert "malformed answers kept raw" in out and "cues per frame" in out
    # Features were written for both clips: counts follow the cues (2, 0 for malformed, 0 for none).
    from teso.cues.features import TextFeatures

    feats = TextFeatures.open(root, encoder="tiny")
    f, c = feats.get("clip00_000")
    assert f.shape == (5, 4, 32) and c.tolist() == [2, 0, 0, 2, 0]
    assert f[1].abs().sum() == 0 and f[0, 2:].abs().sum() == 0


def test_retries_timeouts_failures_recorded_and_exit_code(tmp_path, cli, capsys):
    tags = ["#answer=dog", "#flaky", "#fail500", "#slow"]
    root = make_tree(tmp_path / "ds", _clips(1, tags))
    # The #slow request is held by the server until `release` is set (after this run), so each of its
    # attempts times out for certain; no elapsed time is asserted. The other requests are answered in
    # milliseconds: a 1 s per-attempt timeout is far above that on a loaded machine, and costs 3 s here.
    args = [
        "--base-url",
        None,
        "--model",
        "m",
        "--concurrency",
        "4",
        "--timeout",
        "1",
        "--retries",
        "2",
        "--backoff",
        "0.01",
        "--no-progress",
    ]
    with FakeOpenAI() as srv:
        args[1] = srv.url
        assert cli(["cues", "caption", str(root), "--no-progress"]) == 0
        code = cli(["cues", "reason", str(root), *args])
        out = capsys.readouterr().out
        assert code == 3, out
        recs = CueStore(root).reasoning()
        status = {t: recs[("clip00_000", t)] for t in range(5)}
        assert status[0]["status"] == "ok" and status[0]["cues"] == ["dog"]
        assert status[4]["status"] == "ok" and status[4]["cues"] == ["dog"]  # tag 0 again
        assert status[1]["status"] == "ok"  # 503 twice, then answered on the last retry
        assert status[2]["status"] == "failed" and "HTTP 500" in status[2]["error"]
        assert "3 attempts" in status[2]["error"]
        assert status[3]["status"] == "failed" and "timeout after 1 s" in status[3]["error"]
        assert "3 attempts" in status[3]["error"]
        assert "2 failed" in out and "HTTP 500" in out

        def attempts(tag: str) -> list[int]:
            return sorted(n for k, n in srv.per_key.items() if tag in k)

        # Each item made exactly its attempts: 1 + 2 retries for the 503s, the 500s and the timeouts.
        # A timed-out request may reach the server just after the client gave up: wait for all three.
        assert srv.wait_for(lambda: srv.held == 3)
        assert attempts("#slow") == [3] and attempts("#flaky") == [3] and attempts("#fail500") == [3]
        assert attempts("#answer=dog") == [1, 1]  # frames 0 and 4, answered at once
        # Released, the slow server answers: a re-run skips what succeeded, tries only the two failed
        # items again, and the timed-out one now succeeds.
        srv.release.set()
        assert srv.wait_for(lambda: srv.held == 0)
        n_before = srv.requests
        code = cli(["cues", "reason", str(root), *args])
        out = capsys.readouterr().out
        assert code == 3 and "1 done, 3 skipped" in out and "1 failed" in out, out
        assert srv.requests - n_before == 4  # #fail500: 3 attempts, #slow: answered at once
        recs = CueStore(root).reasoning()
        assert recs[("clip00_000", 3)]["status"] == "ok" and recs[("clip00_000", 2)]["status"] == "failed"


def test_concurrent_requests_overlap(tmp_path):
    root = make_tree(tmp_path / "ds", _clips(4))
    store = CueStore(root)
    clips = list_clips(root)
    run_caption(store, DatasetCaptioner(), clips, progress=False)
    # The server holds every request until 8 are in flight at once: only a client that really keeps
    # `concurrency` requests open gets past the first one. One that does not would wait out
    # hold_cap_s and fail the assertions below (gate_timed_out, max_inflight), not hang.
    with FakeOpenAI(gate_at=8, hold_cap_s=30.0) as srv:
        gen = OpenAIChat(OpenAIClient(srv.url, "m", retries=0), concurrency=8)
        s = run_reason(store, LLMReasoner(gen, get_prompt("fewshot-direct")), clips, progress=False)
    assert s.done == 20 and s.failed == 0
    assert not srv.gate_timed_out
    # Exactly 8: the gate proves 8 at once, and a request stops counting before its reply is sent,
    # so 8 client threads can never have 9 open.
    assert srv.max_inflight == 8 and srv.requests == 20


def test_openai_captioner_sends_each_frame_and_vlm_reasoner(tmp_path, cli):
    root = make_tree(tmp_path / "ds", _clips(1))
    with FakeOpenAI() as srv:
        assert (
            cli(
                [
                    "cues",
                    "caption",
                    str(root),
                    "--captioner",
                    "openai",
                    "--base-url",
                    srv.url,
                    "--caption-model",
                    "vision",
                    "--no-progress",
                ]
            )
            == 0
        )
        caps = CueStore(root).captions()
        for t in range(5):
            md5 = hashlib.md5((root / "v1m" / "clip00_000" / "frames" / f"{t}.jpg").read_bytes()).hexdigest()
            assert caps[("clip00_000", t)]["caption"] == f"frame {md5}"
            assert caps[("clip00_000", t)]["provenance"]["model"] == "vision"
        url = srv.bodies[0]["messages"][0]["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert (
            cli(
                [
                    "cues",
                    "reason",
                    str(root),
                    "--reasoner",
                    "vlm",
                    "--store",
                    "vlm",
                    "--base-url",
                    srv.url,
                    "--model",
                    "vision",
                    "--no-progress",
                ]
            )
            == 0
        )
    recs = CueStore(root, "vlm").reasoning()
    assert all(r["cues"] == ["dog"] and r["provenance"]["reasoner"] == "vlm" for r in recs.values())


def test_client_errors_are_not_retried_and_bad_url_is_a_teso_error():
    from teso.errors import TesoError

    with FakeOpenAI() as srv:
        client = OpenAIClient(srv.url.replace("/v1", "/nope"), "m", retries=3, backoff=0.0)
        with pytest.raises(BackendError, match="HTTP 404"):
            client.chat([{"role": "user", "content": "hi"}])
        assert srv.requests == 1
    with pytest.raises(TesoError, match="--base-url"):
        OpenAIClient("localhost:8000", "m")
    with refused_port() as port:
        # Nothing listens there: a connection error, retried, then a BackendError.
        sleeps: list[float] = []
        dead = OpenAIClient(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff=0.5, sleep=sleeps.append)
        with pytest.raises(BackendError, match=r"connection error.*refused.*gave up after 3 attempts"):
            dead.chat([{"role": "user", "content": "hi"}])
        assert sleeps == [0.5, 1.0]  # backoff * 2**k before retry k
        # The probe `teso predict` runs first: one connect, no retries, the address and the reason.
        with pytest.raises(BackendError, match=rf"cannot connect to 127\.0\.0\.1:{port}: Connection refused"):
            probe_server(f"http://127.0.0.1:{port}/v1")
    with FakeOpenAI() as srv:
        probe_server(srv.url)  # a listening server passes
        assert srv.requests == 0  # and gets no request: the probe only connects


class _Interrupting:
    """Wraps a generator; the call that would reach ``after`` items raises KeyboardInterrupt."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0
        self.lock = threading.Lock()  # generate runs on `concurrency` threads
        self.backend, self.model = inner.backend, inner.model
        self.batch_size, self.concurrency = inner.batch_size, inner.concurrency

    def generate(self, requests):
        with self.lock:
            self.calls += 1
            call = self.calls
        if call > self.after:
            raise KeyboardInterrupt
        return self.inner.generate(requests)


def test_interrupted_run_resumes_to_the_same_cues(tmp_path):
    tags = ["#answer=man,guitar", "#answer=dog", "", "#malformed", "#answer=piano"]
    root = make_tree(tmp_path / "ds", _clips(4, tags))
    clips = list_clips(root)
    with FakeOpenAI() as srv:
        gen = OpenAIChat(OpenAIClient(srv.url, "m", retries=0), concurrency=3)
        prompt = get_prompt("oneshot-cot")
        ref, part = CueStore(root, "ref"), CueStore(root, "part")
        for store in (ref, part):
            run_caption(store, DatasetCaptioner(), clips, progress=False)
        run_reason(ref, LLMReasoner(gen, prompt), clips, progress=False)
        with pytest.raises(KeyboardInterrupt):
            run_reason(part, LLMReasoner(_Interrupting(gen, 7), prompt), clips, progress=False)
        kept = len(part.reasoning())
        # Which of the 7 answered calls were stored before the 8th raised depends on thread
        # scheduling; the bounds do not: the runner submits call 7 only after storing a result, and
        # nothing past call 7 is answered. The exact checks are the resume's, below.
        assert 1 <= kept <= 7
        s = run_reason(part, LLMReasoner(gen, prompt), clips, progress=False)
    assert s.skipped == kept and s.done == 20 - kept

    def view(store):
        return {k: (r["cues"], r["malformed"], r["raw"]) for k, r in store.reasoning().items()}

    assert view(part) == view(ref) and len(view(ref)) == 20


def test_killed_process_resumes_to_the_same_cues(tmp_path, cli, capsys):
    root = make_tree(tmp_path / "ds", _clips(4, ["#answer=man", "#answer=dog,cat", ""]))
    script = "import sys, teso.cli.main as m; sys.exit(m.main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "x"}
    answered = 6
    # The server answers 6 requests and holds the rest; once the store holds those 6 lines (each
    # appended with write + fsync) and both workers wait on held requests, nothing else can be
    # written: the kill lands at a known point, and the store has exactly 6 lines.
    with FakeOpenAI(hold_after=answered) as srv:
        for store in ("killed", "ref"):
            assert cli(["cues", "caption", str(root), "--no-progress", "--store", store]) == 0
        reason = ["cues", "reason", str(root), "--base-url", srv.url, "--model", "m", "--concurrency", "2",
                  "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *reason, "--store", "killed"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        path = root / "cues" / "killed" / "reasoning.jsonl"
        try:
            assert srv.wait_for(lambda: srv.held == 2 or proc.poll() is not None, timeout=120)
            assert proc.poll() is None, "the run ended before it could be killed"
            deadline = time.monotonic() + 120  # only so that a broken run fails instead of hanging
            while not (path.exists() and path.read_bytes().count(b"\n") == answered):
                assert time.monotonic() < deadline, "the answered requests never reached the store"
                assert proc.poll() is None, "the run ended before it could be killed"
                time.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        data = path.read_bytes()
        assert data.count(b"\n") == answered and data.endswith(b"\n")
        srv.release.set()
        srv.hold_after = None
        assert cli([*reason, "--store", "killed"]) == 0
        assert f"{20 - answered} done, {answered} skipped" in capsys.readouterr().out
        assert cli([*reason, "--store", "ref"]) == 0

    def view(name):
        return {k: (r["cues"], r["malformed"], r["raw"]) for k, r in CueStore(root, name).reasoning().items()}

    assert view("killed") == view("ref") and len(view("ref")) == 20
    assert {tuple(c) for c, _, _ in view("ref").values()} == {("man",), ("dog", "cat"), ()}
