"""Cue-generation throughput: HTTP concurrency and local batched generation (ratios, same run).

1. The reasoner against a local OpenAI-compatible test server that sleeps ``--delay`` s per request:
   items/s with 1 and with 8 concurrent requests (the ratio is the speed-up a vLLM server gives when
   it can serve requests in parallel).
2. The ``transformers`` backend with a tiny random Llama (built here, nothing downloaded): items/s
   batched (``--batch`` prompts per ``generate``) vs one prompt at a time.

Run from the repository root: ``python bench/cues.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from teso.cues.backends import ChatRequest, OpenAIChat, TransformersChatLM  # noqa: E402
from teso.cues.captioners import DatasetCaptioner  # noqa: E402
from teso.cues.http import OpenAIClient  # noqa: E402
from teso.cues.prompts import get_prompt  # noqa: E402
from teso.cues.reasoners import LLMReasoner  # noqa: E402
from teso.cues.runner import list_clips, run_caption, run_reason  # noqa: E402
from teso.cues.store import CueStore  # noqa: E402
from tests.cues_fixtures import FakeOpenAI, make_tree, tiny_tokenizer  # noqa: E402


def bench_http(tmp: Path, clips: int, delay: float) -> dict[int, float]:
    spec = [
        {"uid": f"clip{i:03d}", "label": "v1m", "split": "test", "a_obj": ["man"],
         "captions": [f"clip {i} frame {t}: a man sings #answer=man" for t in range(5)]}
        for i in range(clips)
    ]  # fmt: skip
    root = make_tree(tmp / "ds", spec)
    recs = list_clips(root)
    rates = {}
    with FakeOpenAI(delay=delay) as srv:
        for conc in (1, 8):
            store = CueStore(root, f"c{conc}")
            run_caption(store, DatasetCaptioner(), recs, progress=False)
            gen = OpenAIChat(OpenAIClient(srv.url, "bench", retries=0), concurrency=conc)
            s = run_reason(store, LLMReasoner(gen, get_prompt("fewshot-cot")), recs, progress=False)
            assert s.done == 5 * clips and s.failed == 0
            rates[conc] = s.done / s.seconds
    return rates


def bench_local(tmp: Path, n: int, batch: int, tokens: int) -> dict[str, float]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(tmp / "llama")
    tok.save_pretrained(tmp / "llama")
    gen = TransformersChatLM(str(tmp / "llama"), batch_size=batch, max_new_tokens=tokens)
    # min_new_tokens: every request generates exactly ``tokens`` tokens, so both modes do equal work.
    gen.lm.generation_config.min_new_tokens = tokens
    prompt = get_prompt("fewshot-cot")
    reqs = [ChatRequest(prompt.messages(f"Frame {i}: a man sings while playing a guitar.")) for i in range(n)]
    gen.generate(reqs[:2])  # warm-up
    start = time.perf_counter()
    for r in reqs:
        gen.generate([r])
    single = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, n, batch):
        gen.generate(reqs[i : i + batch])
    batched = n / (time.perf_counter() - start)
    return {"single": single, "batched": batched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=10, help="clips of 5 frames for the HTTP part")
    ap.add_argument("--delay", type=float, default=0.05, help="server seconds per request")
    ap.add_argument("--local-items", type=int, default=32, help="prompts for the local part")
    ap.add_argument("--batch", type=int, default=8, help="batch size for the local part")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per prompt for the local part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        http = bench_http(tmp, args.clips, args.delay)
        print(f"http reasoner, server delay {args.delay * 1000:.0f} ms, {5 * args.clips} items:")
        print(f"  concurrency 1: {http[1]:7.2f} items/s")
        print(f"  concurrency 8: {http[8]:7.2f} items/s   ratio {http[8] / http[1]:.2f}x")
        local = bench_local(tmp, args.local_items, args.batch, args.tokens)
        print(f"transformers tiny Llama, {args.local_items} few-shot prompts, {args.tokens} new tokens:")
        print(f"  one at a time: {local['single']:7.2f} items/s")
        ratio = local["batched"] / local["single"]
        print(f"  batch {args.batch:<7}: {local['batched']:7.2f} items/s   ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
