"""Foundation pre-training on SynthAVS (SPEC §11): the roles ADE20K and YouTube-8M play in the paper.

Once per SynthAVS dataset, two small foundations are trained on the **train** split and scored on
``eval_split`` (default test; nothing is selected on it — the step counts are fixed):

- **visual**: the ``tiny`` variant's Mask2Former (``teso.model.foundation.mask2former_config``, one
  class per SynthAVS category, ``id2label`` from ``synth.json``) segments *every visible object by
  category*. Targets per frame: one mask per visible category (the union of its instances in
  ``instances/{t}.png``), trained with Hugging Face's own Mask2Former loss (class 2, BCE 5, Dice 5,
  no-object 0.1, deep supervision) on the variant's 1,024 points a mask. Score: **all-object mIoU**,
  the dataset-level (pooled) IoU of each category averaged over the categories that occur (ground
  truth or prediction) in the split, on the labels of :func:`semantic_labels` (object where the
  summed category scores exceed 0.5, then the best category).
  Saved with ``save_pretrained(DIR/visual)``: ``model.visual.pretrained=DIR/visual`` loads it by the
  path the hub model takes (its class head is then replaced by TeSO's N_C + 1 head).
- **audio**: ``TinyAudioCNN`` (the ``cnn`` audio encoder) + ``GELU → Linear`` tagging head, multi-label
  BCE on the audible categories sounding in each second (union over the visible objects whose
  ``sounding[t]`` is set, from ``truth.json``). Input: the VGGish log-mel example of the second, the
  very tensor TeSO feeds its audio encoder. Score: **tagging mAP**, the mean average precision over
  the categories with at least one positive second in the split. Saved as ``DIR/audio.safetensors``
  (``TinyAudioCNN`` key names): ``model.audio.weights=DIR/audio.safetensors`` loads it strictly.

Cache: ``DIR = ROOT/foundations/{dataset hash[:16]}-{settings hash[:12]}`` (or ``out``). The dataset
hash is sha256 over the bytes of ``synth.json`` and ``metadata.csv``: the generator is deterministic,
so its parameters (in ``synth.json``) and the clip list fix every file — hashing them is instant where
hashing the frames and audio would not be. ``DIR/foundation.json`` (written last) records the dataset
hash, the settings, steps, scores, loss curves and wall times; a second call with the same settings
returns it without training. Interrupted runs resume: every ``checkpoint_every`` steps the stage's
model, optimiser, RNG and loss-curve state go to ``DIR/state/{stage}.pt`` (atomic writes); batches and
flips are pure functions of (seed, step), so a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from teso.data.avsbench import SPLITS, AVSBenchDataset, list_clips
from teso.engine.sampling import epoch_batches
from teso.errors import TesoError
from teso.metrics.aggregate import SemanticMeter
from teso.model.audio_encoder import TinyAudioCNN, save_cnn_weights
from teso.model.config import TeSOConfig
from teso.model.foundation import mask2former_config
from teso.model.foundation_sources import AUDIO_FILE, FORMAT_NAME, RECORD_NAME, VISUAL_DIR, read_record
from teso.model.preprocess import preprocess_frames
from teso.model.variants import get_variant
from teso.utils.files import atomic_write, atomic_write_json

FORMAT_VERSION = 1
STAGES = ("visual", "audio")
LOG_EVERY = 25  # steps per point of the recorded loss curves
EVAL_BATCH = 32  # frames (visual) per evaluation forward pass
OBJECT_THRESHOLD = 0.5  # a pixel is an object where its summed category scores exceed this

# (stage, steps done, loss of that step) after every step; raising from it interrupts the run (tests).
StepCallback = Callable[[str, int, float], None]


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that changes the foundations' weights (hashed into the cache directory name)."""

    steps_visual: int = 600  # visual optimiser steps (measured: ~140 s at 128 px, ~110 s at 96 px, 2 cores)
    steps_audio: int = 600  # audio optimiser steps (~32 s: 19 steps/s whatever the image size)
    image_size: int = 128  # input side S of the visual foundation: use the TeSO run's image size
    seed: int = 0  # weights, batch order, flips and the loss's point sampling
    variant: str = "tiny"  # whose visual / audio architecture is pre-trained
    batch_frames: int = 8  # frames per visual step (FIELD-NOTES: batch 8)
    # One-second log-mel examples per audio step, and its lr. Measured on a 400-clip v1m tree: 600 steps
    # of 32 at 3e-3 give test mAP 0.85 in half the CPU time of 64 at 1e-3 (mAP 0.73).
    batch_seconds: int = 32
    # AdamW. FIELD-NOTES measured 3e-4 for a binary task; by category the class head learns too slowly
    # there: after 600 steps at 96 px, test pixel accuracy of the category on objects 0.36 at 3e-4,
    # 0.45 at 1e-3, 0.46 at 2e-3 (the masks themselves reach foreground IoU 0.77-0.80 at all three).
    lr_visual: float = 1e-3
    lr_audio: float = 3e-3  # AdamW for the small CNN
    weight_decay: float = 0.05  # as the TeSO runs (teso/configs/synth.yaml)
    grad_clip: float = 1.0  # FIELD-NOTES: from-scratch training needs a looser clip than 0.01
    warmup_steps: int = 20  # linear warm-up, then poly (power 0.9) decay to 0 at the last step
    eval_split: str = "test"  # where the scores are measured (nothing is selected on them)

    def validate(self) -> None:
        for name in ("steps_visual", "steps_audio", "batch_frames", "batch_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TesoError(f"pretrain {name}: expected a positive integer, got {value!r}")
        if self.image_size <= 0 or self.image_size % 32:
            raise TesoError(f"pretrain image_size: expected a positive multiple of 32, got {self.image_size}")
        if self.eval_split not in SPLITS or self.eval_split == "train":
            raise TesoError(f"pretrain eval_split: expected val or test, got {self.eval_split!r}")
        if min(self.lr_visual, self.lr_audio) <= 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise TesoError("pretrain lr_visual / lr_audio / grad_clip: expected > 0, warmup_steps >= 0")

    def model_config(self) -> TeSOConfig:
        """The variant whose foundations these are, at ``image_size``."""
        return get_variant(self.variant, image_size=self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """sha256 over the settings, the architectures they resolve to and the format version."""
        config = self.model_config()
        visual = dict(config.visual.__dict__, pretrained=None)
        audio = dict(config.audio.__dict__, weights=None)
        blob = {
            "format_version": FORMAT_VERSION,
            "settings": self.to_dict(),
            "visual": visual,
            "audio": audio,
            "loss": config.loss.__dict__,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The dataset


def read_synth_json(root: str | os.PathLike) -> dict[str, Any]:
    """``ROOT/synth.json``; a folder without one is not a SynthAVS tree (TesoError naming it)."""
    path = Path(root) / "synth.json"
    if not path.is_file():
        raise TesoError(
            f"{root}: not a SynthAVS tree (no synth.json); make one with `teso data synth --out {root}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = data["categories"]
        _ = [(c["name"], int(c["index"]), bool(c["audible"])) for c in categories]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TesoError(
            f"{path}: not a SynthAVS synth.json (categories with name/index/audible) ({exc})"
        ) from exc
    if sorted(int(c["index"]) for c in categories) != list(range(1, len(categories) + 1)):
        raise TesoError(f"{path}: category indices must be 1..{len(categories)} (0 is the background)")
    return data


def dataset_hash(root: str | os.PathLike) -> str:
    """sha256 over ``synth.json`` and ``metadata.csv`` (see the module docstring for why these two)."""
    root = Path(root)
    read_synth_json(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise TesoError(f"{meta}: missing (written last by `teso data synth`: was the generation finished?)")
    h = hashlib.sha256()
    for path in (root / "synth.json", meta):
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@dataclass
class FoundationData:
    """One split of a SynthAVS tree, held in memory, for both pre-training tasks.

    ``categories``: the K_V category names in index order (pixel value c = ``categories[c-1]``);
    ``tags``: the K_A audible ones (tag column k = ``tags[k]``).
    ``frames`` uint8 [N, S, S, 3] (resized exactly as TeSO's data pipeline does); ``objects`` uint8
    [N, H, W] category id per pixel at the dataset's resolution (0 = background); ``audio`` float
    [N, 1, 96, 64] the VGGish log-mel example of each second; ``sounding`` bool [N, K_A]; ``mixed``
    int [N] the number of sources in each second's audio, on screen or off (v2's off-screen source).
    ``families``: family name -> its member tags (v2; empty for v1). One row a frame = one row a
    second (1 fps).
    """

    categories: list[str]
    tags: list[str]
    frames: torch.Tensor
    objects: torch.Tensor
    audio: torch.Tensor
    sounding: torch.Tensor
    mixed: torch.Tensor
    families: dict[str, list[str]]

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _clip_truth(
    clip_dir: Path, seconds: int, category_index: dict[str, int], tag_index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(objects [T, H, W] uint8 category ids, sounding [T, K_A] bool, mixed [T] int)`` of one clip
    from its ``truth.json`` and ``instances/{t}.png``; ``mixed``: sources heard per second (on-screen
    objects sounding plus v2's off-screen source)."""
    truth_path = clip_dir / "truth.json"
    if not truth_path.is_file():
        raise TesoError(f"{truth_path}: missing (SynthAVS writes every visible object's truth there)")
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        objects = truth["objects"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TesoError(f"{truth_path}: not a SynthAVS truth.json ({exc})") from exc
    lut = np.zeros(256, dtype=np.uint8)  # instance id -> category id
    sounding = np.zeros((seconds, len(tag_index)), dtype=bool)
    mixed = np.zeros(seconds, dtype=np.int64)
    offscreen = truth.get("offscreen")
    if offscreen:
        mixed += np.asarray(offscreen["sounding"], dtype=np.int64)
    for obj in objects:
        category = obj["category"]
        if category not in category_index:
            raise TesoError(f"{truth_path}: category {category!r} is not in synth.json")
        lut[int(obj["instance_id"])] = category_index[category]
        if category in tag_index:
            flags = obj["sounding"]
            if len(flags) != seconds:
                raise TesoError(f"{truth_path}: {category} has {len(flags)} sounding flags for {seconds} s")
            sounding[np.asarray(flags, dtype=bool), tag_index[category]] = True
            mixed += np.asarray(flags, dtype=np.int64)
    maps = []
    for t in range(seconds):
        path = clip_dir / "instances" / f"{t}.png"
        if not path.is_file():
            raise TesoError(f"{path}: missing instance mask of frame {t}")
        with Image.open(path) as img:
            maps.append(lut[np.asarray(img, dtype=np.uint8)])
    return np.stack(maps), sounding, mixed


class _TruthClips(Dataset):
    """The clips of one subset and split: ``AVSBenchDataset`` items joined with ``_clip_truth``."""

    def __init__(self, base: AVSBenchDataset, category_index: dict[str, int], tag_index: dict[str, int]):
        self.base, self.category_index, self.tag_index = base, category_index, tag_index

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        item, record = self.base[index], self.base.records[index]
        obj, snd, mixed = _clip_truth(record.clip_dir, record.num_frames, self.category_index, self.tag_index)
        return (
            item["frames"],
            item["audio"],
            torch.from_numpy(obj),
            torch.from_numpy(snd),
            torch.from_numpy(mixed),
        )


def load_foundation_data(
    root: str | os.PathLike, split: str, image_size: int, workers: int = 2
) -> FoundationData:
    """Every clip of ``split`` (all subsets in the tree) through ``AVSBenchDataset`` — the same frame
    resizing and log-mel front end as TeSO's training — plus the per-object truth. ``workers``
    DataLoader processes decode clips in parallel (0 = in this process); the order is the CSV's."""
    root = Path(root)
    synth = read_synth_json(root)
    cats = sorted(synth["categories"], key=lambda c: int(c["index"]))
    categories = [c["name"] for c in cats]
    tags = [c["name"] for c in cats if c["audible"]]
    category_index = {c["name"]: int(c["index"]) for c in cats}
    tag_index = {name: k for k, name in enumerate(tags)}
    subsets = sorted({r.label for r in list_clips(root, splits=[split])})
    if not subsets:
        raise TesoError(f"{root / 'metadata.csv'}: no clips in the {split} split")
    clips = ConcatDataset(
        [
            _TruthClips(
                AVSBenchDataset(root, s, split, audio="logmel", image_size=image_size),
                category_index,
                tag_index,
            )
            for s in subsets
        ]
    )
    loader = DataLoader(clips, batch_size=None, num_workers=workers if len(clips) > 1 else 0)
    frames, audio, objects, sounding, mixed = (list(parts) for parts in zip(*loader))
    families = {f: [m for m in members if m in tag_index] for f, members in synth.get("families", {}).items()}
    return FoundationData(
        categories=categories,
        tags=tags,
        frames=torch.cat(frames),
        objects=torch.cat(objects),
        audio=torch.cat(audio),
        sounding=torch.cat(sounding),
        mixed=torch.cat(mixed),
        families=families,
    )


# ----------------------------------------------------------------------------------------------
# Metrics


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AP of one class: ``Σ_k (R_k − R_{k−1}) · P_k`` over the distinct score thresholds, descending
    (tied scores form one threshold, as scikit-learn's ``average_precision_score``).

    ``scores`` [N] float, ``labels`` [N] bool. Raises TesoError when there is no positive.
    """
    scores = scores.detach().double().flatten().cpu()
    labels = labels.detach().bool().flatten().cpu()
    if scores.shape != labels.shape:
        raise TesoError(f"average_precision: {tuple(scores.shape)} scores for {tuple(labels.shape)} labels")
    positives = int(labels.sum())
    if positives == 0:
        raise TesoError("average_precision: no positive example (AP is undefined)")
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].double()
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / positives
    steps = recall - torch.cat([torch.zeros(1, dtype=recall.dtype), recall[:-1]])
    return float((steps * precision).sum())


def tagging_map(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float | None]]:
    """Macro AP: ``scores`` [N, K], ``labels`` [N, K] bool -> (mean AP over the classes with at least
    one positive, per-class AP with None for classes without a positive)."""
    if scores.dim() != 2 or scores.shape != labels.shape:
        raise TesoError(f"tagging_map: expected [N, K] scores and labels, got {tuple(scores.shape)}")
    per = [
        average_precision(scores[:, k], labels[:, k]) if bool(labels[:, k].any()) else None
        for k in range(scores.shape[1])
    ]
    defined = [ap for ap in per if ap is not None]
    if not defined:
        raise TesoError("tagging_map: no class has a positive example")
    return float(np.mean(defined)), per


def semantic_labels(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Per-pixel category ids from Mask2Former outputs: class logits [N, Q, K+1], mask logits
    [N, Q, h, w] -> [N, H, W] long (0 = background).

    Scores ``p_c = Σ_q softmax(class_q)[c]·sigmoid(mask_q)`` (masks resized bilinearly to ``size``
    first, as Mask2Former's post-processing does). A pixel is an object where ``Σ_c p_c`` exceeds
    ``OBJECT_THRESHOLD`` — TeSO's own rule for its binary M_pred — and then the category with the
    highest ``p_c``: whether there is an object and which one are separate decisions, so an object
    whose category is still uncertain (scores spread over similar classes) is not called background.
    """
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    probs = torch.einsum("nqc,nqhw->nchw", class_logits.softmax(-1)[..., :-1], masks)
    objects = probs.sum(1) > OBJECT_THRESHOLD
    return torch.where(objects, probs.argmax(1) + 1, torch.zeros_like(objects, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# Models and batches


class AudioTagger(nn.Module):
    """``TinyAudioCNN`` + tagging head: log-mel [N, 1, 96, 64] -> tag logits [N, K_A].

    The head is GELU → Linear so that the 128-d embedding TeSO receives is a hidden layer of the
    tagger rather than a linear map of its logits."""

    def __init__(self, channels: list[int], dim: int, num_tags: int) -> None:
        super().__init__()
        self.encoder = TinyAudioCNN(channels, dim)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(dim, num_tags))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(examples))


def _step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + STAGES.index(stage) * 100_003 + step)


def _batch_indices(n: int, batch: int, seed: int, stage: str, step: int) -> list[int]:
    """The items of ``step``: epochs of seeded permutations (``epoch_batches``), a pure function of
    its arguments so a resumed run draws exactly what the uninterrupted one did."""
    per_epoch = epoch_batches(n, batch, seed=seed * 7 + STAGES.index(stage), epoch=0)
    count = len(per_epoch)
    return epoch_batches(n, batch, seed=seed * 7 + STAGES.index(stage), epoch=step // count)[step % count]


def _visual_batch(
    data: FoundationData, index: list[int], flip: torch.Tensor, image_size: int, device: torch.device
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``pixel_values`` [B, 3, S, S], ``mask_labels`` B × [n_i, H, W] float, ``class_labels`` B × [n_i]
    long (HF class id = category id − 1); frames with ``flip`` set are mirrored left-right."""
    idx = torch.tensor(index)
    frames, objects = data.frames[idx], data.objects[idx]
    frames = torch.where(flip.view(-1, 1, 1, 1), frames.flip(2), frames)
    objects = torch.where(flip.view(-1, 1, 1), objects.flip(2), objects)
    pixels = preprocess_frames(frames, image_size).to(device)
    masks, classes = [], []
    for ids in objects.long():
        present = torch.unique(ids)
        present = present[present > 0]
        masks.append((ids.unsqueeze(0) == present.view(-1, 1, 1)).float().to(device))
        classes.append((present - 1).to(device))
    return pixels, masks, classes


def _poly_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - step / max(1, total)) ** 0.9


# ----------------------------------------------------------------------------------------------
# Training with resumable state


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _train_stage(
    stage: str,
    model: nn.Module,
    loss_of: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    settings: PretrainSettings,
    state_path: Path,
    settings_hash: str,
    checkpoint_every: int,
    device: torch.device,
    callback: StepCallback | None,
    progress: bool,
) -> dict[str, Any]:
    """AdamW + clip + warm-up/poly on ``loss_of(step)``, resuming from ``state_path`` when present.

    Returns ``steps``, ``wall_s`` (training time summed over resumptions), ``steps_per_s`` and
    ``loss_curve``: ``[step, mean loss of the LOG_EVERY steps ending there]`` pairs.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    step, elapsed, curve, pending = 0, 0.0, [], [0.0, 0]
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state.get("settings_hash") != settings_hash:
            raise TesoError(f"{state_path}: a {stage} pre-training state of other settings; remove it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], device)
        step, elapsed, curve, pending = state["step"], state["elapsed"], state["curve"], state["pending"]
    model.train()
    start = time.perf_counter() - elapsed
    bar = tqdm(total=steps, initial=step, desc=f"pretrain {stage}", disable=not progress, leave=False)
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = lr * _poly_factor(step, steps, settings.warmup_steps)
        loss = loss_of(step)
        if not torch.isfinite(loss):
            raise TesoError(f"pretrain {stage}: loss is {loss.item()} at step {step} (diverged)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        pending = [pending[0] + value, pending[1] + 1]
        if step % LOG_EVERY == 0 or step == steps:
            curve.append([step, pending[0] / pending[1]])
            pending = [0.0, 0]
        if step % checkpoint_every == 0 or step == steps:
            snapshot = {
                "settings_hash": settings_hash,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(device),
                "step": step,
                "elapsed": time.perf_counter() - start,
                "curve": curve,
                "pending": pending,
            }
            atomic_write(state_path, lambda tmp, snap=snapshot: torch.save(snap, tmp))
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
        if callback is not None:
            callback(stage, step, value)
    bar.close()
    wall = time.perf_counter() - start
    return {
        "steps": steps,
        "wall_s": round(wall, 2),
        "steps_per_s": round(steps / wall, 2) if wall > 0 else None,
        "loss_curve": [[s, round(v, 5)] for s, v in curve],
    }


@torch.no_grad()
def evaluate_visual(m2f: nn.Module, data: FoundationData, image_size: int, device: torch.device) -> dict:
    """All-object mIoU of a Mask2Former over ``data`` (see the module docstring), per-category IoU and
    the class-agnostic ``foreground_iou`` (every object vs background: are the objects found at all)."""
    m2f.eval()
    num = len(data.categories)
    meter = SemanticMeter(num_classes=num + 1, ignore_index=None)
    size = tuple(data.objects.shape[1:])
    fg_inter = fg_union = 0
    for start in range(0, len(data), EVAL_BATCH):
        frames = data.frames[start : start + EVAL_BATCH]
        out = m2f(pixel_values=preprocess_frames(frames, image_size).to(device))
        labels = semantic_labels(out.class_queries_logits, out.masks_queries_logits, size).cpu()
        truth = data.objects[start : start + EVAL_BATCH].long()
        meter.update(labels, truth)
        fg_inter += int(((labels > 0) & (truth > 0)).sum())
        fg_union += int(((labels > 0) | (truth > 0)).sum())
    res = meter.compute()
    pooled = res["per_class_iou_pooled"][1:]
    occurred = [n > 0 for n in res["class_frames"][1:]]
    ious = [v for v, o in zip(pooled, occurred) if o]
    return {
        "miou": float(np.mean(ious)) if ious else float("nan"),
        "per_category_iou": {
            c: (round(v, 5) if o else None) for c, v, o in zip(data.categories, pooled, occurred)
        },
        "foreground_iou": fg_inter / fg_union if fg_union else float("nan"),
        "eval_frames": len(data),
    }


@torch.no_grad()
def evaluate_audio(tagger: AudioTagger, data: FoundationData, device: torch.device) -> dict:
    """Tagging mAP of ``tagger`` over every second of ``data``."""
    tagger.eval()
    scores = torch.cat(
        [tagger(data.audio[s : s + 256].to(device)).sigmoid().cpu() for s in range(0, len(data), 256)]
    )
    mean_ap, per = tagging_map(scores, data.sounding)
    out = {
        "map": mean_ap,
        "per_category_ap": {t: (None if ap is None else round(ap, 5)) for t, ap in zip(data.tags, per)},
        "eval_seconds": len(data),
        "positive_rate": round(float(data.sounding.float().mean()), 5),
    }
    if data.families:
        out.update(family_scores(scores, data))
    return out


def family_scores(scores: torch.Tensor, data: FoundationData) -> dict:
    """SynthAVS v2's premise P1 (docs/synthavs.md), from the tagger's scores ``[N, K_A]``: mAP of the
    *category* tags and of the *family* tags (a family's score: its best member's; positive when a
    member sounds on screen), over every second and over the multi-source seconds (``mixed`` ≥ 2)."""
    index = {t: k for k, t in enumerate(data.tags)}
    cols = [[index[m] for m in members] for members in data.families.values()]
    fam_scores = torch.stack([scores[:, c].max(1).values for c in cols], 1)
    fam_labels = torch.stack([data.sounding[:, c].any(1) for c in cols], 1)
    multi = data.mixed >= 2
    out: dict[str, Any] = {
        "family_map": tagging_map(fam_scores, fam_labels)[0],
        "multi_source_seconds": int(multi.sum()),
    }
    if bool(multi.any()) and bool(data.sounding[multi].any()):
        out["multi_source_map"] = tagging_map(scores[multi], data.sounding[multi])[0]
        out["multi_source_family_map"] = tagging_map(fam_scores[multi], fam_labels[multi])[0]
    return out


# ----------------------------------------------------------------------------------------------
# The entry point


def default_out(root: str | os.PathLike, settings: PretrainSettings) -> Path:
    """``ROOT/foundations/{dataset hash[:16]}-{settings hash[:12]}``."""
    return Path(root) / "foundations" / f"{dataset_hash(root)[:16]}-{settings.digest()[:12]}"


def overrides_for(out: str | os.PathLike) -> list[str]:
    """The experiment overrides that put TeSO (or a baseline) on the foundations in ``out``."""
    out = Path(out)
    return [
        f"model.visual.pretrained={out / VISUAL_DIR}",
        f"model.audio.weights={out / AUDIO_FILE}",
        "model.freeze_foundation=true",
    ]


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _save_visual(m2f: nn.Module, target: Path) -> None:
    """``save_pretrained`` into a temporary folder beside ``target``, then rename it into place."""
    from transformers.utils import logging as hf_logging

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    bars_were_off = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()  # HF's "Writing model shards" bar: our own progress says enough
    try:
        m2f.save_pretrained(str(tmp))
        os.chmod(tmp, 0o755)  # mkdtemp (and HF's writer) make private files; results are meant to be shared
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        if target.exists():
            shutil.rmtree(target)  # a previous attempt's copy: same settings, same seed, same weights
        os.replace(tmp, target)
    finally:
        if not bars_were_off:
            hf_logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp)


def _run_visual(ctx: dict[str, Any]) -> dict[str, Any]:
    from transformers import Mask2FormerForUniversalSegmentation

    settings: PretrainSettings = ctx["settings"]
    train: FoundationData = ctx["train"]
    device = ctx["device"]
    config = settings.model_config()
    hf = mask2former_config(config.visual, num_classes=len(train.categories))
    hf.id2label = dict(enumerate(train.categories))
    hf.label2id = {name: i for i, name in enumerate(train.categories)}
    hf.train_num_points = config.loss.train_num_points  # the variant's (tiny: 1,024), not HF's 12,544
    torch.manual_seed(settings.seed)
    m2f = Mask2FormerForUniversalSegmentation(hf).to(device)

    def loss_of(step: int) -> torch.Tensor:
        index = _batch_indices(len(train), settings.batch_frames, settings.seed, "visual", step)
        flip = torch.rand(len(index), generator=_step_generator(settings.seed, "visual", step)) < 0.5
        pixels, masks, classes = _visual_batch(train, index, flip, settings.image_size, device)
        return m2f(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss

    result = _train_stage(
        "visual", m2f, loss_of, steps=settings.steps_visual, lr=settings.lr_visual, **ctx["common"]
    )
    result.update(evaluate_visual(m2f, ctx["eval"], settings.image_size, device))
    result.update(
        path=VISUAL_DIR, image_size=settings.image_size, categories=train.categories, train_frames=len(train)
    )
    _save_visual(m2f.cpu(), ctx["out"] / VISUAL_DIR)
    return result


def _run_audio(ctx: dict[str, Any]) -> dict[str, Any]:
    settings: PretrainSettings = ctx["settings"]
    train: FoundationData = ctx["train"]
    device = ctx["device"]
    audio = settings.model_config().audio
    torch.manual_seed(settings.seed + 1)
    tagger = AudioTagger(list(audio.cnn_channels), audio.dim, len(train.tags)).to(device)
    bce = nn.BCEWithLogitsLoss()

    def loss_of(step: int) -> torch.Tensor:
        index = torch.tensor(_batch_indices(len(train), settings.batch_seconds, settings.seed, "audio", step))
        return bce(tagger(train.audio[index].to(device)), train.sounding[index].float().to(device))

    result = _train_stage(
        "audio", tagger, loss_of, steps=settings.steps_audio, lr=settings.lr_audio, **ctx["common"]
    )
    result.update(evaluate_audio(tagger, ctx["eval"], device))
    result.update(
        path=AUDIO_FILE, tags=train.tags, train_seconds=len(train), cnn_channels=list(audio.cnn_channels)
    )
    save_cnn_weights(tagger.encoder.cpu(), ctx["out"] / AUDIO_FILE, extra={"tags": train.tags})
    return result


def pretrain_foundations(
    root: str | os.PathLike,
    *,
    steps_visual: int = 600,
    steps_audio: int = 600,
    image_size: int = 128,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    eval_split: str = "test",
    checkpoint_every: int = 50,
    device: str = "auto",
    workers: int = 2,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> dict[str, Any]:
    """Pre-train (or find cached) the visual and audio foundations of the SynthAVS tree ``root``.

    ``workers``: DataLoader processes decoding the clips (once, into memory). ``callback(stage,
    step, loss)`` runs after every step (and after that step's state was saved, if it was).

    Returns the ``foundation.json`` record plus ``dir`` (the foundation directory), ``cached`` (True
    when nothing was trained in this call) and ``overrides`` (the three experiment overrides that
    use them, frozen). Stages already finished by an interrupted call are not repeated; a stage in
    progress resumes from its last state (every ``checkpoint_every`` steps). The caller's torch RNG
    is left as it was.
    """
    settings = PretrainSettings(
        steps_visual=steps_visual,
        steps_audio=steps_audio,
        image_size=image_size,
        seed=seed,
        eval_split=eval_split,
    )
    settings.validate()
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise TesoError(f"pretrain checkpoint_every: expected a positive integer, got {checkpoint_every!r}")
    root = Path(root)
    data_hash = dataset_hash(root)
    settings_hash = settings.digest()
    out = Path(out) if out is not None else root / "foundations" / f"{data_hash[:16]}-{settings_hash[:12]}"
    record_path = out / RECORD_NAME
    record = read_record(record_path)
    if record is not None:
        if record["dataset"]["hash"] != data_hash or record["settings_hash"] != settings_hash:
            raise TesoError(
                f"{out}: holds foundations of another dataset or other settings ({record_path}); "
                "choose another --out or remove it"
            )
        return dict(
            record, dir=str(out), cached=True, overrides=overrides_for(out), registered=_register(out)
        )

    state_dir = out / "state"
    marker = state_dir / "settings.json"  # which run the partial states belong to
    if marker.is_file():
        begun = json.loads(marker.read_text(encoding="utf-8"))
        if (begun.get("settings_hash"), begun.get("dataset_hash")) != (settings_hash, data_hash):
            raise TesoError(
                f"{out}: holds an unfinished pre-training of another dataset or other settings ({marker}); "
                "choose another --out or remove it"
            )
    else:
        atomic_write_json(marker, {"settings_hash": settings_hash, "dataset_hash": data_hash})
    dev = _device(device)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        todo = [s for s in STAGES if not (state_dir / f"{s}.done.json").is_file()]
        data: dict[str, FoundationData] = {}
        if todo:
            data["train"] = load_foundation_data(root, "train", image_size, workers)
            data["eval"] = load_foundation_data(root, eval_split, image_size, workers)
        load_s = time.perf_counter() - t0
        for stage in STAGES:
            done = state_dir / f"{stage}.done.json"
            if done.is_file():
                results[stage] = json.loads(done.read_text(encoding="utf-8"))
                continue
            ctx = {
                "settings": settings,
                "train": data["train"],
                "eval": data["eval"],
                "device": dev,
                "out": out,
                "common": {
                    "settings": settings,
                    "state_path": state_dir / f"{stage}.pt",
                    "settings_hash": settings_hash,
                    "checkpoint_every": checkpoint_every,
                    "device": dev,
                    "callback": callback,
                    "progress": progress,
                },
            }
            results[stage] = _run_visual(ctx) if stage == "visual" else _run_audio(ctx)
            atomic_write_json(done, results[stage])
            (state_dir / f"{stage}.pt").unlink(missing_ok=True)  # the weights now live in their artifact
    import transformers

    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dataset": {"root": str(root), "hash": data_hash, "hashed": ["synth.json", "metadata.csv"]},
        "settings": settings.to_dict(),
        "settings_hash": settings_hash,
        "seed": seed,
        "image_size": image_size,
        "steps": {"visual": steps_visual, "audio": steps_audio},
        "scores": {"all_object_miou": results["visual"]["miou"], "tagging_map": results["audio"]["map"]},
        "eval_split": eval_split,
        "visual": results["visual"],
        "audio": results["audio"],
        "wall_s": round(results["visual"]["wall_s"] + results["audio"]["wall_s"], 2),
        "data_load_s": round(load_s, 2),
        "device": str(dev),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
    atomic_write_json(record_path, record)
    shutil.rmtree(state_dir)
    return dict(record, dir=str(out), cached=False, overrides=overrides_for(out), registered=_register(out))


def _register(out: Path) -> dict[str, str] | None:
    """Copy both foundations into the user cache under their file hash, so that checkpoints built on
    them load from any folder (:mod:`teso.model.foundation_sources`). A cache that cannot be written
    is reported and skipped: the foundations in ``out`` are complete either way."""
    import sys

    from teso.model.foundation_sources import register

    try:
        return {
            "visual": str(register("visual", out / VISUAL_DIR)),
            "audio": str(register("audio", out / AUDIO_FILE)),
        }
    except OSError as exc:
        print(
            f"teso pretrain: warning: could not register the foundations in the user cache ({exc})",
            file=sys.stderr,
        )
        return None


# ----------------------------------------------------------------------------------------------
# Provenance for checkpoints built on these foundations
