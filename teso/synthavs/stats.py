"""``teso data stats ROOT``: the SynthAVS premises, each a number (docs/synthavs.md, "SynthAVS v2").

Everything is measured on one split (``val`` by default; calibrations are never made on test):

- **P1, audio semantics are weak in multi-source scenes.**
  *Reference classifier* (independent of every teso model): a 5-nearest-neighbour classifier on the
  per-band mean and standard deviation of each second's VGGish log-mel example, neighbours from the
  train split's *clean* seconds (exactly one source heard), scored on the split's clean seconds: its
  category accuracy, family accuracy and within-family balanced accuracy (among the seconds whose
  family it got right, the mean over categories of the share it named right: a classifier that cannot
  tell the members apart scores 1 / family size whatever its bias) against that chance rate. In v2
  the family is heard and the member is not; in v1 both are.
  *Audio foundation* (``--foundation DIR``, pre-trained by ``teso pretrain --eval-split SPLIT``): the
  tagging mAP of its category tags and of its family tags over the multi-source seconds (two or more
  sources heard), from its ``foundation.json``; and the ratio of that category mAP to the reasoned
  cues' REC#1 (paper: 24.22 / 80.41 = 0.30).
- **P2, text names the candidate sources, audio says when.** The share of audible objects that are
  bystanders (never sound in their clip); clip-level REC#1 (as AVSBench scores it: the cues of all of
  a clip's frames against the categories that sound in the clip) of the ``reasoned`` cues (what an
  ideal reader of the captions concludes) and of the ``nouns`` cues (every caption noun mapped onto
  the vocabulary, spaCy), and frame-level REC#1 for both.
- **P3, where the metric looks.** The share of seconds in which nothing on screen sounds, the
  sources-per-second histogram; and (P1) the share of the clips with two or more audible objects
  that hold two of one family.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from teso.errors import TesoError

K_NEIGHBOURS = 5  # the reference classifier's neighbours
REFERENCE = 0.30  # paper: audio-tag recognition 24.22 % AP (BAVS, Table 3) / LLM cues' REC#1 80.41 %


def _clips(root: Path, split: str) -> list[tuple[str, Path, dict]]:
    from teso.cues.rec import read_truth
    from teso.data.avsbench import list_clips

    clips = list_clips(root, splits=[split])
    if not clips:
        raise TesoError(f"{root / 'metadata.csv'}: no clips in the {split} split")
    return [(c.label, Path(c.clip_dir), read_truth(Path(c.clip_dir))) for c in clips]


def families_of(root: Path) -> dict[str, str]:
    """Category -> family from ``synth.json`` (v2); for v1, the v2 families of the same categories
    (so that v1 can be measured against the same premise)."""
    fams = read_synth(root).get("families")
    if not fams:
        from teso.synthavs.generator.categories import FAMILIES

        fams = FAMILIES
    return {c: f for f, members in fams.items() for c in members}


def read_synth(root: Path) -> dict[str, Any]:
    """``ROOT/synth.json``, or an error naming it."""
    path = root / "synth.json"
    if not path.is_file():
        raise TesoError(f"{root}: not a SynthAVS tree (no synth.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TesoError(f"{path}: not valid JSON ({err})") from err


def scene_stats(truths: list[tuple[str, Path, dict]], family_of: dict[str, str]) -> dict[str, Any]:
    """P2 / P3 counts from the truth files."""
    seconds = 0
    per_second: Counter[int] = Counter()
    audible = bystanders = 0
    multi = pairs = offscreen = 0
    for _, _, truth in truths:
        objs = truth["objects"]
        seconds += int(truth["seconds"])
        for t in range(int(truth["seconds"])):
            per_second[sum(bool(o["sounding"][t]) for o in objs)] += 1
        aud = [o for o in objs if o["audible"]]
        audible += len(aud)
        bystanders += sum(not any(o["sounding"]) for o in aud)
        if len(aud) >= 2:
            multi += 1
            fams = Counter(family_of.get(o["category"]) for o in aud)
            pairs += any(n >= 2 for f, n in fams.items() if f)
        offscreen += bool(truth.get("offscreen"))
    hist = {str(k) if k < 3 else "3+": 0 for k in range(4)}
    for k, n in per_second.items():
        hist[str(k) if k < 3 else "3+"] += n
    return {
        "clips": len(truths),
        "seconds": seconds,
        "all_silent_share": per_second[0] / seconds,
        "sources_per_second": {k: v / seconds for k, v in hist.items()},
        "audible_objects": audible,
        "bystander_share": bystanders / audible if audible else None,
        "clips_with_two_audible": multi,
        "same_family_pair_share": pairs / multi if multi else None,
        "offscreen_clip_share": offscreen / len(truths),
    }


def _rec(frames: list[tuple[set[str], set[str]]], categories: list[str]) -> float | None:
    from teso.cues.rec import rec1

    return rec1(frames, categories).rec1


def cue_stats(root: Path, truths: list[tuple[str, Path, dict]], nouns: bool = True) -> dict[str, Any]:
    """Clip- and frame-level REC#1 of the reasoned cues (and of the noun cues with ``nouns``)."""
    from teso.cues.rec import clip_level
    from teso.cues.runner import dataset_vocabulary
    from teso.synthavs.generator.captions import ideal_reading

    vocab = dataset_vocabulary(root)
    categories = list(vocab.names)
    sources: dict[str, list[list[set[str]]]] = {"reasoned": []}
    truth_frames: list[list[set[str]]] = []
    for _, _, truth in truths:
        truth_frames.append(
            [{o["category"] for o in truth["objects"] if o["sounding"][t]} for t in range(truth["seconds"])]
        )
        sources["reasoned"].append([set(f) for f in ideal_reading(truth)])
    if nouns:
        from teso.cues.reasoners import NounReasoner

        reasoner = NounReasoner.for_dataset(root, vocab="auto")
        sources["nouns"] = []
        for _, clip_dir, _ in truths:
            captions = json.loads((clip_dir / "captions.json").read_text(encoding="utf-8"))
            sources["nouns"].append([set(cats) for cats, _ in reasoner.categories(captions)])
    out: dict[str, Any] = {}
    for name, per_clip in sources.items():
        pairs = [list(zip(c, t)) for c, t in zip(per_clip, truth_frames)]
        frame_level = [pair for clip in pairs for pair in clip]
        out[name] = {
            "rec1_clip": _rec(clip_level(pairs), categories),
            "rec1_frame": _rec(frame_level, categories),
        }
    return out


def _logmel_stats(clip_dir: Path, seconds: int) -> np.ndarray:
    """``[T, 128]``: per second, the mean and standard deviation over time of each of the 64 bands of
    its VGGish log-mel example."""
    from teso.audio import load_audio
    from teso.audio.logmel import per_second_examples

    ex = per_second_examples(load_audio(clip_dir / "audio.wav"), 16000, seconds).numpy()  # [T, 1, 96, 64]
    ex = ex[:, 0]
    return np.concatenate([ex.mean(1), ex.std(1)], 1)


def _clean_seconds(truths: list[tuple[str, Path, dict]]) -> tuple[np.ndarray, list[str], list[str]]:
    """Features, categories and clip uids of the seconds in which exactly one source is heard (none
    off screen)."""
    feats, cats, uids = [], [], []
    for _, clip_dir, truth in truths:
        off = truth.get("offscreen")
        keep = []
        for t in range(truth["seconds"]):
            on = [o["category"] for o in truth["objects"] if o["sounding"][t]]
            if len(on) == 1 and not (off and off["sounding"][t]):
                keep.append((t, on[0]))
        if keep:
            x = _logmel_stats(clip_dir, truth["seconds"])
            feats += [x[t] for t, _ in keep]
            cats += [c for _, c in keep]
            uids += [truth["uid"]] * len(keep)
    return np.asarray(feats, dtype=np.float64).reshape(len(cats), -1), cats, uids


def reference_audio(
    train: list[tuple[str, Path, dict]], test: list[tuple[str, Path, dict]], family_of: dict[str, str]
) -> dict[str, Any]:
    """The independent reference classifier of P1 (module docstring)."""
    x_tr, y_tr, u_tr = _clean_seconds(train)
    x_te, y_te, u_te = _clean_seconds(test)
    if not y_tr or not y_te:
        raise TesoError(
            f"reference classifier: no clean second (one source heard) in the train split ({len(y_tr)}) "
            f"or the evaluated one ({len(y_te)}): too few clips"
        )
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    # Squared distances as |a|² + |b|² − 2ab: [n_test, n_train] without an [n_test, n_train, 128] array.
    dist = (x_te**2).sum(1)[:, None] + (x_tr**2).sum(1)[None] - 2 * x_te @ x_tr.T
    # k nearest neighbours, not centroids: a v2 family's pool holds several recipes (a bark and a
    # chirp), so one centroid per category would sit between them and miss both.
    # A second's neighbours never come from its own clip (the same voice): this matters when the
    # train split itself is measured, and changes nothing for val / test.
    dist[np.asarray(u_te)[:, None] == np.asarray(u_tr)[None]] = np.inf
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :K_NEIGHBOURS]
    pred = []
    for row in nearest:
        votes = Counter(y_tr[i] for i in row)
        best = max(votes.values())
        # Ties go to the nearest of the tied categories (deterministic).
        pred.append(next(y_tr[i] for i in row if votes[y_tr[i]] == best))
    cat_ok = [p == y for p, y in zip(pred, y_te)]
    fam_ok = [family_of.get(p) == family_of.get(y) for p, y in zip(pred, y_te)]
    recall: dict[str, list[bool]] = {}
    for p, y, f in zip(pred, y_te, fam_ok):
        if f:
            recall.setdefault(y, []).append(p == y)
    within = [float(np.mean(v)) for v in recall.values()]
    sizes = Counter(family_of.values())
    chance = float(np.mean([1 / sizes[family_of[y]] for y in recall if y in family_of]))
    return {
        "train_seconds": len(y_tr),
        "seconds": len(y_te),
        "clips": len(set(u_te)),
        "category_accuracy": float(np.mean(cat_ok)),
        "family_accuracy": float(np.mean(fam_ok)),
        "within_family_accuracy": float(np.mean(within)) if within else None,
        "within_family_chance": chance,
    }


def foundation_audio(foundation: Path) -> dict[str, Any]:
    """The audio foundation's P1 scores from ``foundation.json`` (written by ``teso pretrain``)."""
    path = foundation / "foundation.json"
    if not path.is_file():
        raise TesoError(f"--foundation {foundation}: no foundation.json (made by `teso pretrain`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TesoError(f"{path}: not valid JSON ({err})") from err
    audio = record.get("audio") or {}
    if "multi_source_map" not in audio:
        raise TesoError(
            f"{path}: no multi-source tagging scores: made on a tree without sound families (v1), "
            "by an older teso, or on a split with no second of two sources; pre-train on a v2 tree"
        )
    keys = ("map", "family_map", "multi_source_map", "multi_source_family_map", "multi_source_seconds")
    return {"eval_split": record.get("eval_split"), **{k: audio.get(k) for k in keys}}


def data_stats(
    root: str | Path, split: str = "val", foundation: str | Path | None = None, nouns: bool = True
) -> dict[str, Any]:
    """Every premise figure of the tree at ``root`` on ``split`` (module docstring)."""
    root = Path(root)
    synth = read_synth(root)
    family_of = families_of(root)
    truths = _clips(root, split)
    out: dict[str, Any] = {
        "root": str(root),
        "version": synth.get("parameters", {}).get("version"),
        "split": split,
        "scenes": scene_stats(truths, family_of),
        "cues": cue_stats(root, truths, nouns=nouns),
        "reference_audio": reference_audio(_clips(root, "train"), truths, family_of),
    }
    if foundation is not None:
        audio = foundation_audio(Path(foundation))
        if audio["eval_split"] != split:
            raise TesoError(
                f"--foundation {foundation}: scored on {audio['eval_split']}, not {split} "
                + (
                    f"(teso pretrain ROOT --eval-split {split})"
                    if split != "train"
                    else "(pretrain scores val or test)"
                )
            )
        rec = out["cues"]["reasoned"]["rec1_clip"]
        audio["ratio_to_reasoned_rec1"] = audio["multi_source_map"] / rec if rec else None
        out["audio_foundation"] = audio
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def render(stats: dict[str, Any]) -> str:
    """The figures as text, premise by premise, each with its target (docs/synthavs.md)."""
    s, c, r = stats["scenes"], stats["cues"], stats["reference_audio"]
    lines = [
        f"SynthAVS {stats['version']} at {stats['root']}, {stats['split']} split: "
        f"{s['clips']} clips, {s['seconds']} s",
        "P1 audio semantics are weak in multi-source scenes",
        f"  reference classifier (5 nearest neighbours, log-mel statistics; {r['seconds']} clean seconds "
        f"of {r['clips']} clips): "
        f"family {_pct(r['family_accuracy'])}, category {_pct(r['category_accuracy'])}, "
        f"within family {_pct(r['within_family_accuracy'])} balanced "
        f"(chance {_pct(r['within_family_chance'])})",
        f"  same-family pair in {_pct(s['same_family_pair_share'])} of the {s['clips_with_two_audible']} "
        "clips with two or more audible objects; "
        f"off-screen source in {_pct(s['offscreen_clip_share'])} of the clips",
    ]
    a = stats.get("audio_foundation")
    if a:
        ratio = a["ratio_to_reasoned_rec1"]
        lines.append(
            f"  audio foundation, {a['multi_source_seconds']} multi-source seconds: category mAP "
            f"{_pct(a['multi_source_map'])}, family mAP {_pct(a['multi_source_family_map'])} "
            f"(target >= 80 %); category mAP / reasoned REC#1 = "
            f"{'-' if ratio is None else f'{ratio:.2f}'} (paper {REFERENCE:.2f})"
        )
    else:
        lines.append("  audio foundation: not measured (--foundation DIR, pre-trained with --eval-split)")
    lines += [
        "P2 text names the candidate sources, audio says when",
        f"  bystanders (audible, never sound in their clip): {_pct(s['bystander_share'])} of "
        f"{s['audible_objects']} audible objects (target about 20 %)",
    ]
    for name, v in c.items():
        lines.append(
            f"  {name} cues: REC#1 clip-level {_pct(v['rec1_clip'])}, frame-level {_pct(v['rec1_frame'])}"
        )
    lines += [
        "  (paper Table 3: LLM cues 80.41 %, nouns 77.82 %)",
        "P3 where the metric looks",
        f"  seconds where nothing on screen sounds: {_pct(s['all_silent_share'])}; sources per second "
        + ", ".join(f"{k}: {_pct(v)}" for k, v in s["sources_per_second"].items()),
    ]
    return "\n".join(lines)
