"""Local backends end to end: tiny random Llama / LLaVA / CLIP built in the test and loaded back through
the real loading code, spaCy nouns on real sentences, the MiniLM encoder, the llama.cpp install hint."""

from __future__ import annotations

import sys

import pytest
import torch

import teso.cli.main as cli_main
from teso.cues.backends import ChatRequest, LlamaCppChat, LlavaChat, TransformersChatLM
from teso.cues.captioners import ModelCaptioner
from teso.cues.prompts import CAPTION_INSTRUCTION, get_prompt
from teso.cues.runner import list_clips, run_caption
from teso.cues.store import CueStore
from teso.cues.text_encoders import ClipTextEncoder, MiniLMEncoder, build_text_encoder
from teso.errors import TesoError
from tests.cues_fixtures import CHAT_TEMPLATE, make_tree, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Directories holding a tiny Llama chat model, a tiny LLaVA and a tiny CLIP text tower."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        LlamaConfig,
        LlamaForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:  # transformers >= 5.x: the PIL processor has its own class; the default one needs torchvision
        from transformers.models.clip import CLIPImageProcessorPil
    except ImportError:  # transformers 5.0: CLIPImageProcessor itself is the PIL/numpy one
        from transformers.models.clip import CLIPImageProcessor as CLIPImageProcessorPil

    base = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    llama_cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=0.2,
    )
    # initializer_range 0.2 (not 0.02): with tiny weights every prompt gets the same continuation.
    LlamaForCausalLM(llama_cfg).save_pretrained(base / "llama")
    tok.save_pretrained(base / "llama")

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    llava_cfg = LlavaConfig(
        vision_config=vision,
        text_config=llama_cfg,
        vision_feature_layer=-1,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
    )
    LlavaForConditionalGeneration(llava_cfg).save_pretrained(base / "llava")
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(base / "llava")

    clip_cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=24,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    CLIPTextModelWithProjection(clip_cfg).save_pretrained(base / "clip")
    tok.save_pretrained(base / "clip")
    return base


# Batched and single generation must give the same text, exactly. Why that can hold on every CPU:
# a batch left-pads its rows, so attention and matmuls reduce over other lengths and blocks than a
# single row does. In float32 that moves the logits by ~1e-6 (3.6e-6 measured for the tiny Llama),
# and greedy argmax flips wherever the best two logits are closer than that: for some weights, on
# some CPU or thread count. So these tests run the models in float64, where the same reordering
# moves the logits by ~1e-14; transformers rounds them to float32 before the argmax (monotonic), so
# a flip would need a best-vs-second gap of about one float32 ulp (~1e-6 here). The single runs
# record every greedy step's gap and the test requires it to be > MIN_MARGIN (1e-4, 100x that ulp;
# the smallest gaps of these seeded weights are 3e-3 for LLaVA and 5e-3 for Llama): then batch and
# single pick the same token at every step, and the texts are equal by construction. The float32
# path itself runs in the CLI test below, which compares no texts.
MIN_MARGIN = 1e-4


def _record_margins(lm) -> list[float]:
    """Make ``lm.generate`` record, in one-row calls, each greedy step's top-1 minus top-2 logit."""
    margins: list[float] = []
    generate = lm.generate

    def recording(**kwargs):
        if kwargs["input_ids"].shape[0] != 1:
            return generate(**kwargs)
        out = generate(**kwargs, output_logits=True, return_dict_in_generate=True)
        for step in out.logits:  # [1, V] per generated token
            top = step[0].double().topk(2).values
            margins.append(float(top[0] - top[1]))
        return out.sequences

    lm.generate = recording
    return margins


def _assert_exact_by_margin(margins: list[float], calls: int) -> None:
    assert len(margins) >= calls, "every single run generated at least one token"
    assert min(margins) > MIN_MARGIN, f"a near-tie ({min(margins):.2e}): batched == single is not exact"


def test_transformers_llm_batched_equals_one_at_a_time(tiny_models):
    gen = TransformersChatLM(str(tiny_models / "llama"), batch_size=4, max_new_tokens=8)
    gen.lm.to(torch.float64)  # see MIN_MARGIN
    margins = _record_margins(gen.lm)
    prompt = get_prompt("fewshot-cot")
    # Short prompts of different lengths: a random model's continuation depends on them, so a padding
    # bug would show up as a difference between the batch and the single runs.
    caps = ["A dog barks.", "A man sings while playing the guitar on a stage at night.", "Nothing.", "A cat."]
    reqs = [ChatRequest([{"role": "user", "content": c}]) for c in caps]
    single = [gen.generate([r])[0] for r in reqs]
    _assert_exact_by_margin(margins, len(reqs))
    batched = gen.generate(reqs)
    assert batched == single
    assert len(set(batched)) > 1  # different prompts, different continuations: padding did not leak
    with pytest.raises(TesoError, match="cannot read images"):
        gen.generate([ChatRequest(prompt.messages(None), tiny_models / "x.jpg")])


def test_transformers_llm_through_the_cli_records_provenance_and_malformed(
    tiny_models, tmp_path, monkeypatch
):
    clips = [
        {
            "uid": "c1",
            "label": "v1m",
            "split": "val",
            "a_obj": ["dog"],
            "captions": [f"A dog barks {t}." for t in range(5)],
        }
    ]
    root = make_tree(tmp_path / "ds", clips)
    code = cli_main.main(
        [
            "cues",
            "all",
            str(root),
            "--model",
            str(tiny_models / "llama"),
            "--batch-size",
            "3",
            "--max-new-tokens",
            "6",
            "--prompt",
            "g9-2",
            "--encoder",
            "imagebind",
            "--encoder-model",
            str(tiny_models / "clip"),
            "--no-progress",
        ]
    )
    assert code == 0
    recs = CueStore(root).reasoning()
    assert len(recs) == 5
    for rec in recs.values():
        prov = rec["provenance"]
        assert (prov["backend"], prov["model"], prov["prompt"]) == (
            "transformers",
            str(tiny_models / "llama"),
            "oneshot-cot",
        )
        assert rec["malformed"] and rec["cues"] == [] and rec["raw"] is not None  # gibberish, kept raw
    from teso.cues.features import TextFeatures

    feats = TextFeatures.open(root, encoder="imagebind")
    f, c = feats.get("c1")
    assert feats.dim == 24 and f.shape == (5, 4, 24) and c.tolist() == [0] * 5


def test_llava_captioner_batched_end_to_end(tiny_models, tmp_path):
    clips = [{"uid": "c1", "label": "v1m", "split": "val", "a_obj": ["dog"], "captions": ["x"] * 5}]
    root = make_tree(tmp_path / "ds", clips)
    gen = LlavaChat(str(tiny_models / "llava"), batch_size=3, max_new_tokens=6)
    gen.lm.to(torch.float64)  # see MIN_MARGIN
    margins = _record_margins(gen.lm)
    frames = [root / "v1m" / "c1" / "frames" / f"{t}.jpg" for t in range(5)]
    reqs = [ChatRequest([{"role": "user", "content": CAPTION_INSTRUCTION}], f) for f in frames]
    single = [gen.generate([r])[0] for r in reqs]
    _assert_exact_by_margin(margins, len(reqs))
    assert gen.generate(reqs) == single  # one batch of 5
    # The captioner in batches of 3 and 2 stores the same texts; an empty one is a failed item.
    store, captioner = CueStore(root), ModelCaptioner(gen, "llava")
    s = run_caption(store, captioner, list_clips(root), progress=False)
    caps = store.captions()
    assert len(caps) == 5 and s.done == sum(1 for c in single if c) and s.failed == 5 - s.done
    assert s.done > 0  # (these weights caption some frames with text: the checks below see records)
    for t, text in enumerate(single):
        rec = caps[("c1", t)]
        if text:
            prov = rec["provenance"]
            assert rec["status"] == "ok" and rec["caption"] == text
            assert prov["captioner"] == "llava" and prov["prompt"] == "dense-caption"
        else:
            assert rec["status"] == "failed" and rec["error"] == "empty caption"
    assert run_caption(store, captioner, list_clips(root), progress=False).skipped == s.done


def test_llamacpp_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    with pytest.raises(TesoError, match=r"pip install 'teso\[llamacpp\]'"):
        LlamaCppChat("model.gguf")


def test_nouns_reasoner_on_real_sentences():
    from teso.cues.reasoners import NounReasoner

    r = NounReasoner()
    got = r.nouns(
        [
            "A man is singing while playing the guitars, and two puppies are barking beside the pianos.",
            "Two women in red dresses are dancing on the wooden stage.",
            "It is quiet.",
        ]
    )
    assert got[0] == ["man", "guitar", "puppy", "piano"]
    assert got[1] == ["woman", "dress", "stage"]
    assert got[2] == []
    assert r.provenance()["model"].startswith("spacy/")


def test_minilm_related_cues_are_closer_than_unrelated():
    enc = build_text_encoder("minilm")
    assert isinstance(enc, MiniLMEncoder) and enc.dim == 384
    e = enc.encode(["This is a dog.", "This is a puppy.", "This is a trumpet.", "This is a saxophone."])
    # Unit rows: the float32 norm of a normalised 384-d row is 1 within a few ulps (torch reduces
    # pairwise/vectorised: error ~log2(384) * 6e-8 = 5e-7; 6e-8 measured); 1e-5 is 20x that, and
    # a row left unnormalised would be off by O(1).
    assert e.shape == (4, 384) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    sim = e @ e.T
    # Meaning, not float noise: the pairs differ by ~0.45 (dog/puppy 0.84 vs dog/trumpet 0.40) and
    # ~0.26 (trumpet/saxophone 0.63 vs trumpet/dog 0.40); 0.1 asks for a clear semantic gap only.
    assert sim[0, 1] > sim[0, 2] + 0.1 and sim[2, 3] > sim[2, 0] + 0.1


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from teso.cues.text_encoders import minilm_path

    texts = ["This is a man.", "This is a lawn mower."]
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True)
    ours = MiniLMEncoder().encode(texts)
    # Both run the same float32 weights through the same kernels in this process (0.0 difference
    # measured); they may differ only where the pipelines order a reduction differently (masked
    # mean, norm): a few float32 ulps of components <= 0.2, i.e. ~1e-7. atol 1e-5 is 100x that.
    assert torch.allclose(ours, ref.cpu().float(), atol=1e-5)
    # ... and a real pipeline difference is far outside it: the first-token state instead of the
    # masked mean moves the components by > 1e-2, so the tolerance cannot hide a wrong pooling.
    enc = MiniLMEncoder()
    tokens = enc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        first = torch.nn.functional.normalize(enc.net(**tokens).last_hidden_state[:, 0], dim=-1)
    assert (first - ours).abs().max() > 1e-2


def test_clip_text_encoder_is_normalised(tiny_models):
    enc = ClipTextEncoder(str(tiny_models / "clip"))
    e = enc.encode(["This is a man.", "This is a dog barking loudly."])
    # Unit rows within float32 rounding of a 24-d norm (~1e-7); 1e-5 is far above that and far
    # below an unnormalised row's O(1) error.
    assert e.shape == (2, 24) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(TesoError, match="--encoder-model"):
        ClipTextEncoder(str(tiny_models / "nothing-here"))
