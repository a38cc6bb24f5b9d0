"""The resumable cue pipeline: caption -> reason -> encode, and REC#1 scoring.

Each stage lists the work for the chosen clips, skips what the store already holds for the same
configuration, runs the rest in batches (``batch_size`` items per generator call, ``concurrency``
calls at once on threads) and appends one record per item as soon as its call returns. Killing the
process loses at most the calls in flight; running the same command again finishes the rest.

"Done" means: the latest record of the key is ``ok`` and was made by the same captioner/reasoner,
backend, model and prompt (name, version and hash); for a reasoner that reads captions, also from
the same caption text. Failed items are retried by the next run; malformed answers count as done
(they are answers) unless ``retry_malformed`` is set.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teso.cues.captioners import FrameItem
from teso.cues.features import (
    build_clip_tensor,
    clip_file,
    clip_is_current,
    cues_sha,
    write_clip,
    write_index,
)
from teso.cues.parse import Vocabulary
from teso.cues.rec import RecResult, SlotCounts, clip_level, rec1, seen_cues, synth_frames
from teso.cues.store import CueStore, now, text_sha
from teso.errors import TesoError

# "vocabulary" (the nouns reasoner) and "source" (reasoned) are part of what a cue means: changing
# either makes the frames "not done" again. Records made before they existed lack both (None == None).
_IDENTITY = ("captioner", "reasoner", "backend", "model", "prompt", "prompt_version", "prompt_sha",
             "vocabulary", "source")  # fmt: skip


@dataclass
class Summary:
    """What one stage did; :meth:`describe` is the text printed at the end of a command."""

    stage: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    malformed: int = 0
    waiting: int = 0  # items that cannot run yet (no caption / no cues)
    failures: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    cues_per_frame: float | None = None
    seconds: float = 0.0

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason[:160]] += 1

    def describe(self) -> str:
        rate = f", {self.done / self.seconds:.2f} items/s" if self.seconds > 0 and self.done else ""
        lines = [
            f"{self.stage}: {self.total} items: {self.done} done, {self.skipped} skipped (already done), "
            f"{self.failed} failed, {self.waiting} waiting{rate}"
        ]
        if self.malformed:
            lines.append(
                f"  {self.malformed} malformed answers kept raw and flagged (re-run with --retry-malformed)"
            )
        if self.cues_per_frame is not None:
            lines.append(f"  cues per frame (whole store): {self.cues_per_frame:.2f}")
        for reason, count in self.failures.most_common(10):
            lines.append(f"  failed x{count}: {reason}")
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def list_clips(root: str | Path, subsets: Sequence[str] | None = None, splits: Sequence[str] | None = None,
               limit: int | None = None) -> list:  # fmt: skip
    """The clips to process (:func:`teso.data.avsbench.list_clips`), the first ``limit`` if given."""
    from teso.data.avsbench import list_clips as _list

    clips = _list(root, subsets or None, splits or None)
    if limit is not None:
        clips = clips[:limit]
    if not clips:
        raise TesoError(f"{root}: no clips match subsets={subsets or 'all'} splits={splits or 'all'}")
    return clips


def _frames(clips: list) -> Iterator[FrameItem]:
    for clip in clips:
        for t in range(clip.num_frames):
            yield FrameItem(clip.uid, t, Path(clip.frame_paths[t]), Path(clip.clip_dir))


def _same_config(record: dict[str, Any], prov: dict[str, Any]) -> bool:
    old = record.get("provenance") or {}
    return all(old.get(k) == prov.get(k) for k in _IDENTITY)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), max(1, size)):
        yield items[i : i + size]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def execute(
    worker: Any,
    items: list[FrameItem],
    on_result: Callable[[FrameItem, dict[str, Any]], None],
    desc: str,
    progress: bool = True,
) -> None:
    """Run ``worker.process`` over ``items`` in batches, ``worker.concurrency`` batches at a time.

    ``on_result`` is called in the calling thread (so store appends never race) as each batch
    returns. On an exception or KeyboardInterrupt, batches not yet started are cancelled and the
    exception propagates; finished batches are already stored.
    """
    batches = list(_chunks(items, worker.batch_size))
    bar = _progress(len(items), desc, progress)
    try:
        if worker.concurrency <= 1:
            for batch in batches:
                for item, res in zip(batch, worker.process(batch)):
                    on_result(item, res)
                bar.update(len(batch))
            return
        pool = ThreadPoolExecutor(max_workers=worker.concurrency, thread_name_prefix="teso-cues")
        pending: dict[Future, list[FrameItem]] = {}
        queue = iter(batches)
        try:
            # A bounded window: 150k frames must not become 150k queued futures.
            for batch in queue:
                pending[pool.submit(worker.process, batch)] = batch
                if len(pending) >= 2 * worker.concurrency:
                    break
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    batch = pending.pop(fut)
                    for item, res in zip(batch, fut.result()):
                        on_result(item, res)
                    bar.update(len(batch))
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(worker.process, nxt)] = nxt
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()


def run_caption(
    store: CueStore, captioner: Any, clips: list, force: bool = False, progress: bool = True
) -> Summary:
    """Caption every frame of ``clips`` that the store does not hold yet for this captioner."""
    summary = Summary("caption")
    prov = captioner.provenance()
    have = store.captions()
    todo = []
    for item in _frames(clips):
        summary.total += 1
        rec = have.get((item.uid, item.frame))
        if not force and rec and rec["status"] == "ok" and _same_config(rec, prov):
            summary.skipped += 1
        else:
            todo.append(item)

    def on_result(item: FrameItem, res: dict[str, Any]) -> None:
        ok = "error" not in res
        store.append_caption({
            "uid": item.uid, "frame": item.frame, "status": "ok" if ok else "failed",
            "caption": res.get("caption"), "error": res.get("error"),
            "provenance": {**prov, "stage": "caption", "time": now()},
        })  # fmt: skip
        if ok:
            summary.done += 1
        else:
            summary.fail(res["error"])

    start = time.perf_counter()
    execute(captioner, todo, on_result, "caption", progress)
    summary.seconds = time.perf_counter() - start
    return summary


def run_reason(
    store: CueStore,
    reasoner: Any,
    clips: list,
    force: bool = False,
    retry_malformed: bool = False,
    progress: bool = True,
) -> Summary:
    """Reason about every frame of ``clips`` (from its stored caption, or its image for ``vlm``)."""
    summary = Summary("reason")
    prov = reasoner.provenance()
    captions = store.captions() if reasoner.needs_caption else {}
    have = store.reasoning()
    todo = []
    for item in _frames(clips):
        summary.total += 1
        sha = None
        if reasoner.needs_caption:
            cap = captions.get((item.uid, item.frame))
            if not cap or cap["status"] != "ok":
                summary.waiting += 1
                continue
            item = FrameItem(item.uid, item.frame, item.image, item.clip_dir, cap["caption"])
            sha = text_sha(cap["caption"])
        rec = have.get((item.uid, item.frame))
        done = (
            rec is not None
            and rec["status"] == "ok"
            and _same_config(rec, prov)
            and rec.get("caption_sha") == sha
            and not (retry_malformed and rec.get("malformed"))
        )
        if done and not force:
            summary.skipped += 1
        else:
            todo.append(item)
    if summary.waiting:
        summary.notes.append(f"{summary.waiting} frames have no caption yet: run `teso cues caption` first")

    def on_result(item: FrameItem, res: dict[str, Any]) -> None:
        ok = "error" not in res
        rec = {
            "uid": item.uid, "frame": item.frame, "status": "ok" if ok else "failed",
            "raw": res.get("raw"), "cues": res.get("cues", []), "malformed": bool(res.get("malformed")),
            "parse": res.get("parse"), "error": res.get("error"),
            "caption_sha": text_sha(item.caption) if item.caption is not None else None,
            "provenance": {**prov, "stage": "reason", "time": now()},
        }  # fmt: skip
        if "parse_error" in res:
            rec["parse_error"] = res["parse_error"]
        store.append_reasoning(rec)
        if not ok:
            summary.fail(res["error"])
            return
        summary.done += 1
        summary.malformed += int(rec["malformed"])

    start = time.perf_counter()
    execute(reasoner, todo, on_result, f"reason ({reasoner.name})", progress)
    summary.seconds = time.perf_counter() - start
    keys = {(c.uid, t) for c in clips for t in range(c.num_frames)}
    cues = {k: v for k, v in store.cues().items() if k in keys}
    if cues:
        summary.cues_per_frame = sum(len(v) for v in cues.values()) / len(cues)
    return summary


def run_encode(
    store: CueStore,
    encoder: Any,
    clips: list,
    n_t: int = 4,
    vocab: Vocabulary | None = None,
    force: bool = False,
    progress: bool = True,
) -> Summary:
    """Write ``[T, n_t, d_T]`` features + counts for every clip whose frames all have cues.

    With ``vocab``, cues are first mapped onto its categories (unmapped cues dropped, counted in the
    notes); without it, the free-text cues are encoded as the reasoner wrote them (the paper).
    """

    if n_t < 1:
        raise TesoError(f"--n-t {n_t}: expected at least one cue slot")
    summary = Summary("encode")
    fdir = store.features_dir(encoder.name)
    write_index(fdir, encoder, n_t, force=force, vocab=vocab)
    reasoning = store.reasoning()
    cache: dict = {}
    unmapped = total_cues = malformed = 0
    start = time.perf_counter()
    bar = _progress(len(clips), f"encode ({encoder.name})", progress)
    try:
        for clip in clips:
            summary.total += 1
            recs = [reasoning.get((clip.uid, t)) for t in range(clip.num_frames)]
            missing = [t for t, r in enumerate(recs) if r is None or r["status"] != "ok"]
            if missing:
                summary.waiting += 1
                bar.update(1)
                continue
            cues = []
            for r in recs:
                malformed += int(bool(r.get("malformed")))
                frame = list(r.get("cues") or [])
                total_cues += len(frame)
                if vocab is not None:
                    frame, lost = vocab.map_all(frame)
                    unmapped += len(lost)
                cues.append(frame)
            sha = cues_sha(cues, n_t)
            path = clip_file(fdir, clip.uid)
            if not force and clip_is_current(path, sha):
                summary.skipped += 1
            else:
                feats, counts = build_clip_tensor(cues, encoder, n_t, cache)
                write_clip(path, clip.uid, feats, counts, sha)
                summary.done += 1
            bar.update(1)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    if summary.waiting:
        summary.notes.append(
            f"{summary.waiting} clips have frames without cues: run `teso cues reason` (or `all`) first"
        )
    if malformed:
        summary.notes.append(f"{malformed} frames had a malformed answer and get no cue (count 0)")
    if vocab is not None and total_cues:
        summary.notes.append(f"{unmapped}/{total_cues} cues did not map onto the vocabulary and were dropped")
    summary.notes.append(f"features: {fdir}")
    return summary


def dataset_vocabulary(root: str | Path, vocab: str = "auto", synonyms: dict | None = None) -> Vocabulary:
    """``auto``: ROOT/label2idx.json, else the categories of ROOT/synth.json; ``synth``: those of
    ROOT/synth.json; ``avss``: the 70 AVSS classes; anything else: the path of a label2idx.json."""
    root = Path(root)
    if vocab == "avss":
        return Vocabulary.avss(synonyms)
    if vocab not in ("auto", "synth"):
        return Vocabulary.from_label2idx(vocab, synonyms)
    if vocab == "auto" and (root / "label2idx.json").is_file():
        return Vocabulary.from_label2idx(root / "label2idx.json", synonyms)
    if (root / "synth.json").is_file():
        path = root / "synth.json"
        try:
            cats = json.loads(path.read_text(encoding="utf-8"))["categories"]
            names = [c["name"] if isinstance(c, dict) else str(c) for c in cats]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise TesoError(f"{path}: cannot read its categories ({err})") from err
        if synonyms is None:
            from teso.cues.parse import AVSS_SYNONYMS

            synonyms = {w: t for w, t in AVSS_SYNONYMS.items() if all(x in names for x in t)}
        return Vocabulary(names, dict(synonyms))
    if vocab == "synth":
        raise TesoError(f"{root / 'synth.json'}: missing; --vocab synth reads a SynthAVS tree's categories")
    raise TesoError(
        f"{root}: no label2idx.json or synth.json to take the vocabulary from; pass --vocab avss or a path"
    )


def run_score(
    store: CueStore,
    clips: list,
    vocab: Vocabulary,
    truth: str = "auto",
    n_t: int | None = 4,
    map_first: bool = False,
) -> RecResult:
    """REC#1 of the store's cues over ``clips`` (see :mod:`teso.cues.rec`).

    ``truth``: ``synth`` (each clip's truth.json), ``a_obj`` (the metadata's sounding objects, for every
    frame of the clip) or ``auto`` (``synth`` when ROOT/synth.json exists). ``n_t``: only the first
    ``n_t`` cues of each frame are scored, the ones the model sees after truncation (``None``: every
    cue). ``map_first``: the features were built with ``encode --map-vocab``, which maps the cues onto
    the vocabulary *before* truncating, so the first ``n_t`` mapped categories are what the model sees.
    With SynthAVS truth the cue slots are also sorted by what they name (:class:`SlotCounts`): the
    silent-object cue rate.
    """
    if truth == "auto":
        truth = "synth" if (store.root / "synth.json").is_file() else "a_obj"
    if truth not in ("synth", "a_obj"):
        raise TesoError(f"--truth {truth!r}: expected auto, synth or a_obj")
    if n_t is not None and n_t < 1:
        raise TesoError(f"--n-t {n_t}: expected at least one cue slot")
    reasoning = store.reasoning()
    frames = []
    missing: list[str] = []
    malformed = cues_total = cues_seen = cues_unmapped = 0
    truth_unmapped: Counter = Counter()
    slots = SlotCounts()

    def names(raw: set[str]) -> set[str]:
        out: set[str] = set()
        for name in raw:
            mapped = vocab.map(name)
            if not mapped:
                truth_unmapped[name] += 1
            out.update(mapped)
        return out

    per_clip: list[list[tuple[set[str], set[str]]]] = []
    for clip in clips:
        start = len(frames)
        if truth == "synth":
            gt, vis = synth_frames(Path(clip.clip_dir), clip.num_frames)
        else:
            gt, vis = [set(clip.a_obj)] * clip.num_frames, None
        for t in range(clip.num_frames):
            rec = reasoning.get((clip.uid, t))
            if rec is None or rec["status"] != "ok":
                missing.append(f"{clip.uid}/{t}")
                continue
            malformed += int(bool(rec.get("malformed")))
            cues = rec.get("cues") or []
            cues_total += len(cues)
            if map_first:
                mapped, lost = vocab.map_all(cues)
                slot_cats = [[c] for c in seen_cues(mapped, n_t)]
            else:
                seen = seen_cues(cues, n_t)
                slot_cats = [vocab.map(c) for c in seen]
                lost = [c for c, cats in zip(seen, slot_cats) if not cats]
            cues_seen += len(slot_cats)
            cues_unmapped += len(lost)
            gt_names = names(gt[t])
            frames.append(({c for cats in slot_cats for c in cats}, gt_names))
            if vis is not None:
                slots.add(slot_cats, gt_names, names(vis[t]))
        per_clip.append(frames[start:])
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise TesoError(
            f"{store.reasoning_path}: {len(missing)} frames have no cues: {shown}; run `teso cues reason`"
        )
    if not any(g for _, g in frames):
        raise TesoError(
            f"{store.root}: no frame has a sounding category in the ground truth ({truth}); "
            "REC needs a_obj (released layout) or truth.json (SynthAVS)"
        )
    result = rec1(frames, vocab.names)
    # Clip level, as AVSBench's a_obj labels a clip: the cues of all its frames against everything
    # that sounds in it.
    result.extra = {
        "rec1_clip": rec1(clip_level(per_clip), vocab.names).rec1,
        "store": store.name,
        "truth": truth,
        "n_t": n_t,
        "map_first": map_first,
        "frames_malformed": malformed,
        "cues": cues_total,
        "cues_seen": cues_seen,
        "cues_unmapped": cues_unmapped,
        "truth_unmapped": dict(truth_unmapped),
        "slots": slots.to_dict() if truth == "synth" else None,
        "silent_cue_rate": slots.silent_rate if truth == "synth" else None,
    }
    return result
