"""Feature files that say when they are damaged, cue slots that match the model, and cue provenance
recorded in checkpoints and checked by `teso eval` (issue 10 §4, issue 11 §1).

Everything runs on the ``tiny`` (random, 32-d) encoder and hand-made stores; one test trains a
tiny model for one step to check the checkpoint round trip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import teso.cues.features as features
from teso.cues.features import (
    TextFeatures,
    build_clip_tensor,
    clip_file,
    clip_is_current,
    encoder_weights_sha,
    read_clip,
)
from teso.cues.provenance import EXTRA_KEY, check_cue_provenance, compare_provenance
from teso.cues.rec import rec2
from teso.cues.runner import list_clips, run_encode
from teso.cues.slots import fit_cue_slots, seen_cues, slot_count
from teso.cues.store import CueStore
from teso.cues.text_encoders import TinyRandomEncoder
from teso.errors import TesoError
from tests.cues_fixtures import make_tree


def _tree(tmp_path: Path) -> Path:
    clips = [
        {"uid": f"clip{i}_000", "label": "v1m", "split": "test", "a_obj": ["man"], "captions": ["c"] * 5}
        for i in range(2)
    ]
    root = make_tree(tmp_path / "ds", clips)
    store = CueStore(root)
    prov = {"reasoner": "llm", "backend": "openai", "model": "m1", "prompt": "fewshot-cot",
            "prompt_version": "1", "prompt_sha": "abc"}  # fmt: skip
    for c in clips:
        for t in range(5):
            store.append_reasoning(
                {
                    "uid": c["uid"],
                    "frame": t,
                    "status": "ok",
                    "cues": ["man", "guitar"][: t % 3],
                    "caption_sha": None,
                    "provenance": prov,
                }  # fmt: skip
            )
    return root


def _encoded(tmp_path: Path) -> tuple[Path, Path]:
    root = _tree(tmp_path)
    s = run_encode(CueStore(root), TinyRandomEncoder(), list_clips(root), 4, progress=False)
    assert s.done == 2
    return root, clip_file(CueStore(root).features_dir("tiny"), "clip0_000")


# --- feature files ------------------------------------------------------------------------------


def test_a_flipped_byte_anywhere_is_a_one_line_error_naming_the_file(tmp_path):
    root, path = _encoded(tmp_path)
    tf = TextFeatures.open(root, encoder="tiny")
    good = path.read_bytes()
    header_len = int.from_bytes(good[:8], "little")
    # A byte in the tensor data, one in the metadata's uid, one that breaks the JSON header.
    uid_at = good.index(b"clip0_000")
    for where in (len(good) - 3, 8 + header_len + 1, uid_at, 8):
        bad = bytearray(good)
        bad[where] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(TesoError) as err:
            tf.get("clip0_000")
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, where
        assert "damaged" in msg
    path.write_bytes(good)
    feats, counts = tf.get("clip0_000")
    assert feats.shape == (5, 4, 32) and counts.tolist() == [0, 1, 2, 0, 1]


def test_a_permission_error_at_read_is_raised_not_a_silent_rebuild(tmp_path, monkeypatch):
    root, path = _encoded(tmp_path)
    before = path.read_bytes()
    real_open = open

    def no_access(file, *args, **kwargs):
        if str(file).endswith(".safetensors"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(features, "open", no_access, raising=False)
    with pytest.raises(TesoError, match=r"clip0_000\.safetensors: cannot read .*Permission denied"):
        run_encode(CueStore(root), TinyRandomEncoder(), list_clips(root), 4, progress=False)
    with pytest.raises(TesoError, match=r"clip0_000\.safetensors: cannot read"):
        TextFeatures.open(root, encoder="tiny").get("clip0_000")
    monkeypatch.undo()
    assert path.read_bytes() == before  # not rebuilt behind the user's back


def test_a_damaged_file_is_an_error_at_encode_and_a_stale_one_is_rebuilt(tmp_path):
    root, path = _encoded(tmp_path)
    store = CueStore(root)
    good = path.read_bytes()
    path.write_bytes(good[:5])  # cut short
    with pytest.raises(TesoError, match="damaged text-feature file"):
        run_encode(store, TinyRandomEncoder(), list_clips(root), 4, progress=False)
    flipped = bytearray(good)
    flipped[-3] ^= 0x01  # tensor data only: the header (and its cues hash) still says "current"
    path.write_bytes(bytes(flipped))
    with pytest.raises(TesoError, match="damaged text-feature file"):
        run_encode(store, TinyRandomEncoder(), list_clips(root), 4, progress=False)
    path.write_bytes(good)
    # The cues of clip0 frame 0 change: only that clip is stale and rebuilt.
    store.append_reasoning({"uid": "clip0_000", "frame": 0, "status": "ok", "cues": ["dog"]})
    s = run_encode(store, TinyRandomEncoder(), list_clips(root), 4, progress=False)
    assert (s.done, s.skipped) == (1, 1)
    feats, counts = TextFeatures.open(root, encoder="tiny").get("clip0_000")
    assert counts[0] == 1 and torch.equal(feats[0, 0], TinyRandomEncoder().encode(["This is a dog."])[0])


def test_features_of_the_previous_version_are_rebuilt_by_encode_and_refused_at_load(tmp_path):
    root, path = _encoded(tmp_path)
    fdir = CueStore(root).features_dir("tiny")
    index = json.loads((fdir / "index.json").read_text())
    del index["weights_sha"]
    (fdir / "index.json").write_text(json.dumps({**index, "version": "1"}))
    from safetensors.torch import save_file

    feats, counts = read_clip(path)
    sha = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    save_file({"features": feats, "counts": counts}, str(path), metadata={"uid": "clip0_000",
              "cues_sha": sha["__metadata__"]["cues_sha"]})  # fmt: skip
    assert not clip_is_current(path, sha["__metadata__"]["cues_sha"])  # stale: no content hash
    with pytest.raises(TesoError, match="older teso without a content hash"):
        TextFeatures.open(root, encoder="tiny").get("clip0_000")
    s = run_encode(CueStore(root), TinyRandomEncoder(), list_clips(root), 4, progress=False)
    assert (s.done, s.skipped) == (1, 1)
    assert json.loads((fdir / "index.json").read_text())["version"] == features.FEATURES_VERSION
    TextFeatures.open(root, encoder="tiny").get("clip0_000")


# --- cue slots ----------------------------------------------------------------------------------


def test_store_slots_must_match_the_model(tmp_path):
    root, _ = _encoded(tmp_path)
    tf = TextFeatures.open(root, encoder="tiny")
    tf.check_slots(4)
    with pytest.raises(TesoError) as err:
        tf.check_slots(6)
    msg = str(err.value)
    assert "cue store 'default'" in msg and "4 cue slots" in msg and "text.num_cues = 6" in msg


def test_one_slot_rule_for_words_tensors_and_counts():
    cues = ["a", "b", "c", "d", "e", "f"]
    assert (
        seen_cues(cues, 4) == cues[:4]
        and seen_cues(cues, None) == cues
        and seen_cues(cues[:2], 4) == cues[:2]
    )
    assert slot_count(6, 4) == 4 and slot_count(torch.tensor([[0, 3, 9]]), 4).tolist() == [[0, 3, 4]]
    text = torch.arange(1.0, 7.0).view(1, 1, 6, 1)
    out, valid = fit_cue_slots(text, torch.tensor([[6]]), 4)
    assert out[0, 0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and valid.all()
    out, valid = fit_cue_slots(text[:, :, :2], torch.tensor([[1]]), 4)
    assert out[0, 0, :, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and valid[0, 0].tolist() == [True] + [False] * 3
    with pytest.raises(TesoError, match="0..2"):
        fit_cue_slots(text[:, :, :2], torch.tensor([[3]]), 4)
    feats, counts = build_clip_tensor([cues, []], TinyRandomEncoder(), 4)
    assert feats.shape == (2, 4, 32) and counts.tolist() == [4, 0]


def test_rec2_reads_the_mapped_slots_and_the_silent_rate_of_kept_cues():
    from teso.cues.parse import Vocabulary

    vocab = Vocabulary(["dog", "guitar", "man"], {"puppy": ["dog"]})
    # encode --map-vocab: "stage" is dropped before the slots, so the two slots are dog, guitar.
    cues = {("a", 0): ["stage", "puppy", "guitar"]}
    kept = {"a": [[True, True]]}
    truth, visible = {"a": [{"dog"}]}, {"a": [{"dog", "guitar"}]}
    res = rec2(cues, kept, truth, vocab, ["dog", "guitar", "man"], visible=visible, map_first=True)
    assert res.extra["slots"]["sounding"] == 1 and res.extra["silent_cue_rate"] == 0.5
    with pytest.raises(TesoError, match="another cue store"):
        rec2(cues, {"a": [[True, True, True, True]]}, truth, vocab, ["dog"], map_first=True)


# --- provenance ---------------------------------------------------------------------------------


def test_store_provenance_and_its_comparison(tmp_path):
    root, _ = _encoded(tmp_path)
    tf = TextFeatures.open(root, encoder="tiny")
    prov = tf.provenance()
    assert prov["store"] == "default" and [r["reasoner"] for r in prov["reasoners"]] == ["llm"]
    assert prov["reasoners"][0]["prompt_sha"] == "abc" and prov["captioners"] == []
    enc = prov["text_encoder"]
    assert (enc["encoder"], enc["dim"], enc["n_t"]) == ("tiny", 32, 4)
    assert enc["weights_sha"] == encoder_weights_sha(TinyRandomEncoder())
    assert compare_provenance(prov, json.loads(json.dumps(prov))) == []
    # A copy under another name holds the same cues: no difference.
    shutil.copytree(root / "cues" / "default", root / "cues" / "copy")
    assert compare_provenance(prov, TextFeatures.open(root, "tiny", "copy").provenance()) == []
    # Another prompt hash, and other encoder weights: both named.
    other = json.loads(json.dumps(prov))
    other["reasoners"][0]["prompt_sha"] = "def"
    other["text_encoder"]["weights_sha"] = "0" * 16
    diffs = compare_provenance(prov, other)
    assert len(diffs) == 2 and "abc" in diffs[0] and "def" in diffs[0] and "weights_sha" in diffs[1]
    assert compare_provenance(prov, other, encoder_only=True) == [diffs[1]]
    # The model path is not compared when both have a weights hash (it differs between machines).
    moved = json.loads(json.dumps(prov))
    moved["text_encoder"]["model"] = "/elsewhere"
    assert compare_provenance(prov, moved) == []


def test_vocabulary_mapping_is_recorded_and_compared(tmp_path):
    from teso.cues.parse import Vocabulary

    root, _ = _encoded(tmp_path)
    plain = TextFeatures.open(root, encoder="tiny").provenance()
    assert plain["text_encoder"]["map_vocab"] is None
    # Re-encoding the same store with --map-vocab is a different feature set: refused without --force.
    vocab = Vocabulary(["man", "guitar"])
    with pytest.raises(TesoError, match=r"built differently .*map_vocab"):
        run_encode(CueStore(root), TinyRandomEncoder(), list_clips(root), 4, vocab, progress=False)
    shutil.copytree(root / "cues" / "default", root / "cues" / "mapped")
    mapped_store = CueStore(root, "mapped")
    assert run_encode(mapped_store, TinyRandomEncoder(), list_clips(root), 4, vocab, True, False).done == 2
    mapped = TextFeatures.open(root, "tiny", "mapped").provenance()
    assert mapped["text_encoder"]["map_vocab"] == features.vocabulary_sha(vocab) is not None
    diffs = compare_provenance(plain, mapped)
    assert len(diffs) == 1 and "map_vocab" in diffs[0]
    assert features.vocabulary_sha(Vocabulary(["man", "dog"])) != features.vocabulary_sha(vocab)


def test_weights_sha_follows_the_weights():
    class Net:  # an encoder with weights, like MiniLM / CLIP
        name, model, dim = "x", "x", 2

        def __init__(self):
            self.net = torch.nn.Linear(2, 2)

    a = Net()
    before = encoder_weights_sha(a)
    assert encoder_weights_sha(a) == before
    with torch.no_grad():
        a.net.weight[0, 0] += 1e-6
    assert encoder_weights_sha(a) != before


def test_check_refuses_a_mismatch_allows_a_swap_and_warns_without_provenance(tmp_path, capsys):
    root, _ = _encoded(tmp_path)
    prov = TextFeatures.open(root, encoder="tiny").provenance()
    other = json.loads(json.dumps(prov))
    other["store"], other["reasoners"][0]["reasoner"] = "nouns", "nouns"
    extra = {EXTRA_KEY: prov}
    assert check_cue_provenance("ck.safetensors", extra, prov) == []
    with pytest.raises(TesoError) as err:
        check_cue_provenance("ck.safetensors", extra, other, where="cue store 'nouns'")
    msg = str(err.value)
    assert "\n" not in msg and "'default'" in msg and "'nouns'" in msg and "--allow-cue-mismatch" in msg
    assert check_cue_provenance("ck.safetensors", extra, other, allow=True) != []
    assert "cue swap" in capsys.readouterr().err
    assert check_cue_provenance("old.safetensors", {}, other) == []
    err_text = capsys.readouterr().err
    assert "warning: old.safetensors records no cue provenance" in err_text


def test_checkpoint_records_provenance_and_eval_refuses_other_cues(tmp_path, capsys):
    from teso.engine.config import load_experiment
    from teso.engine.evaluate import evaluate_checkpoint
    from teso.engine.trainer import Trainer
    from teso.model import load_checkpoint, save_checkpoint
    from tests.engine_fixtures import fast_overrides, write_tree_with_features

    tree = write_tree_with_features(tmp_path / "avs")
    CueStore(tree).append_reasoning(
        {"uid": "x", "frame": 0, "status": "ok", "cues": [], "provenance": {"reasoner": "reasoned"}}
    )
    exp = load_experiment("synth", fast_overrides(tree, **{"train.max_steps": "1", "train.epochs": "1"}))
    result = Trainer(exp, tmp_path / "run", progress=False).fit()
    ckpt = result.last
    model, extra = load_checkpoint(ckpt)
    assert extra[EXTRA_KEY]["store"] == "default" and extra[EXTRA_KEY]["text_encoder"]["encoder"] == "tiny"
    # A store with the same features but cues from another reasoner.
    shutil.copytree(tree / "cues" / "default", tree / "cues" / "nouns")
    CueStore(tree, "nouns").append_reasoning(
        {"uid": "x", "frame": 0, "status": "ok", "cues": [], "provenance": {"reasoner": "nouns"}}
    )
    kw = {"audio": "normal", "progress": False, "max_clips": 1}
    with pytest.raises(
        TesoError, match=r"trained on cue store 'default'.*cue store 'nouns'.*--allow-cue-mismatch"
    ):
        evaluate_checkpoint(ckpt, tree, cues="nouns", out=tmp_path / "a.json", **kw)
    res = evaluate_checkpoint(
        ckpt, tree, cues="nouns", out=tmp_path / "b.json", allow_cue_mismatch=True, **kw
    )
    assert res["cue_swap"] and "nouns" in res["cue_swap"][0]
    assert evaluate_checkpoint(ckpt, tree, out=tmp_path / "c.json", **kw)["cue_swap"] is None
    # A checkpoint from before provenance: accepted, with a printed warning.
    capsys.readouterr()
    old = tmp_path / "old.safetensors"
    del extra[EXTRA_KEY]
    save_checkpoint(model, old, extra=extra, full=True)
    evaluate_checkpoint(old, tree, cues="nouns", out=tmp_path / "d.json", **kw)
    assert "records no cue provenance" in capsys.readouterr().err
    # The feature store's slots must match the model's.
    index = tree / "cues" / "default" / "features" / "tiny" / "index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "n_t": 5}))
    with pytest.raises(TesoError, match=r"'default'.*5 cue slots.*text.num_cues = 4"):
        evaluate_checkpoint(ckpt, tree, out=tmp_path / "e.json", **kw)


def test_cues_without_reasoning_records_compare_the_encoder_only(tmp_path, capsys):
    root, _ = _encoded(tmp_path)
    prov = TextFeatures.open(root, encoder="tiny").provenance()
    bare = {**prov, "reasoners": [], "captioners": []}
    assert check_cue_provenance("ck", {EXTRA_KEY: bare}, prov) == []
    assert "have no reasoning records; only the text encoder is checked" in capsys.readouterr().err
    other = json.loads(json.dumps(prov))
    other["text_encoder"]["dim"] = 64
    with pytest.raises(TesoError, match="text_encoder.dim 32 vs 64"):
        check_cue_provenance("ck", {EXTRA_KEY: bare}, other)
