"""Evaluation under audio controls (SPEC §6–7): the visual features of a clip are computed once and
reused for every audio condition (normal, mute, noise), as only the prompts depend on the audio."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from teso.audio import mute, per_second_examples, white_noise
from teso.cues.slots import slot_count
from teso.data.avsbench import SAMPLE_RATE, collate, detect_layout
from teso.engine.conditions import NOISE as _NOISE
from teso.engine.conditions import condition_help, parse_conditions
from teso.engine.data import ClipDataset
from teso.engine.distributed import DistInfo, all_gather_objects
from teso.errors import TesoError
from teso.metrics import (
    AVSBenchMeter,
    ForegroundRateMeter,
    PreferenceRateMeter,
    SemanticMeter,
    relative_drop,
)
from teso.model import TeSO
from teso.model.postprocess import sounding_maps
from teso.model.preprocess import preprocess_frames


def perturb(waveform: torch.Tensor, condition: str, seed: int) -> torch.Tensor:
    """One clip's waveform [N] under an audio condition (noise seeded per clip, so runs repeat)."""
    if condition == "normal":
        return waveform
    if condition == "mute":
        return mute(waveform)
    m = _NOISE.match(condition)
    if m is None:
        raise TesoError(f"audio condition {condition!r}: {condition_help()}")
    mode = "only" if m.group(1) == "wgn" else "additive"
    return white_noise(waveform, float(m.group(2)), mode=mode, seed=seed)


def silent_audible_masks(clip_dir: Path, num_frames: int, size: tuple[int, int]) -> torch.Tensor | None:
    """bool [T, H, W]: pixels of visible, audible objects that are silent in that second.

    Read from a SynthAVS clip's ``truth.json`` + ``instances/{t}.png``; None for datasets without
    that truth (AVSBench), where the preference rate cannot be measured.
    """
    truth_path = clip_dir / "truth.json"
    if not truth_path.is_file():
        return None
    truth = json.loads(truth_path.read_text())
    out = np.zeros((num_frames, *size), dtype=bool)
    for t in range(num_frames):
        try:
            silent = [o["instance_id"] for o in truth["objects"] if o["audible"] and not o["sounding"][t]]
        except (KeyError, IndexError, TypeError) as err:
            raise TesoError(
                f"{truth_path}: expected objects with instance_id, audible and {num_frames} sounding "
                f"flags ({err!r})"
            ) from err
        if not silent:
            continue
        path = clip_dir / "instances" / f"{t}.png"
        if not path.is_file():
            raise TesoError(f"{path}: missing instance mask (truth.json lists objects for frame {t})")
        inst = np.asarray(Image.open(path))
        if inst.shape != tuple(size):
            raise TesoError(f"{path}: instance mask is {inst.shape}, frame masks are {tuple(size)}")
        out[t] = np.isin(inst, silent)
    return torch.from_numpy(out)


@dataclass
class ConditionMeters:
    binary: AVSBenchMeter
    foreground: ForegroundRateMeter
    preference: PreferenceRateMeter
    # The same, over frames whose ground truth has a sounding pixel: where text could help; silent
    # seconds (blank-when-quiet) are left out (SPEC §7, issue 17 P3).
    preference_sounding: PreferenceRateMeter
    semantic: SemanticMeter | None = None
    empty_gt_frames: int = 0  # frames whose ground truth is empty (nothing sounds)
    cues_kept: list[float] = field(default_factory=list)
    # uid -> per frame, one bool per real cue slot (padding left out): what the dynamic mask kept.
    kept: dict[str, list[list[bool]]] = field(default_factory=dict)
    # One bool a frame: no prompt token reached the queries (the frame decodes as the visual-only model).
    unprompted: list[bool] = field(default_factory=list)

    def merge(self, other: ConditionMeters) -> None:
        self.binary.merge(other.binary)
        self.foreground.merge(other.foreground)
        self.preference.merge(other.preference)
        self.preference_sounding.merge(other.preference_sounding)
        self.empty_gt_frames += other.empty_gt_frames
        if self.semantic is not None and other.semantic is not None:
            self.semantic.merge(other.semantic)
        self.cues_kept += other.cues_kept
        self.kept.update(other.kept)
        self.unprompted += other.unprompted


def _new_meters(num_classes: int, batch_clips: int, threshold: float) -> ConditionMeters:
    return ConditionMeters(
        binary=AVSBenchMeter(
            "reference",
            clips_per_batch=batch_clips,
            threshold=threshold,
            from_logits=False,
            per_clip=True,  # fed one clip at a time with its uid as clip id
        ),
        foreground=ForegroundRateMeter(threshold=threshold, from_logits=False),
        preference=PreferenceRateMeter(threshold=threshold, from_logits=False),
        preference_sounding=PreferenceRateMeter(threshold=threshold, from_logits=False),
        semantic=SemanticMeter(num_classes=num_classes) if num_classes > 1 else None,
    )


# What the model takes from a clip: stacked over the clips of a batch (frames come resized to the
# model's input size). Masks stay per clip, at each clip's own resolution.
_MODEL_KEYS = ("uid", "frames", "audio", "text", "text_count")


def clip_sounding_maps(
    out: Any, clip: int, frames: int, size: tuple[int, int], num_classes: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sounding probability ``[T, H, W]`` float32 (CPU) and, for semantic models, class ids ``[T, H, W]``
    (else None) of clip ``clip`` of a decoded batch ``out`` (``TeSOOutput``), its ``frames`` = T
    frames at ``size`` = (H, W).

    Upsampled frame by frame (``frame_probs_at``): at ground-truth size only one frame's N_Q mask
    logits and N_C maps exist at a time, never a batch's ``[B, T, N_Q, H, W]``.
    """
    fgs, classes = [], []
    for f in range(frames):
        fg, cls = sounding_maps(out.frame_probs_at(clip, f, size).float(), num_classes, threshold)
        fgs.append(fg.cpu())
        if cls is not None:
            classes.append(cls.cpu())
    return torch.stack(fgs), (torch.stack(classes) if classes else None)


def _shard(n: int, batch_clips: int, info: DistInfo) -> list[list[int]]:
    """Whole evaluation batches of consecutive clips per rank, so the reference metric is exact."""
    blocks = [list(range(i, min(i + batch_clips, n))) for i in range(0, n, batch_clips)]
    per_rank = math.ceil(len(blocks) / info.world_size)
    return blocks[info.rank * per_rank : (info.rank + 1) * per_rank]


@torch.no_grad()
def evaluate(
    model: TeSO,
    dataset: ClipDataset,
    conditions: Sequence[str] = ("normal",),
    *,
    batch_clips: int = 4,
    threshold: float = 0.5,
    seed: int = 0,
    reuse_visual: bool = True,
    info: DistInfo | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_clips: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (audio="waveform", masks at ground-truth resolution).

    The model runs on batches of ``batch_clips`` clips at its input size; each clip is then scored at
    its own ground-truth resolution (AVSS clips differ in size), frame by frame, and the split-level
    numbers are aggregated from those per-frame statistics exactly as AVSBench does.

    Returns ``{"conditions": {name: {...}}, "frames": n, "seconds": wall time}`` where each condition
    has miou, fscore (AVSBench reference, batches of ``batch_clips`` clips), miou_nonempty, fg_rate
    (share of pixels predicted sounding), pref_rate (share of visible-but-silent audible pixels
    predicted sounding; None without SynthAVS truth), delta_m / delta_f (relative drops against
    normal), by_mode (batch-independent variants), cues_kept (share of real cues the dynamic mask
    kept), all_cues_masked (share of frames with cues whose cues it dropped all), unprompted (share
    of frames where no prompt token at all reached the queries, zero slots and audio tokens
    included: those frames decode as the visual-only model; None without prompts), kept_by_frame
    ({uid: per frame one bool per real cue}, for REC#2), per_clip ({uid: {miou, fscore, num_frames,
    num_nonempty_frames}}: each clip scored alone) and, for semantic models, semantic_miou /
    semantic_fscore.
    """
    info = info or DistInfo()
    if dataset.base.audio != "waveform":
        raise TesoError("evaluate: the dataset must be built with audio='waveform' (controls perturb it)")
    cfg = model.config
    model.eval()
    device = next(model.parameters()).device
    n = len(dataset) if max_clips is None else min(len(dataset), max_clips)
    unannotated = [r.uid for r in dataset.records[:n] if not all(r.annotated)]
    if unannotated:
        raise TesoError(
            f"{dataset.base.root}: {len(unannotated)} clip(s) of {dataset.base.subset}/"
            f"{dataset.base.split} have frames without ground truth (e.g. {unannotated[0]}; AVSBench "
            "S4 train annotates frame 0 only): evaluate on val or test"
        )
    meters = {c: _new_meters(cfg.num_classes, batch_clips, threshold) for c in conditions}
    blocks = _shard(n, batch_clips, info)
    start = time.perf_counter()
    have_truth = bool(blocks)  # a rank without clips has no say in whether truth exists
    done = 0
    for block in blocks:
        items = [dataset[i] for i in block]
        batch = collate([{k: item[k] for k in _MODEL_KEYS if k in item} for item in items])
        b, t = batch["frames"].shape[:2]
        frames = preprocess_frames(batch["frames"], cfg.visual.image_size).to(device)
        gts = [item["masks"] for item in items]  # [T, H_i, W_i]: each clip at its own resolution
        if cfg.num_classes > 1:
            missing = [item["uid"] for item in items if "semantic" not in item]
            if missing:
                raise TesoError(
                    f"{dataset.base.root}: the model has {cfg.num_classes} classes but clip(s) {missing} "
                    f"of {dataset.base.subset}/{dataset.base.split} have no semantic masks"
                )
        silent = [
            silent_audible_masks(dataset.records[i].clip_dir, t, tuple(gt.shape[-2:]))
            for i, gt in zip(block, gts)
        ]
        have_truth = have_truth and all(s is not None for s in silent)
        text = batch.get("text")
        count = batch.get("text_count")
        if text is not None:
            text, count = text.to(device), count.to(device)
        visual = model.encode_visual(frames) if reuse_visual else None
        for cond in conditions:
            waves = batch["audio"].reshape(b, -1)  # [B, T*16000]: the whole clip, perturbed at once
            logmel = torch.stack(
                [
                    per_second_examples(perturb(w, cond, seed * 1_000_003 + i), SAMPLE_RATE, t)
                    for w, i in zip(waves, block)
                ]
            ).to(device)
            vis = visual if reuse_visual else model.encode_visual(frames)
            out = model.decode(vis, logmel, text, count)
            m = meters[cond]
            for j, (item, gt) in enumerate(zip(items, gts)):
                fg, classes = clip_sounding_maps(out, j, t, tuple(gt.shape[-2:]), cfg.num_classes, threshold)
                if classes is not None:
                    m.semantic.update(classes, item["semantic"])
                m.binary.update(fg, gt.float(), clip_ids=[item["uid"]] * fg.shape[0])
                m.foreground.update(fg)
                sounding = gt.reshape(gt.shape[0], -1).bool().any(1)  # [T]: the frame has a source
                m.empty_gt_frames += int((~sounding).sum())
                if have_truth:
                    m.preference.update(fg, silent[j])
                    if sounding.any():
                        m.preference_sounding.update(fg[sounding], silent[j][sounding])
            if out.prompt_keep is not None:
                m.unprompted += (~out.prompt_keep.any(-1)).reshape(-1).tolist()
            if text is not None and count is not None:
                valid = slot_count(count, cfg.text.num_cues).sum().item()
                if valid:
                    m.cues_kept.append(out.cue_keep.sum().item() / valid)
                real = slot_count(count, cfg.text.num_cues).cpu()
                keep = out.cue_keep.cpu()
                for j, i in enumerate(block):
                    m.kept[dataset.records[i].uid] = [
                        keep[j, f, : int(real[j, f])].tolist() for f in range(keep.shape[1])
                    ]
        done += len(block)
        if progress is not None:
            progress(done, n)

    gathered = all_gather_objects((meters, have_truth, bool(blocks)), info)
    merged = gathered[0][0]
    for other, _, _ in gathered[1:]:
        for c in conditions:
            merged[c].merge(other[c])
    truth_everywhere = all(truth for _, truth, had in gathered if had)
    return _summarise(merged, conditions, truth_everywhere, time.perf_counter() - start)


def _all_masked_share(kept: dict[str, list[list[bool]]]) -> float | None:
    """Share of the frames with at least one real cue whose cues the dynamic mask dropped all."""
    frames = [f for clip in kept.values() for f in clip if f]
    return sum(1 for f in frames if not any(f)) / len(frames) if frames else None


def _summarise(
    meters: dict[str, ConditionMeters], conditions: Sequence[str], have_truth: bool, seconds: float
) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        m = meters[cond]
        b = m.binary.compute()
        row: dict[str, Any] = {
            "miou": b["miou"],
            "fscore": b["fscore"],
            "miou_nonempty": b["miou_nonempty"],
            "fg_rate": m.foreground.compute()["foreground_rate"],
            "pref_rate": m.preference.compute()["preference_rate"] if have_truth else None,
            "pref_rate_sounding": (
                m.preference_sounding.compute()["preference_rate"]
                if have_truth and m.preference_sounding.frames
                else None
            ),
            "empty_gt_share": m.empty_gt_frames / b["num_frames"] if b["num_frames"] else None,
            "cues_kept": (sum(m.cues_kept) / len(m.cues_kept)) if m.cues_kept else None,
            "all_cues_masked": _all_masked_share(m.kept),
            "unprompted": (sum(m.unprompted) / len(m.unprompted)) if m.unprompted else None,
            "kept_by_frame": m.kept or None,
            "per_clip": m.binary.per_clip(),
            "by_mode": b["by_mode"],
            "num_frames": b["num_frames"],
        }
        if m.semantic is not None:
            s = m.semantic.compute()
            row["semantic_miou"], row["semantic_fscore"] = s["miou"], s["fscore"]
        results[cond] = row
    normal = results["normal"]
    for cond, row in results.items():
        row["delta_m"] = relative_drop(normal["miou"], row["miou"]) if cond != "normal" else 0.0
        row["delta_f"] = relative_drop(normal["fscore"], row["fscore"]) if cond != "normal" else 0.0
    return {"conditions": results, "seconds": round(seconds, 3)}


def format_table(results: dict[str, Any], title: str = "") -> str:
    """A plain-text table of one model's results (percentages)."""

    def pct(v: Any) -> str:
        return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"

    lines = [title] if title else []
    lines.append(f"{'audio':<8} {'mIoU':>6} {'F':>6} {'Δm':>6} {'Δf':>6} {'mIoU≠∅':>6} {'fg':>6} {'pref':>6}")
    for cond, r in results["conditions"].items():
        lines.append(
            f"{cond:<8} {pct(r['miou'])} {pct(r['fscore'])} {pct(r['delta_m'])} {pct(r['delta_f'])} "
            f"{pct(r['miou_nonempty'])} {pct(r['fg_rate'])} {pct(r['pref_rate'])}"
        )
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    subset: str | None = None,
    split: str = "test",
    audio: str | Sequence[str] = "normal,mute,wgn10,wgn40",
    cues: str | None = None,
    text_encoder: str | None = None,
    threshold: float = 0.5,
    batch_clips: int = 4,
    reuse_visual: bool = True,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    max_clips: int | None = None,
    allow_cue_mismatch: bool = False,
    foundations: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Load a checkpoint (its config rebuilds the model), evaluate it, write the results as JSON.

    Data settings the run was trained with (subset, cue store, text encoder) are the defaults, read
    from the checkpoint; the result records every setting that changes the numbers, the software,
    CPU and numerics that produced them and the dataset's identity (``environment``, ``dataset``).
    ``foundations``: folders to look in first for the checkpoint's frozen foundations (the data root
    and the user cache are searched too: :mod:`teso.model.foundation_sources`).
    """
    from tqdm import tqdm

    from teso.data.identity import dataset_identity
    from teso.engine.data import open_text_features
    from teso.model import load_checkpoint
    from teso.utils.environment import environment_record
    from teso.utils.files import atomic_write_json

    conditions = parse_conditions(audio)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    detect_layout(data)  # a wrong DATA is named as such, before any model or feature file is looked for
    identity = dataset_identity(data)  # before the long loop: an unreadable file stops it at once
    model, extra = load_checkpoint(checkpoint, map_location=dev, foundations=foundations, data_root=data)
    trained = (extra.get("experiment") or {}).get("data", {})
    subset = subset or trained.get("subset")
    if subset is None:
        raise TesoError(
            f"{checkpoint}: the checkpoint does not say which subset it was trained on; pass --subset"
        )
    cues = cues or trained.get("cues", "default")
    text_encoder = text_encoder or trained.get("text_encoder", "minilm")
    cfg = model.config
    text = open_text_features(str(data), cues, text_encoder, cfg.text.dim) if cfg.ablation.text else None
    cue_swap = None
    if text is not None:
        from teso.cues.provenance import check_cue_provenance

        text.check_slots(cfg.text.num_cues)
        # Other cues than the training run's only on purpose (`allow_cue_mismatch`: a cue swap).
        cue_swap = check_cue_provenance(
            checkpoint, extra, text.provenance(), allow=allow_cue_mismatch, where=f"cue store {cues!r}"
        )
    ds = ClipDataset(str(data), subset, split, image_size=cfg.visual.image_size, text=text, audio="waveform")
    bar = tqdm(
        total=len(ds) if max_clips is None else min(max_clips, len(ds)),
        desc="eval",
        disable=not progress,
        leave=False,
    )

    def tick(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    results = evaluate(
        model,
        ds,
        conditions,
        batch_clips=batch_clips,
        threshold=threshold,
        reuse_visual=reuse_visual,
        progress=tick,
        max_clips=max_clips,
    )
    bar.close()
    results.update(
        checkpoint=str(checkpoint),
        data=str(data),
        subset=subset,
        split=split,
        cues=cues if text else None,
        text_encoder=text_encoder if text else None,
        threshold=threshold,
        batch_clips=batch_clips,
        resolution="each clip's own ground-truth size",
        reuse_visual=reuse_visual,
        noise=condition_help(),
        foundations=extra.get("foundations"),  # `teso pretrain` records: scores, steps, dataset hash
        cue_swap=cue_swap or None,  # what differs from the training cues, when allowed
        environment=environment_record(),
        dataset=identity,
    )
    path = Path(out) if out else Path(checkpoint).with_suffix(f".eval-{subset}-{split}.json")
    atomic_write_json(path, results)
    results["json"] = str(path)
    return results
