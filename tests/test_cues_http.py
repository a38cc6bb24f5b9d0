"""Text cues through a real OpenAI-compatible HTTP server on 127.0.0.1: canned, malformed, failing,
slow answers; retries, timeouts, failure recording, concurrency, images, resumability."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import teso.cli.main as cli_main
from teso.cues.backends import OpenAIChat
from teso.cues.captioners import DatasetCaptioner
from teso.cues.http import BackendError, OpenAIClient
from teso.cues.prompts import get_prompt
from teso.cues.reasoners import LLMReasoner
from teso.cues.runner import list_clips, run_caption, run_reason
from teso.cues.store import CueStore
from tests.cues_fixtures import FakeOpenAI, make_tree

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
    args = [
        "--base-url",
        None,
        "--model",
        "m",
        "--concurrency",
        "4",
        "--timeout",
        "0.3",
        "--retries",
        "2",
        "--backoff",
        "0.01",
        "--no-progress",
    ]
    with FakeOpenAI(slow_s=1.0) as srv:
        args[1] = srv.url
        assert cli(["cues", "caption", str(root), "--no-progress"]) == 0
        start = time.perf_counter()
        code = cli(["cues", "reason", str(root), *args])
        elapsed = time.perf_counter() - start
        out = capsys.readouterr().out
        assert code == 3, out
        recs = CueStore(root).reasoning()
        status = {t: recs[("clip00_000", t)] for t in range(5)}
        assert status[0]["status"] == "ok" and status[0]["cues"] == ["dog"]
        assert status[4]["status"] == "ok" and status[4]["cues"] == ["dog"]  # tag 0 again
        assert status[1]["status"] == "ok"  # 503 twice, then answered on the last retry
        assert status[2]["status"] == "failed" and "HTTP 500" in status[2]["error"]
        assert "3 attempts" in status[2]["error"]
        assert status[3]["status"] == "failed" and "timeout" in status[3]["error"]
        assert "2 failed" in out and "HTTP 500" in out
        # The slow item made 3 attempts of 0.3 s each; the others ran beside it, not after it.
        assert 0.9 <= elapsed < 3.0
        # A re-run skips what succeeded and tries only the failed items again.
        n_before = srv.requests
        code = cli(["cues", "reason", str(root), *args])
        out = capsys.readouterr().out
        assert code == 3 and "3 skipped" in out
        assert srv.requests - n_before == 6  # 2 items x 3 attempts


def test_concurrent_requests_overlap(tmp_path):
    root = make_tree(tmp_path / "ds", _clips(4))
    store = CueStore(root)
    clips = list_clips(root)
    run_caption(store, DatasetCaptioner(), clips, progress=False)
    with FakeOpenAI(delay=0.1) as srv:
        gen = OpenAIChat(OpenAIClient(srv.url, "m", retries=0), concurrency=8)
        start = time.perf_counter()
        s = run_reason(store, LLMReasoner(gen, get_prompt("fewshot-direct")), clips, progress=False)
        elapsed = time.perf_counter() - start
    assert s.done == 20 and s.failed == 0
    assert srv.max_inflight >= 4
    # Serial requests would take at least 20 x 0.1 s; the margin absorbs a busy 2-core machine.
    assert elapsed < 0.8 * 20 * 0.1


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
    # Nothing listens there: a connection error, retried, then a BackendError.
    dead = OpenAIClient("http://127.0.0.1:9/v1", "m", retries=1, backoff=0.0, timeout=1.0)
    with pytest.raises(BackendError, match="connection error"):
        dead.chat([{"role": "user", "content": "hi"}])


class _Interrupting:
    """Wraps a generator; the call that would reach ``after`` items raises KeyboardInterrupt."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0
        self.backend, self.model = inner.backend, inner.model
        self.batch_size, self.concurrency = inner.batch_size, inner.concurrency

    def generate(self, requests):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner.generate(requests)


def test_interrupted_run_resumes_to_the_same_cues(tmp_path):
    tags = ["#answer=man,guitar", "#answer=dog", "", "#malformed", "#answer=piano"]
    root = make_tree(tmp_path / "ds", _clips(4, tags))
    clips = list_clips(root)
    with FakeOpenAI(delay=0.01) as srv:
        gen = OpenAIChat(OpenAIClient(srv.url, "m", retries=0), concurrency=3)
        prompt = get_prompt("oneshot-cot")
        ref, part = CueStore(root, "ref"), CueStore(root, "part")
        for store in (ref, part):
            run_caption(store, DatasetCaptioner(), clips, progress=False)
        run_reason(ref, LLMReasoner(gen, prompt), clips, progress=False)
        with pytest.raises(KeyboardInterrupt):
            run_reason(part, LLMReasoner(_Interrupting(gen, 7), prompt), clips, progress=False)
        kept = len(part.reasoning())
        assert 1 <= kept <= 7
        s = run_reason(part, LLMReasoner(gen, prompt), clips, progress=False)
    assert s.skipped == kept and s.done == 20 - kept

    def view(store):
        return {k: (r["cues"], r["malformed"], r["raw"]) for k, r in store.reasoning().items()}

    assert view(part) == view(ref) and len(view(ref)) == 20


def test_killed_process_resumes_to_the_same_cues(tmp_path, cli):
    root = make_tree(tmp_path / "ds", _clips(4, ["#answer=man", "#answer=dog,cat", ""]))
    script = "import sys, teso.cli.main as m; sys.exit(m.main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "x"}
    with FakeOpenAI(delay=0.1) as srv:
        assert cli(["cues", "caption", str(root), "--no-progress", "--store", "killed"]) == 0
        base = [
            sys.executable,
            "-c",
            script,
            "cues",
            "reason",
            str(root),
            "--base-url",
            srv.url,
            "--model",
            "m",
            "--concurrency",
            "2",
            "--no-progress",
        ]
        proc = subprocess.Popen(
            [*base, "--store", "killed"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        path = root / "cues" / "killed" / "reasoning.jsonl"
        deadline = time.time() + 30
        while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 4):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        lines = path.read_text().count("\n")
        assert 4 <= lines < 20
        done = subprocess.run([*base, "--store", "killed"], env=env, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"{lines} skipped" in done.stdout or f"{lines + 1} skipped" in done.stdout
        srv.delay = 0.0
        assert cli(["cues", "caption", str(root), "--no-progress", "--store", "ref"]) == 0
        assert cli([*base[3:], "--store", "ref"]) == 0

    def view(name):
        return {k: r["cues"] for k, r in CueStore(root, name).reasoning().items()}

    assert view("killed") == view("ref") and len(view("ref")) == 20
