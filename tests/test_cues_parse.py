"""Prompts, answer parsing, normalisation, vocabulary mapping, the store's JSONL rules, REC#1 and the
feature loader (no model weights needed)."""

from __future__ import annotations

import json

import pytest
import torch

import teso.cli.main as cli_main
from teso.cues.features import TextFeatures, build_clip_tensor, clip_file, write_clip, write_index
from teso.cues.parse import Vocabulary, normalise_cue, parse_answer, singularise
from teso.cues.prompts import DEMOS, PROMPTS, get_prompt
from teso.cues.rec import average_precision, rec1
from teso.cues.store import CueStore
from teso.cues.text_encoders import TinyRandomEncoder
from teso.errors import TesoError
from tests.cues_fixtures import make_tree


def test_ten_table_g9_prompts_with_names_versions_and_distinct_texts():
    assert sorted(p.number for p in PROMPTS.values()) == list(range(1, 11))
    assert len({p.sha for p in PROMPTS.values()}) == 10
    assert get_prompt("g9-3").name == "zeroshot-cot" and get_prompt("fewshot-cot").number == 1
    assert all(p.version for p in PROMPTS.values())
    few = get_prompt("fewshot-cot").messages("A cat meows.")
    assert [m["role"] for m in few] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert few[-1]["content"] == "Description: A cat meows."
    assert (
        len(get_prompt("oneshot-cot").messages("x")) == 4
        and len(get_prompt("zeroshot-direct").messages("x")) == 2
    )
    # The paper's zero-shot sentences are kept verbatim.
    assert (
        "Let's think step by step to obtain sounding objects in the caption."
        in get_prompt("g9-3").instruction
    )
    assert "Tell me any random object." in get_prompt("random-object").instruction
    # Direct variants show only the answer line; CoT variants show the reasoning too.
    assert get_prompt("fewshot-direct").messages("x")[2]["content"] == "Answer: none"
    assert get_prompt("fewshot-cot").messages("x")[2]["content"].startswith("Objects:")
    with pytest.raises(TesoError, match="fewshot-cot"):
        get_prompt("best-prompt")


def test_demonstrations_cover_the_recipe_and_parse_back_strictly():
    answers = {k: d.answer for k, d in DEMOS.items()}
    assert answers["none"] == () and len(answers["one"]) == 1 and len(answers["several"]) >= 2
    for prompt in PROMPTS.values():
        msgs = prompt.messages("x")
        for key, reply in zip(prompt.demos, [m["content"] for m in msgs if m["role"] == "assistant"]):
            res = parse_answer(reply)
            assert res.method == "strict" and res.cues == list(DEMOS[key].answer), (prompt.name, key)


@pytest.mark.parametrize(
    "prompt, raw, cues",
    [
        (
            "fewshot-cot",
            'Objects: man, guitar, stage.\nCategories: ...\nAnswer: ["man", "guitar"]',
            ["man", "guitar"],
        ),
        ("oneshot-cot", "Objects: sofa.\nSounding together: nothing.\nAnswer: none", []),
        ("zeroshot-cot", 'Step 1: a dog.\nStep 2: it barks.\nAnswer: ["Dogs"]', ["dog"]),
        ("fewshot-direct", 'Answer: ["the man", "a Piano"]', ["man", "piano"]),
        ("oneshot-direct", "Answer: none", []),
        ("zeroshot-direct", 'Answer: ["women", "geese", "puppies"]', ["woman", "goose", "puppy"]),
        ("most-possible", 'Answer: ["guitar"]', ["guitar"]),
        ("any-objects", 'Answer: ["stage", "lights", "men", "benches"]', ["stage", "light", "man", "bench"]),
        ("background-objects", 'Answer: ["trees", "the wall", "buses"]', ["tree", "wall", "bus"]),
        ("random-object", 'Answer: ["banana"]', ["banana"]),
    ],
)
def test_every_variant_answer_shape_parses_strictly(prompt, raw, cues):
    assert get_prompt(prompt)
    res = parse_answer(raw)
    assert (res.cues, res.malformed, res.method) == (cues, False, "strict")


@pytest.mark.parametrize(
    "raw, cues",
    [
        ("**Answer:** the man and a guitar.", ["man", "guitar"]),
        ("Final answer: ['Men', 'a dog']", ["man", "dog"]),
        ("Sounding objects:\n- man\n- acoustic guitars\n", ["man", "acoustic guitar"]),
        ("Reasoning...\nanswer: None.", []),
        ('Answer: ["man", "guitar"', ["man", "guitar"]),
        ("Answer: man, dog; and cat", ["man", "dog", "cat"]),
        ("Answer: [dog, guitar]", ["dog", "guitar"]),  # a list without quotes
        ("[man, emergency-car]", ["man", "emergency-car"]),
    ],
)
def test_tolerant_extraction(raw, cues):
    res = parse_answer(raw)
    assert (res.cues, res.malformed, res.method) == (cues, False, "tolerant")


@pytest.mark.parametrize(
    "raw",
    [
        "The man is probably singing and the guitar might be playing.",  # no marker: never guessed
        "Objects: man, guitar.\nCategories: people.",  # step 1 of the CoT is not an answer
        "Answer: a man who is singing loudly on the stage",  # a sentence, not an object name
        "Answer:",
        "Answer: [dog; os.system(1)]",  # brackets around something that is not a list of names
        "",
    ],
)
def test_malformed_answers_are_flagged_not_guessed(raw):
    res = parse_answer(raw)
    assert res.malformed and res.cues == [] and res.method is None and res.reason


def test_normalisation_and_singular():
    assert normalise_cue("  The Electric GUITARS! ") == "electric guitar"
    assert normalise_cue("two puppies") == "puppy"
    assert normalise_cue("'a'") == ""
    assert parse_answer('Answer: ["dog", "dog", "Dogs"]').cues == ["dog"]  # duplicates after normalising
    assert [
        singularise(w) for w in ["bus", "glasses", "boxes", "wolves", "mice", "cymbals", "piano", "harps"]
    ] == ["bus", "glasses", "box", "wolf", "mouse", "cymbals", "piano", "harp"]


def test_vocabulary_mapping_with_synonyms_head_nouns_and_ambiguity():
    v = Vocabulary.avss()
    assert len(v.names) == 70 and "background" not in v.names
    assert v.map("puppy") == ["dog"] and v.map("hair dryer") == ["hair-dryer"]
    assert v.map("police car") == ["emergency-car"]  # the whole phrase before its head noun
    assert v.map("acoustic guitar") == ["guitar"] and v.map("vacuum cleaner") == ["vacuum-cleaner"]
    assert v.map("vocalist") == [] and v.map("stage") == []  # ambiguous / unknown: left unmapped
    v2 = Vocabulary.avss({"vocalist": ["man", "woman"], "puppies": ["dog"]})
    assert v2.map("vocalist") == ["man", "woman"] and v2.map("puppy") == ["dog"]
    assert v.map_all(["puppy", "dog", "stage", "men"]) == (["dog"], ["stage", "men"])
    with pytest.raises(TesoError, match="not vocabulary names"):
        Vocabulary(["dog"], {"puppy": ["doggo"]})


def test_store_last_record_wins_partial_tail_ignored_and_repaired(tmp_path):
    store = CueStore(tmp_path)
    store.append_reasoning({"uid": "a", "frame": 0, "status": "failed", "cues": []})
    store.append_reasoning({"uid": "a", "frame": 0, "status": "ok", "cues": ["dog"]})
    with open(store.reasoning_path, "a") as fh:
        fh.write('{"uid": "a", "frame": 1, "sta')  # a crash in the middle of an append
    assert store.cues() == {("a", 0): ["dog"]}
    store.append_reasoning({"uid": "a", "frame": 2, "status": "ok", "cues": ["man"]})
    assert store.cues() == {("a", 0): ["dog"], ("a", 2): ["man"]}
    assert store.reasoning_path.read_text().count("\n") == 3
    with open(store.reasoning_path, "a") as fh:
        fh.write("garbage\n")
    store.append_reasoning({"uid": "b", "frame": 0, "status": "ok", "cues": []})
    with pytest.raises(TesoError, match="line 4 is not valid JSON"):
        store.reasoning()
    with pytest.raises(TesoError, match="--store"):
        CueStore(tmp_path, "../x")


def test_average_precision_matches_the_step_definition():
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert average_precision([0, 0, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.25)  # the prevalence floor
    assert average_precision([1, 0], [0, 0]) is None


def test_rec1_on_a_hand_made_example():
    frames = [({"dog"}, {"dog"}), ({"dog", "man"}, {"man"}), (set(), {"dog"}), ({"guitar"}, set())]
    res = rec1(frames, ["dog", "man", "guitar"])
    # dog: P1 = 1/2, R1 = 1/2, prevalence 1/2 -> 0.5; man: 1.0; guitar never sounds -> left out.
    assert res.rec1 == pytest.approx(0.75) and res.categories_scored == 2
    assert res.categories_absent == ["guitar"]
    assert res.micro_precision == pytest.approx(2 / 4) and res.micro_recall == pytest.approx(2 / 3)
    assert res.micro_f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert "REC#1" in res.table() and "75.00%" in res.table()
    with pytest.raises(TesoError, match="not in the vocabulary"):
        rec1([({"cat"}, set())], ["dog"])


def _score_tree(tmp_path):
    truth = [
        {"category": "dog", "audible": True, "sounding": [True, True, False, False, False]},
        {"category": "man", "audible": True, "sounding": [False, False, True, True, False]},
        {"category": "guitar", "audible": True, "sounding": [False] * 5},
    ]
    root = make_tree(
        tmp_path / "ds",
        [
            {
                "uid": "syn_0001",
                "label": "v1m",
                "split": "test",
                "a_obj": ["dog"],
                "captions": ["c"] * 5,
                "truth": truth,
            }
        ],
        synth=True,
    )
    store = CueStore(root)
    for t, cues in enumerate([["puppy"], [], ["man", "guitar"], ["guitar"], ["stage"]]):
        store.append_reasoning(
            {"uid": "syn_0001", "frame": t, "status": "ok", "cues": cues, "malformed": t == 1}
        )
    return root


def test_score_command_synth_truth_and_a_obj(tmp_path, monkeypatch, capsys):
    root = _score_tree(tmp_path)
    assert cli_main.main(["cues", "score", str(root)]) == 0
    out = capsys.readouterr().out
    data = json.loads((root / "cues" / "default" / "rec1.json").read_text())
    # dog: frames [1,1,0,0,0] cued [1,0,0,0,0] -> 1*0.5 + 0.5*0.4 = 0.7; man likewise 0.7.
    assert data["rec1"] == pytest.approx(0.7) and data["extra"]["truth"] == "synth"
    assert data["micro_precision"] == pytest.approx(0.5) and data["micro_recall"] == pytest.approx(0.5)
    assert data["extra"]["frames_malformed"] == 1 and data["extra"]["cues_unmapped"] == 1
    assert "70.00%" in out and "guitar" in out
    out_path = tmp_path / "a.json"
    assert cli_main.main(["cues", "score", str(root), "--truth", "a_obj", "--out", str(out_path)]) == 0
    # a_obj says the dog sounds in all 5 frames; cued once: 0.2 * 1 + 0.8 * 1.0 (prevalence 1).
    assert json.loads(out_path.read_text())["rec1"] == pytest.approx(1.0)
    (root / "cues" / "default" / "reasoning.jsonl").write_text("")
    assert cli_main.main(["cues", "score", str(root)]) == 1
    assert "5 frames have no cues" in capsys.readouterr().err


def test_features_are_padded_truncated_and_missing_uids_are_an_error(tmp_path):
    enc = TinyRandomEncoder()
    feats, counts = build_clip_tensor([["man", "guitar"], [], ["a", "b", "c", "d", "e", "f"]], enc, 4)
    assert feats.shape == (3, 4, 32) and counts.tolist() == [2, 0, 4]
    assert torch.allclose(feats[0, 0], enc.encode(["This is a man."])[0])
    assert feats[0, 2:].abs().sum() == 0 and feats[1].abs().sum() == 0
    assert torch.allclose(feats[2, 3], enc.encode(["This is a d."])[0])  # truncated after 4 cues
    store = CueStore(tmp_path)
    fdir = store.features_dir("tiny")
    write_index(fdir, enc, 4)
    write_clip(clip_file(fdir, "clip_a"), "clip_a", feats, counts, "sha")
    tf = TextFeatures.open(tmp_path, encoder="tiny")
    assert tf.dim == 32 and tf.n_t == 4
    got, c = tf.get("clip_a")
    assert torch.equal(got, feats) and c.dtype == torch.int64
    with pytest.raises(TesoError, match=r"2 clip\(s\): clip_b, clip_c"):
        tf.require(["clip_a", "clip_b", "clip_c"])
    with pytest.raises(TesoError, match="clip_z"):
        tf.get("clip_z")
    with pytest.raises(TesoError, match="no text features for encoder 'minilm'"):
        TextFeatures.open(tmp_path, encoder="minilm")
    with pytest.raises(TesoError, match="built differently"):
        write_index(fdir, enc, 8)


# --- answers as real chat models write them ------------------------------------------------------
# Written by hand in the styles of instruction-tuned chat models (markdown, courtesy openings,
# numbered lists, explanations after the names); the query is the frame's own description.
QUERY = "A man sings into a microphone while strumming a guitar; a dog sleeps by the door."

CHAT_STYLES = [
    (
        "Sure! The objects making sound are:\n\n1. **The man** - he is singing into the microphone\n"
        "2. **The guitar** - it is being strummed\n\nThe dog is asleep, so it is silent.",
        ["man", "guitar"],
    ),
    ("Here are the sounding objects:\n- Man (singing)\n- Guitar (strummed)\n", ["man", "guitar"]),
    ("**Sounding objects:**\n* man\n* acoustic guitar\n", ["man", "acoustic guitar"]),
    ('Answer: ["man", "guitar"] (the man sings while he strums; the dog sleeps)', ["man", "guitar"]),
    ("Answer: man, guitar. The dog is sleeping, so it makes no sound.", ["man", "guitar"]),
    ('Answer: "man" and "guitar"', ["man", "guitar"]),
    ("The sounding objects are the man and the guitar.", ["man", "guitar"]),
    ("The answer is: man, guitar", ["man", "guitar"]),
    ("Final Answer: The man and the guitar, because he is singing and strumming.", ["man", "guitar"]),
    ("- man\n- guitar", ["man", "guitar"]),  # only a list of names: not prose
    ('["man", "guitar"]', ["man", "guitar"]),
    ("The answer is: none", []),
    ("None.", []),
    ("Nothing is making sound.", []),
    ("There are no sounding objects in this description.", []),
    ("Answer: none of the objects", []),
    ("Answer: No object is producing sound.", []),
    ('Answer: ["none"]', []),
    ("**Answer:** Nothing is making a sound here.", []),
]


@pytest.mark.parametrize("raw, cues", CHAT_STYLES)
def test_chat_model_output_styles(raw, cues):
    res = parse_answer(raw, QUERY)
    assert (res.cues, res.malformed) == (cues, False), res


@pytest.mark.parametrize(
    "raw",
    [
        "Nothing in the description suggests the dog is awake, so the man and the guitar sound.",
        "No. The man is singing.",  # "No" answers a yes/no question it was not asked
        "The answer isn't clear from the description.",
        "1. Objects: man, microphone, guitar, dog\n2. Categories: person, instrument, animal",
    ],
)
def test_prose_and_reasoning_steps_are_never_read_as_cues(raw):
    res = parse_answer(raw, QUERY)
    assert res.malformed and res.cues == []


def test_an_echoed_demonstration_does_not_count():
    from teso.cues.parse import answer_end
    from teso.cues.prompts import DEMOS

    demo = DEMOS["one"].description
    # The model re-generates a few-shot example before its own answer, inline or on its own lines.
    echoed = [
        f'Caption: {demo} Answer: ["dog"]\nAnswer: ["man", "guitar"]',
        f'Description: {demo}\nAnswer: ["dog"]\n\nDescription: {QUERY}\nAnswer: ["man", "guitar"]',
        f"Description: {demo}\nAnswer:\n- dog\n\nAnswer: man, guitar",
    ]
    for raw in echoed:
        assert parse_answer(raw, QUERY).cues == ["man", "guitar"], raw
        # Generation that stops at the reply's answer line does not stop at the echoed one.
        end = answer_end(raw + "\n", QUERY)
        assert end is not None and raw[:end].rstrip().endswith(('guitar"]', "guitar"))
    # After its answer the model invents another turn: its own (first) answer counts.
    invented = 'Answer: ["man", "guitar"]\nDescription: A cat on a sofa.\nAnswer: ["cat"]'
    assert parse_answer(invented, QUERY).cues == ["man", "guitar"]
    assert answer_end(invented, QUERY) == invented.index("\nDescription") + 1
    # Only an echoed demonstration: no answer of its own.
    res = parse_answer(f'Description: {demo}\nAnswer: ["dog"]', QUERY)
    assert res.malformed and res.cues == []


def test_free_text_phrases_map_onto_the_vocabulary_or_are_rejected():
    v = Vocabulary.avss()
    assert v.map("man playing guitar") == ["man"]  # the head of the phrase, not its last word
    assert v.map("sound of a dog barking") == ["dog"]
    assert v.map("dog on the grass") == ["dog"] and v.map("guitar being strummed") == ["guitar"]
    assert v.map("police car") == ["emergency-car"] and v.map("acoustic guitar") == ["guitar"]
    assert v.map("wind in the trees") == [] and v.map("stage lights") == []  # rejected
    assert v.map_all(["man singing", "lights on stage"]) == (["man"], ["lights on stage"])


def test_the_llm_reasoner_gives_the_parser_the_frames_own_description(tmp_path):
    from teso.cues.captioners import FrameItem
    from teso.cues.prompts import DEMOS
    from teso.cues.reasoners import LLMReasoner

    demo = DEMOS["several"].description

    class EchoingModel:  # echoes a demonstration, restates its frame, answers, invents a turn
        backend, model, batch_size, concurrency = "fake", "fake", 2, 1

        def generate(self, requests):
            return [
                f'Description: {demo}\nAnswer: ["man", "guitar"]\n'
                f'Description: {r.messages[-1]["content"][len("Description: ") :]}\nAnswer: ["dog"]\n'
                'Description: A cat sleeps on a sofa.\nAnswer: ["cat"]'
                for r in requests
            ]

    items = [FrameItem("u", t, tmp_path / "f.jpg", tmp_path, f"A dog barks, frame {t}.") for t in range(2)]
    out = LLMReasoner(EchoingModel(), get_prompt("fewshot-direct")).process(items)
    assert [o["cues"] for o in out] == [["dog"], ["dog"]] and not any(o["malformed"] for o in out)


def test_the_vlm_reasoner_parses_with_the_query_the_answer_line_stop_uses(tmp_path):
    """A VLM that restates its own turn ("Description: see the attached image.") then answers: the
    stop criterion treats that turn as the model's own, so the parser must too (it used to get the
    item's caption, None for a vlm, and dropped the answer as an echoed demonstration's)."""
    from teso.cues.captioners import FrameItem
    from teso.cues.reasoners import VLMReasoner

    class RestatingVLM:
        backend, model, batch_size, concurrency = "fake", "fake", 1, 1

        def generate(self, requests):
            return [f'{r.messages[-1]["content"]}\nAnswer: ["dog"]' for r in requests]

    items = [FrameItem("u", 0, tmp_path / "f.jpg", tmp_path)]
    out = VLMReasoner(RestatingVLM(), get_prompt("fewshot-direct")).process(items)
    assert out[0]["cues"] == ["dog"] and not out[0]["malformed"], out
