"""``teso bench``: speed of training, inference, audio-control evaluation and the metric code.

Every figure is a ratio against a reference measured in the same run on the same machine (timings
alone depend on the machine and its load); random weights, so nothing is downloaded.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from teso.model import TeSOTargets, build_teso, get_variant
from teso.model.preprocess import preprocess_frames


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _inputs(cfg, clips: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = cfg.visual.image_size
    pix = torch.randint(0, 256, (clips, frames, s, s, 3), dtype=torch.uint8, generator=g)
    masks = torch.zeros(clips, frames, s, s, dtype=torch.long)
    masks[..., s // 4 : s // 2, s // 4 : s // 2] = 1
    return {
        "frames": preprocess_frames(pix, s),
        "audio": torch.randn(clips, frames, 1, 96, 64, generator=g),
        "text": torch.randn(clips, frames, cfg.text.num_cues, cfg.text.dim, generator=g),
        "count": torch.full((clips, frames), 2, dtype=torch.long),
        "masks": masks,
    }


def bench_model(variant: str, clips: int, frames: int, repeats: int) -> dict[str, Any]:
    """Training steps/s and inference frames/s of one variant (random weights)."""
    cfg = get_variant(variant)
    cfg.allow_random_frozen = True  # the paper variant's frozen parts stay random: nothing is downloaded
    model = build_teso(cfg)
    x = _inputs(cfg, clips, frames)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        model.train()
        out = model(x["frames"], x["audio"], x["text"], x["count"], TeSOTargets(masks=x["masks"]))
        opt.zero_grad()
        out.losses["loss"].backward()
        opt.step()

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        model(x["frames"], x["audio"], x["text"], x["count"])

    step()  # warm-up: allocator and kernel selection are not what we measure
    infer()
    t_step = _best(step, repeats)
    t_inf = _best(infer, repeats)
    n_img = clips * frames
    return {
        "variant": variant,
        "image_size": cfg.visual.image_size,
        "clips_x_frames": f"{clips}x{frames}",
        "train_steps_per_s": 1 / t_step,
        "train_images_per_s": n_img / t_step,
        "infer_frames_per_s": n_img / t_inf,
    }


def bench_visual_reuse(
    clips: int = 4, frames: int = 5, conditions: int = 4, repeats: int = 2
) -> dict[str, Any]:
    """Audio-control evaluation of ``tiny``: visual features once per clip vs once per condition."""
    cfg = get_variant("tiny")
    model = build_teso(cfg).eval()
    x = _inputs(cfg, clips, frames)
    audios = [torch.randn_like(x["audio"]) for _ in range(conditions)]

    @torch.no_grad()
    def reuse() -> None:
        vis = model.encode_visual(x["frames"])
        for a in audios:
            model.decode(vis, a, x["text"], x["count"]).probs_at((224, 224))

    @torch.no_grad()
    def recompute() -> None:
        for a in audios:
            model.decode(model.encode_visual(x["frames"]), a, x["text"], x["count"]).probs_at((224, 224))

    reuse()
    t_reuse, t_re = _best(reuse, repeats), _best(recompute, repeats)
    return {
        "conditions": conditions,
        "clips": clips,
        "reuse_s": t_reuse,
        "recompute_s": t_re,
        "speedup": t_re / t_reuse,
    }


def bench_metrics(frames: int = 40, size: int = 224) -> dict[str, Any]:
    """Vectorised AVSBench mIoU + F against the frame-and-threshold loop of the reference."""
    from teso.metrics import avsbench_fscore, avsbench_miou
    from teso.metrics.reference import loop_fscore, loop_miou

    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(frames, size, size, generator=g) > 0.7).float()
    gt[::10] = 0
    pred = torch.randn(frames, size, size, generator=g) * 1.5 + gt * 1.2 - 0.3
    vec = _best(lambda: (avsbench_miou(pred, gt), avsbench_fscore(pred, gt)), 3)
    loop = _best(lambda: (loop_miou(pred, gt), loop_fscore(pred, gt)), 1)
    diff = abs(avsbench_fscore(pred, gt) - loop_fscore(pred, gt))
    return {
        "frames": frames,
        "size": size,
        "vectorised_s": vec,
        "loop_s": loop,
        "speedup": loop / vec,
        "max_abs_diff": diff,
    }


def run_bench(what: list[str], repeats: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if "tiny" in what:
        out["tiny"] = bench_model("tiny", clips=2, frames=5, repeats=repeats)
    if "swin-base-ade" in what:
        out["swin-base-ade"] = bench_model("swin-base-ade", clips=1, frames=2, repeats=1)
    if "eval" in what:
        out["eval_reuse"] = bench_visual_reuse(repeats=repeats)
    if "metrics" in what:
        out["metrics"] = bench_metrics()
    return out


def format_bench(res: dict[str, Any]) -> str:
    load = res["load_average"]
    lines = [f"machine: {res['machine']}" + (f" (1-min load {load:.1f})" if load is not None else "")]
    for key in ("tiny", "swin-base-ade"):
        if key in res:
            r = res[key]
            lines.append(
                f"{key:>14} @{r['image_size']}px, {r['clips_x_frames']} clips x frames: "
                f"train {r['train_steps_per_s']:.2f} steps/s ({r['train_images_per_s']:.1f} images/s), "
                f"inference {r['infer_frames_per_s']:.1f} frames/s"
            )
    if "tiny" in res and "swin-base-ade" in res:
        ratio = res["tiny"]["infer_frames_per_s"] / res["swin-base-ade"]["infer_frames_per_s"]
        lines.append(f"{'':>14} tiny infers {ratio:.0f}x more frames/s than swin-base-ade")
    if "eval_reuse" in res:
        r = res["eval_reuse"]
        lines.append(
            f"audio-control eval ({r['conditions']} conditions, {r['clips']} clips, tiny): "
            f"reuse {r['reuse_s']:.3f}s "
            f"vs recompute {r['recompute_s']:.3f}s -> {r['speedup']:.2f}x"
        )
    if "metrics" in res:
        r = res["metrics"]
        lines.append(
            f"metrics ({r['frames']} frames {r['size']}px): vectorised {r['vectorised_s']:.3f}s vs loop "
            f"{r['loop_s']:.2f}s -> {r['speedup']:.0f}x (max |diff| {r['max_abs_diff']:.1e})"
        )
    return "\n".join(lines)
