"""`teso predict VIDEO --cues auto` end to end: a tiny trained checkpoint, an mp4, and the captioner and
reasoner both behind the local OpenAI-compatible test server; and the same command with no server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import teso.cli.main as cli_main
from teso.audio import load_audio
from teso.data.avsbench import list_clips
from teso.engine.config import load_experiment
from teso.engine.trainer import Trainer
from teso.video import read_frames
from teso.video.writer import write_mp4
from tests import test_cues_local
from tests.cues_fixtures import FakeOpenAI, refused_port
from tests.engine_fixtures import fast_overrides, write_tree_with_features

REPO = Path(__file__).resolve().parents[1]
tiny_models = test_cues_local.tiny_models  # the fixture: directories of a tiny LLaVA, Llama and CLIP
WORDS = ["man", "dog", "guitar", "piano", "car", "bird"]


@pytest.fixture(scope="module")
def model_and_video(tmp_path_factory) -> tuple[Path, Path]:
    """A text-taking checkpoint (one training step on the engine fixture tree, `tiny` 32-d cues) and
    an mp4 of a 10-second v2 test clip with its audio."""
    tree = write_tree_with_features(tmp_path_factory.mktemp("avs"))
    run = tmp_path_factory.mktemp("run")
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "1"}))
    result = Trainer(exp, run, progress=False).fit()
    assert result.best is not None
    clip = list_clips(tree, ["v2"], ["test"])[0]
    video = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(video, read_frames(clip.clip_dir / "frames"), fps=1, audio=load_audio(clip.audio_path))
    return result.best, video


def caption_of(image: bytes) -> str:
    """The test server's caption of a frame: its md5 and two different cue words picked by it (a tag
    the server's reasoner answers), so every frame gets its own, known cues."""
    md5 = hashlib.md5(image).hexdigest()
    k = int(md5[:8], 16)
    first, second = k % 6, (k % 6 + 1 + (k // 6) % 5) % 6
    return f"frame {md5} #answer={WORDS[first]},{WORDS[second]}"


def expected_cues(image: bytes) -> list[str]:
    return caption_of(image).split("#answer=")[1].split(",")


def test_predict_with_auto_cues_from_an_openai_server(model_and_video, tmp_path, monkeypatch, capsys):
    ckpt, video = model_and_video
    out = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(caption=caption_of) as srv:
        code = cli_main.main(
            [
                "predict",
                str(video),
                "--checkpoint",
                str(ckpt),
                "--cues",
                "auto",
                "--out",
                str(out),
                "--captioner",
                "openai",
                "--caption-model",
                "vision",
                "--base-url",
                srv.url,
                "--model",
                "chat",
                "--concurrency",
                "4",
            ]
        )
    printed = capsys.readouterr().out
    assert code == 0, printed
    # The frames that were sent, as predict wrote them: the server got one caption request per
    # frame (compared as multisets, so two equal frames still count twice).
    frames = [(out / "frames" / f"{t}.jpg").read_bytes() for t in range(10)]
    md5s = [hashlib.md5(f).hexdigest() for f in frames]
    captions = [caption_of(f) for f in frames]
    cues = [expected_cues(f) for f in frames]
    assert len(set(md5s)) >= 9  # (10 seconds of a 1 fps mp4 decode to 9 different frames, see docs/data.md)
    asked = [(kind, key) for kind, key, _ in srv.log]
    assert sorted(k for kind, k in asked if kind == "caption") == sorted(md5s)
    # ... and the reasoner got one request per frame, each with that frame's caption.
    reason_queries = [k for kind, k in asked if kind == "reason"]
    assert sorted(reason_queries) == sorted(f"Description: {c}" for c in captions)
    assert len(srv.log) == 20 and srv.requests == 20
    models = {(b["model"], isinstance(b["messages"][-1]["content"], list)) for b in srv.bodies}
    assert models == {("vision", True), ("chat", False)}
    assert all(h["Authorization"] == "Bearer sk-test" for h in srv.headers)

    # The cues the model used are the server's answers, frame by frame.
    saved = json.loads((out / "cues.json").read_text())
    assert saved["captions"] == captions and saved["cues"] == cues
    replies = {k: r for kind, k, r in srv.log if kind == "reason"}
    assert saved["answers"] == [replies[f"Description: {c}"] for c in captions]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seconds"] == 10 and summary["window"] == 10 and summary["frame_size"] == [24, 32]
    assert [s["second"] for s in summary["per_second"]] == list(range(10))
    assert [s["cues"] for s in summary["per_second"]] == cues  # at most 2 cues: N_T = 4 keeps all
    for s in summary["per_second"]:
        assert set(s["cues_kept"]) <= set(s["cues"]) and 0.0 <= s["sounding_area"] <= 1.0
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(f"{t}.png" for t in range(10))
    assert (out / "overlay.mp4").stat().st_size > 0
    lines = printed.splitlines()
    assert len(lines) == 11 and lines[0].startswith("   0s") and ", ".join(cues[0]) in lines[0]
    assert lines[-1].startswith("masks: ")


def test_predict_with_auto_cues_and_no_server_is_a_one_line_error(model_and_video, tmp_path):
    """Nothing listens at --base-url: exit 1 at once with one line naming the URL and the other ways
    to get cues; no traceback, and no retries (which would take minutes with the defaults)."""
    ckpt, video = model_and_video
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
        done = subprocess.run(
            [sys.executable, "-m", "teso.cli.main", "predict", str(video), "--checkpoint", str(ckpt),
             "--cues", "auto", "--out", str(tmp_path / "out"), "--captioner", "openai",
             "--base-url", url, "--model", "m"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,  # a hang guard only: the defaults (4 retries, backoff 1 s) would take minutes
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    err = lines[0]
    assert err.startswith(f"teso predict: error: {url}: no OpenAI-compatible server reachable (")
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in err
    assert "gave up after" not in err  # the probe failed, not a request after its retries
    for way in ("OpenAI-compatible server", "--captioner llava --caption-model DIR", "--cues FILE"):
        assert way in err
    assert not (tmp_path / "out" / "frames").exists()  # stopped before any frame was written


def _predict_subprocess(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "teso.cli.main", "predict", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # a hang guard only: hub retries would take minutes
    )


def test_predict_with_the_default_local_models_and_no_hub_is_a_one_line_error(model_and_video, tmp_path):
    """`teso predict VIDEO` with the defaults (LLaVA captioner, Llama reasoner, both hub ids): nothing in
    the (empty) Hugging Face cache and the hub refuses connections -> exit 1 with one line naming the
    model and every other way to get cues, before a frame is decoded; transformers' own hub retries
    (2.5 minutes measured here) never start."""
    ckpt, video = model_and_video
    with refused_port() as port:
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf")}
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("HF_HUB_CACHE", None)
        done = _predict_subprocess(
            [str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")], env
        )
    assert done.returncode == 1 and done.stdout == "", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("teso predict: error: --caption-model llava-hf/llava-1.5-7b-hf: not a local ")
    assert f"the hub http://127.0.0.1:{port} is unreachable (cannot connect to 127.0.0.1:{port}" in lines[0]
    for way in ("OpenAI-compatible server", "Ollama", "--captioner llava --caption-model DIR", "--cues FILE"):
        assert way in lines[0]
    assert not (tmp_path / "out" / "frames").exists()
    # HF_HUB_OFFLINE: no connection is even tried
    env["HF_HUB_OFFLINE"] = "1"
    done = _predict_subprocess([str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")], env)
    assert done.returncode == 1 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in done.stderr


def test_predict_local_model_paths_that_do_not_exist_fail_at_once(model_and_video, tmp_path):
    ckpt, video = model_and_video
    base = ["predict", str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]
    cases = [
        (["--caption-model", str(tmp_path / "nollava")], "--caption-model"),
        (["--caption-model", str(REPO), "--model", str(tmp_path / "x.gguf")], "--model"),
        (["--reasoner", "vlm", "--model", "./nothere"], "--model ./nothere: no such model directory"),
        (["--captioner", "openai"], "--captioner openai: needs --base-url"),
        (["--caption-model", str(REPO), "--backend", "llamacpp"], "the llamacpp backend needs a .gguf file"),
    ]
    for extra, message in cases:
        code, err = _run_main([*base, *extra])
        assert code == 1 and message in err and "--cues FILE" in err, (extra, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "frames").exists()


def _run_main(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main.main(argv)
    return code, err.getvalue()


def test_predict_help_shows_the_real_defaults():
    """Every option of `teso predict` with a default names that default in --help (and no other):
    the captioner's shared help said "default dataset" while predict used llava."""
    import argparse
    import re

    parser = cli_main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    predict = sub.choices["predict"]
    checked = 0
    for action in predict._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            continue
        if action.default in (None, False, argparse.SUPPRESS):
            continue
        text = action.help % {"default": action.default} if "%(default)" in action.help else action.help
        named = re.findall(r"\(default:? ([^);,]+)[);,]", text)
        shown = named[-1].strip() if named else None
        if isinstance(action.default, (int, float)):
            assert shown is not None and float(shown) == action.default, (action.dest, text)
        else:
            assert shown == str(action.default), (action.dest, text)
        checked += 1
    assert checked >= 12
    assert predict.get_default("captioner") == "llava" and predict.get_default("reasoner") == "llm"
    choices = {a.dest: a.choices for a in predict._actions}
    # only the sources that work on any video are offered (dataset captions, reasoned and oracle
    # read a dataset's own files)
    assert choices["captioner"] == ("llava", "openai")
    assert choices["reasoner"] == ("llm", "nouns", "nouns-raw", "vlm")
    out = subprocess.run(
        [sys.executable, "-m", "teso.cli.main", "predict", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "(default: llava)" in out and "default dataset" not in out


def test_predict_with_a_local_llava_captioner_and_llama_reasoner_on_an_mp4(
    model_and_video, tiny_models, tmp_path
):
    """`--captioner llava --caption-model DIR` + `--model DIR` (tiny random LLaVA and Llama saved in
    the test): every frame of the mp4 is captioned by LLaVA and reasoned by the LM, offline."""
    ckpt, video = model_and_video
    out = tmp_path / "out"
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--captioner", "llava",
            "--caption-model", str(tiny_models / "llava"), "--model", str(tiny_models / "llama"),
            "--max-new-tokens", "6", "--batch-size", "5"]  # fmt: skip
    code, err = _run_main(argv)
    assert code == 0, err
    saved = json.loads((out / "cues.json").read_text())
    assert len(saved["captions"]) == 10 and all(c.strip() for c in saved["captions"])
    assert len(saved["answers"]) == 10 and all(isinstance(a, str) for a in saved["answers"])
    summary = json.loads((out / "summary.json").read_text())
    assert [s["cues"] for s in summary["per_second"]] == [c[:4] for c in saved["cues"]]


def test_predict_with_the_vlm_reasoner_skips_captioning(model_and_video, tiny_models, tmp_path):
    """`--reasoner vlm --model DIR`: the multimodal model answers from the frame; no captioner runs
    (none is loaded: the default LLaVA hub id is not looked up)."""
    ckpt, video = model_and_video
    out = tmp_path / "out"
    argv = ["predict", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--reasoner", "vlm",
            "--model", str(tiny_models / "llava"), "--max-new-tokens", "6", "--batch-size", "5"]  # fmt: skip
    code, err = _run_main(argv)
    assert code == 0, err
    saved = json.loads((out / "cues.json").read_text())
    assert saved["captions"] == [None] * 10 and len(saved["answers"]) == 10
