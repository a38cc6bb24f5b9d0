"""``teso predict VIDEO [--checkpoint CKPT] [--cues auto|FILE] [--out DIR]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from teso.errors import TesoError

DEFAULT_CHECKPOINT = Path("runs/demo/models/teso/checkpoints/best.safetensors")


# The captioners and reasoners that work on any video (the others read a dataset's own files).
CAPTIONERS = ("llava", "openai")
PREDICT_REASONERS = ("llm", "nouns", "nouns-raw", "vlm")
LLAVA_DEFAULT = "llava-hf/llava-1.5-7b-hf"
LLM_DEFAULT = "meta-llama/Llama-2-7b-chat-hf"


def register(sub: argparse._SubParsersAction) -> None:
    from teso.cli.cues import _caption_opts, _http, _reason_opts
    from teso.cli.options import foundations_option

    p = sub.add_parser("predict", help="segment the sounding objects of an mp4 (or frames + wav)")
    p.add_argument("video", type=Path, help="an mp4 (any container with video + audio) or a folder of frames")
    p.add_argument(
        "--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="a TeSO checkpoint (made by teso demo)"
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
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold")
    p.add_argument(
        "--heatmap",
        action="store_true",
        help="also write the pre-threshold sounding probability: heatmaps/T.png (8-bit) and heatmap.mp4",
    )
    foundations_option(p)
    p.add_argument(
        "--allow-cue-mismatch",
        action="store_true",
        help="use cues made otherwise than the checkpoint's training cues (a cue swap)",
    )
    _http(p)
    _caption_opts(p)
    _reason_opts(p)
    p.set_defaults(func=_predict)
    # predict's own choices and defaults for the shared cue options; every default shown in --help.
    for action in p._actions:
        if action.dest == "captioner":
            action.choices, action.default = CAPTIONERS, "llava"
            action.help = (
                f"llava (transformers; --caption-model DIR or hub id, default {LLAVA_DEFAULT}) or openai "
                "(an OpenAI-compatible server with a vision model: --base-url, --caption-model NAME) "
                "(default: %(default)s)"
            )
        elif action.dest == "reasoner":
            action.choices, action.default = PREDICT_REASONERS, "llm"
            action.help = (
                f"llm (--model smollm2 / FILE.gguf / DIR / hub id, default {LLM_DEFAULT}; or the served "
                "name with --base-url), nouns (TeSO-n: nouns mapped onto the AVSS classes), nouns-raw "
                "(every noun), vlm (the multimodal --model looks at the frame itself; no captioner) "
                "(default: %(default)s)"
            )
        elif action.dest == "reasoned_source":
            action.help = argparse.SUPPRESS  # only for --reasoner reasoned, which reads a dataset tree
        if (
            action.option_strings
            and action.help not in (None, argparse.SUPPRESS)
            and action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in action.help
        ):
            action.help += " (default: %(default)s)"


def _predict(args: argparse.Namespace) -> int:
    from teso.engine.predict import predict_video, read_cue_file
    from teso.model import read_checkpoint_metadata
    from teso.model.foundation_sources import check_search_paths
    from teso.video.stream import probe_input

    check_search_paths(args.foundations)
    if not args.checkpoint.is_file():
        raise TesoError(
            f"--checkpoint {args.checkpoint}: not found (train one with `teso train` or run `teso demo`)"
        )
    out = args.out or Path("runs/predict") / args.video.stem
    # Fails early on a bad input, before any model loads; reads packets and headers only.
    video = probe_input(args.video, args.audio)
    cues = None
    if args.cues != "auto":
        cues = read_cue_file(args.cues, video.seconds)
    encode = None
    cfg, extra = read_checkpoint_metadata(args.checkpoint)
    if cfg.ablation.text:
        sources: dict | None = None
        if cues is None:
            sources = {}
            cues = auto_cues(args, video, out, sources)
        encode = _encoder_for(extra, cfg, args.device, cues, sources, args)
    summary = predict_video(
        args.video,
        args.checkpoint,
        out,
        cues=cues,
        encode_cues=encode,
        audio=args.audio,
        threshold=args.threshold,
        device=args.device,
        foundations=args.foundations,
        heatmap=args.heatmap,
    )
    for s in summary["per_second"]:
        print(
            f"{s['second']:>4}s  sounding area {100 * s['sounding_area']:5.1f}%  "
            f"cues {', '.join(s['cues']) or '-'}"
        )
    print(f"masks: {summary['masks']}  overlay: {summary['overlay']}  summary: {out / 'summary.json'}")
    if summary["heatmaps"]:
        print(f"heatmaps: {summary['heatmaps']}  heatmap video: {summary['heatmap_video']}")
    return 0


def _encoder_for(extra: dict, cfg, device: str, cues: list[list[str]], sources=None, args=None):
    from teso.cues.text_encoders import build_text_encoder
    from teso.engine.predict import window_cue_encoder

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
    from teso.cues.features import TEMPLATE, encoder_weights_sha
    from teso.cues.provenance import check_cue_provenance, live_provenance

    # Cues from a file are the user's words: only the encoder is compared then.
    index = {"encoder": encoder.name, "model": encoder.model, "weights_sha": encoder_weights_sha(encoder),
             "dim": encoder.dim, "n_t": cfg.text.num_cues, "template": TEMPLATE}  # fmt: skip
    current = live_provenance((sources or {}).get("captioner"), (sources or {}).get("reasoner"), index)
    where = "the cues made by --cues auto" if sources is not None else "the cue file's encoder"
    allow = bool(getattr(args, "allow_cue_mismatch", False))
    check_cue_provenance(args.checkpoint if args else "checkpoint", extra, current,
                         allow=allow, encoder_only=sources is None, where=where)  # fmt: skip
    return window_cue_encoder(cues, encoder, cfg.text.num_cues)


CUE_SOURCES = (
    "to get cues, point --base-url at a running OpenAI-compatible server (vLLM, Ollama, the llama.cpp "
    "server), use local models (--captioner llava --caption-model DIR, --model DIR for the reasoner), "
    "or give them with --cues FILE (JSON, one list of cues per second)"
)


def _servers(args: argparse.Namespace) -> list[str]:
    """The OpenAI-compatible endpoints ``--cues auto`` will call (the choice of :mod:`teso.cli.cues`)."""
    urls = []
    if args.captioner == "openai" and args.reasoner != "vlm":
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


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _check_local_model(flag: str, model: str) -> None:
    """A model given by hub id must be a local directory, in the Hugging Face cache, or behind a hub
    that answers; else one line now (transformers would retry the hub for minutes, then fail)."""
    path = Path(model).expanduser()
    if path.exists():
        return
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise TesoError(f"{flag} {model}: no such model directory; {CUE_SOURCES}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return  # in the cache: loads without the network
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise TesoError(
            f"{flag} {model}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; {CUE_SOURCES}"
        )
    from teso.cues.http import BackendError, probe_server

    try:
        probe_server(_hub_endpoint(), timeout=10.0)
    except BackendError as err:
        raise TesoError(
            f"{flag} {model}: not a local directory, not in the Hugging Face cache, and the hub "
            f"{_hub_endpoint()} is unreachable ({err}); {CUE_SOURCES}"
        ) from err


def _check_sources(args: argparse.Namespace) -> None:
    """Everything ``--cues auto`` will need, checked before the first frame is decoded: the servers
    answer, the local models are there (or downloadable), the options fit together."""
    from teso.cues.local_llm import SMOLLM2

    _check_servers(args)
    backend = args.backend or ("openai" if args.base_url else "transformers")
    if args.reasoner != "vlm" and args.captioner == "llava":
        _check_local_model("--caption-model", args.caption_model or LLAVA_DEFAULT)
    if args.captioner == "openai" and not (args.caption_base_url or args.base_url):
        raise TesoError(f"--captioner openai: needs --base-url (or --caption-base-url); {CUE_SOURCES}")
    if args.reasoner not in ("llm", "vlm"):
        return
    if backend == "llamacpp":
        if not args.model or not Path(args.model).is_file():
            raise TesoError(f"--model {args.model}: the llamacpp backend needs a .gguf file; {CUE_SOURCES}")
    elif backend == "transformers":
        model = args.model or (LLAVA_DEFAULT if args.reasoner == "vlm" else LLM_DEFAULT)
        if args.reasoner == "llm" and (model == SMOLLM2 or model.lower().endswith(".gguf")):
            if model != SMOLLM2 and not Path(model).is_file():
                raise TesoError(f"--model {model}: no such .gguf file; {CUE_SOURCES}")
            return
        _check_local_model("--model", model)


def auto_cues(args: argparse.Namespace, video, out: Path, sources: dict | None = None) -> list[list[str]]:
    """Caption and reason every frame of ``video`` (a :class:`~teso.video.stream.VideoInput`) with the
    configured backends (written to ``out/cues.json``). The frames are decoded one at a time and
    written to ``out/frames/{t}.jpg``, which the backends read."""
    from PIL import Image

    from teso.cli.cues import build_captioner, build_reasoner
    from teso.cues.captioners import FrameItem
    from teso.utils.files import atomic_write_json
    from teso.video.stream import FrameStream

    _check_sources(args)
    clip_dir = args.video if args.video.is_dir() else out
    items = []
    frames = FrameStream(video)
    try:
        for t in range(video.seconds):
            path = out / "frames" / f"{t}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames.window(t, t + 1)[0]).save(path, quality=95)
            items.append(FrameItem(uid=args.video.stem, frame=t, image=path, clip_dir=clip_dir))
        frames.finish()
    finally:
        frames.close()
    # Built and dropped one after the other: a local captioner and reasoner are never loaded together.
    if args.reasoner != "vlm":  # the vlm reasoner looks at the frame itself
        captioner = build_captioner(args)
        if sources is not None:  # what made the cues, for the provenance check
            sources["captioner"] = captioner.provenance()  # a dict: the model itself is dropped
        captions = _process(captioner, items, "caption")
        del captioner
        _failed("captioning", items, captions)
        items = [
            FrameItem(i.uid, i.frame, i.image, i.clip_dir, c["caption"]) for i, c in zip(items, captions)
        ]
    reasoner = build_reasoner(args)
    if sources is not None:
        sources["reasoner"] = reasoner.provenance()
    answers = _process(reasoner, items, "reason")
    _failed("reasoning", items, answers)
    cues = [list(a.get("cues") or []) for a in answers]
    atomic_write_json(
        out / "cues.json",
        {"captions": [i.caption for i in items], "answers": [a.get("raw") for a in answers], "cues": cues},
    )
    return cues
