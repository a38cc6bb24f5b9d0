"""``teso predict VIDEO [--checkpoint CKPT] [--cues auto|FILE] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from teso.errors import TesoError

DEFAULT_CHECKPOINT = Path("runs/demo/models/teso/checkpoints/best.safetensors")


def register(sub: argparse._SubParsersAction) -> None:
    from teso.cli.cues import _caption_opts, _http, _reason_opts

    p = sub.add_parser("predict", help="segment the sounding objects of an mp4 (or frames + wav)")
    p.add_argument("video", type=Path, help="an mp4 (any container with video + audio) or a folder of frames")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help=f"default {DEFAULT_CHECKPOINT} (made by teso demo)",
    )
    p.add_argument(
        "--cues",
        default="auto",
        help="auto (caption + reason the frames) or a JSON file [[cue, ...] per second]",
    )
    p.add_argument(
        "--audio", type=Path, default=None, help="the audio of a frame folder (default FOLDER/audio.wav)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/predict/<video name>)"
    )
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold (default 0.5)")
    _http(p)
    _caption_opts(p)
    _reason_opts(p)
    p.set_defaults(func=_predict, captioner="llava", reasoner="llm")


def _predict(args: argparse.Namespace) -> int:
    from teso.engine.predict import load_input, predict_video, read_cue_file

    if not args.checkpoint.is_file():
        raise TesoError(
            f"--checkpoint {args.checkpoint}: not found (train one with `teso train` or run `teso demo`)"
        )
    out = args.out or Path("runs/predict") / args.video.stem
    frames, _ = load_input(args.video, args.audio)  # fails early on a bad input, before any model loads
    seconds = frames.shape[0]
    cues = None
    if args.cues != "auto":
        cues = read_cue_file(args.cues, seconds)
    encode = None
    from teso.model import read_checkpoint_metadata

    cfg, extra = read_checkpoint_metadata(args.checkpoint)
    if cfg.ablation.text:
        if cues is None:
            cues = auto_cues(args, frames, out)
        encode = _encoder_for(extra, cfg, args.device)
    summary = predict_video(
        args.video,
        args.checkpoint,
        out,
        cues=cues,
        encode_cues=encode,
        audio=args.audio,
        threshold=args.threshold,
        device=args.device,
    )
    for s in summary["per_second"]:
        print(
            f"{s['second']:>4}s  sounding area {100 * s['sounding_area']:5.1f}%  "
            f"cues {', '.join(s['cues']) or '-'}"
        )
    print(f"masks: {summary['masks']}  overlay: {summary['overlay']}  summary: {out / 'summary.json'}")
    return 0


def _encoder_for(extra: dict, cfg, device: str):
    from teso.cues.features import build_clip_tensor
    from teso.cues.text_encoders import build_text_encoder

    prov = extra.get("text_features") or {}
    name = prov.get("encoder") or ((extra.get("experiment") or {}).get("data") or {}).get(
        "text_encoder", "minilm"
    )
    encoder = build_text_encoder(name, None, device)
    if prov.get("model") not in (None, encoder.model):
        # The features were made with non-default weights (--encoder-model): use those again.
        encoder = build_text_encoder(name, prov["model"], device)
    if encoder.dim != cfg.text.dim:
        raise TesoError(
            f"text encoder {name} is {encoder.dim}-d but the checkpoint expects {cfg.text.dim}-d cues"
        )
    return lambda cues: build_clip_tensor(cues, encoder, cfg.text.num_cues)


CUE_SOURCES = (
    "to get cues, point --base-url at a running OpenAI-compatible server (vLLM, Ollama, the llama.cpp "
    "server), use local models (--captioner llava --caption-model DIR, --model DIR for the reasoner), "
    "or give them with --cues FILE (JSON, one list of cues per second)"
)


def _servers(args: argparse.Namespace) -> list[str]:
    """The OpenAI-compatible endpoints ``--cues auto`` will call (the choice of :mod:`teso.cli.cues`)."""
    urls = []
    if args.captioner == "openai":
        urls.append(args.caption_base_url or args.base_url)
    backend = args.backend or ("openai" if args.base_url else "transformers")
    if args.reasoner in ("llm", "vlm") and backend == "openai":
        urls.append(args.base_url)
    return list(dict.fromkeys(u for u in urls if u))


def _check_servers(args: argparse.Namespace) -> None:
    """One TCP connect per server before any frame is sent: a server that is not there is a one-line
    error now, not ``--retries`` rounds of backoff for every frame."""
    from teso.cues.http import BackendError, probe_server

    for url in _servers(args):
        try:
            probe_server(url, timeout=min(args.timeout, 10.0))
        except BackendError as err:
            raise TesoError(f"{url}: no OpenAI-compatible server reachable ({err}); {CUE_SOURCES}") from err


def _process(worker, items: list, desc: str) -> list[dict]:
    """``worker.process`` over ``items`` in its batches and concurrency, results in item order."""
    from teso.cues.runner import execute

    results: dict[int, dict] = {}
    execute(worker, items, lambda item, res: results.__setitem__(item.frame, res), desc, sys.stderr.isatty())
    return [results[item.frame] for item in items]


def _failed(stage: str, items: list, results: list[dict]) -> None:
    failed = [(item.frame, res["error"]) for item, res in zip(items, results) if "error" in res]
    if failed:
        frame, error = failed[0]
        raise TesoError(
            f"{stage} failed for {len(failed)} of {len(items)} frames (frame {frame}: {error}); {CUE_SOURCES}"
        )


def auto_cues(args: argparse.Namespace, frames, out: Path) -> list[list[str]]:
    """Caption and reason every frame with the configured backends (written to ``out/cues.json``)."""
    from PIL import Image

    from teso.cli.cues import build_captioner, build_reasoner
    from teso.cues.captioners import FrameItem
    from teso.utils.files import atomic_write_json

    _check_servers(args)
    clip_dir = args.video if args.video.is_dir() else out
    items = []
    for t, frame in enumerate(frames):
        path = out / "frames" / f"{t}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(path, quality=95)
        items.append(FrameItem(uid=args.video.stem, frame=t, image=path, clip_dir=clip_dir))
    # Built and dropped one after the other: a local captioner and reasoner are never loaded together.
    captions = _process(build_captioner(args), items, "caption")
    _failed("captioning", items, captions)
    items = [FrameItem(i.uid, i.frame, i.image, i.clip_dir, c["caption"]) for i, c in zip(items, captions)]
    answers = _process(build_reasoner(args), items, "reason")
    _failed("reasoning", items, answers)
    cues = [list(a.get("cues") or []) for a in answers]
    atomic_write_json(
        out / "cues.json",
        {"captions": [i.caption for i in items], "answers": [a.get("raw") for a in answers], "cues": cues},
    )
    return cues
