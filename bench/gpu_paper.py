"""GPU check of the paper's model (issue 10 §5): `swin-base-ade` at 384 px, random weights, bf16 autocast.

Measured on one CUDA GPU, in one process, at the paper's training shape — 4 clips a step (paper §4.1
gives no batch size; ``teso/configs/ms3.yaml``'s ``train.batch_size``) of T = 5 frames (MS3, SPEC §3)
with N_T = 4 cues per frame (SPEC §3), 1024-d text features (ImageBind), N_Q = 100 queries:

- training: optimiser steps/s (forward with the loss, backward, full-model gradient clip 0.01,
  AdamW) and the peak GPU memory of those steps (``torch.cuda.max_memory_allocated`` / reserved);
- inference: frames/s of the forward pass, and with the masks of every frame at 224 × 224
  (AVSBench's mask size) upsampled frame by frame as ``teso eval`` does;
- the listen test's reuse ratio: 4 audio conditions (normal, mute, wgn10, wgn40, made by
  ``teso.engine.evaluate.perturb``) for each of the 4 clips, through ``TeSOPredictor`` — the visual
  features cached once per clip (``set_clip`` once, then ``predict`` per condition) against
  recomputing them for every condition (``set_clip`` + ``predict`` each time); the ratio is
  recompute time / reuse time, and ``max_abs_diff`` says how far apart the two paths' maps are.

Weights are random (nothing is downloaded): ``model.allow_random_frozen`` builds the frozen
Mask2Former and VGGish without their weights, so speed and memory are the paper model's (frozen
foundation, adapters + new modules trained) while the numbers it predicts mean nothing.

Usage: python bench/gpu_paper.py [--out result.json] [--steps 20] [--warmup 3] [--repeats 5]
Imports: torch, transformers, safetensors, scipy, pillow, pyyaml, tqdm, and ``av`` and ``soundfile``
(teso's audio and video modules; a bare PyTorch image may lack these two). It refuses to run without
CUDA (exit 2). ``--allow-cpu --tiny`` (hidden) runs the `tiny` variant at 64 px, 2 clips of 2 frames,
on the CPU for the test suite's smoke test; its timings mean nothing either.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.audio import per_second_examples  # noqa: E402
from teso.engine.evaluate import perturb  # noqa: E402
from teso.model import TeSOPredictor, TeSOTargets, build_teso, get_variant, preprocess_frames  # noqa: E402
from teso.utils.files import atomic_write_json  # noqa: E402

CLIPS = 4  # clips per training step: teso/configs/ms3.yaml (the paper states none)
FRAMES = 5  # MS3 / S4 clips: 5 seconds at 1 fps
TINY_SHAPE = (2, 2)  # clips, frames of the CPU smoke test: seconds, not minutes
CONDITIONS = ("normal", "mute", "wgn10", "wgn40")
MASK_SIZE = (224, 224)  # AVSBench's ground-truth masks
GRAD_CLIP = 0.01  # Mask2Former's full-model gradient norm, as teso train
SAMPLE_RATE = 16000
NO_CUDA = (
    "bench/gpu_paper.py: needs a CUDA GPU (torch.cuda.is_available() is False); it measures the "
    "paper model's GPU speed and memory and has nothing to say on a CPU"
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Mean seconds of ``repeats`` calls, the device synchronised around them (kernels are async)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def _inputs(cfg, clips: int, frames: int, seed: int) -> dict[str, torch.Tensor]:
    """Random frames, audio, cues and targets of the training shape (on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.visual.image_size
    pixels = torch.randint(0, 256, (clips, frames, s, s, 3), dtype=torch.uint8, generator=g)
    # a 440 Hz tone per second with noise: a clip with power, so wgnN has a level to be N dB under
    n = torch.arange(frames * SAMPLE_RATE) / SAMPLE_RATE
    waves = 0.3 * torch.sin(2 * math.pi * 440 * n) + 0.05 * torch.randn(
        clips, frames * SAMPLE_RATE, generator=g
    )
    logmel = {
        c: torch.stack(
            [per_second_examples(perturb(w, c, seed + i), SAMPLE_RATE, frames) for i, w in enumerate(waves)]
        )
        for c in CONDITIONS
    }
    masks = torch.zeros(clips, frames, s, s, dtype=torch.long)
    for b in range(clips):
        y, x = (b * s) // 8, (b * s) // 6
        masks[b, :, y : y + s // 3, x : x + s // 3] = 1
    nt = cfg.text.num_cues
    return {
        "frames": preprocess_frames(pixels, s),
        "logmel": logmel,  # {condition: [B, T, 1, 96, 64]}
        "text": torch.randn(clips, frames, nt, cfg.text.dim, generator=g),
        # 1..N_T real cues per frame, the rest padding (as a reasoner's answers are)
        "count": (torch.arange(clips * frames) % nt + 1).reshape(clips, frames),
        "masks": masks,
    }


def run(
    *,
    tiny: bool = False,
    device: torch.device,
    steps: int = 20,
    warmup: int = 3,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Every measurement of the module docstring; returns the JSON-ready result. ``tiny``: the
    `tiny` variant at 64 px and 2 clips of 2 frames (the smoke test's shape)."""
    wall = time.perf_counter()
    torch.manual_seed(seed)
    cfg = get_variant("tiny", image_size=64) if tiny else get_variant("swin-base-ade", image_size=384)
    # Random frozen foundation on purpose (module docstring); build_teso refuses it otherwise.
    cfg.allow_random_frozen = True
    model = build_teso(cfg).to(device)
    amp = device.type == "cuda"  # bf16 autocast on CUDA, as teso train; the CPU smoke test runs fp32
    clips, num_frames = TINY_SHAPE if tiny else (CLIPS, FRAMES)
    x = _inputs(cfg, clips, num_frames, seed)
    frames, text, count = x["frames"].to(device), x["text"].to(device), x["count"].to(device)
    logmel = {c: v.to(device) for c, v in x["logmel"].items()}
    targets = TeSOTargets(masks=x["masks"].to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    # One AdamW group: the paper's two learning rates cost the same per step.
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    losses: list[torch.Tensor] = []

    def train_step() -> None:
        with autocast():
            out = model(frames, logmel["normal"], text, count, targets)
        loss = out.losses["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        losses.append(loss.detach())

    model.train()
    _timed(train_step, warmup, device)  # allocator, kernel selection: not what is measured
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_step = _timed(train_step, steps, device)
    peak = (
        {
            "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        }
        if device.type == "cuda"
        else {"peak_allocated_gib": None, "peak_reserved_gib": None}
    )
    loss_values = [float(v) for v in losses]

    model.eval()
    n_frames = clips * num_frames

    @torch.no_grad()
    def forward() -> None:
        with autocast():
            model(frames, logmel["normal"], text, count)

    @torch.no_grad()
    def forward_masks() -> None:
        with autocast():
            out = model(frames, logmel["normal"], text, count)
        for b in range(clips):
            for t in range(num_frames):
                out.frame_probs_at(b, t, MASK_SIZE)

    forward()
    t_fwd = _timed(forward, repeats, device)
    t_masks = _timed(forward_masks, repeats, device)

    # The listen test, clip by clip through the caching predictor.
    predictor = TeSOPredictor(model)
    maps: dict[str, list[torch.Tensor]] = {"reuse": [], "recompute": []}

    def listen(reuse: bool, keep: bool = False) -> None:
        for b in range(clips):
            if reuse:
                predictor.set_clip(frames[b])
            for c in CONDITIONS:
                if not reuse:
                    predictor.set_clip(frames[b])
                probs = predictor.predict(logmel[c][b], text[b], count[b], size=MASK_SIZE)
                if keep:
                    maps["reuse" if reuse else "recompute"].append(probs.float().cpu())

    with autocast():
        listen(True, keep=True)  # warm-up, and the maps to compare
        listen(False, keep=True)
        t_reuse = _timed(lambda: listen(True), repeats, device)
        t_recompute = _timed(lambda: listen(False), repeats, device)
        t_encode = _timed(lambda: predictor.set_clip(frames[0]), repeats, device)
        t_decode = _timed(
            lambda: predictor.predict(logmel["normal"][0], text[0], count[0], size=MASK_SIZE), repeats, device
        )
    diff = max(float((a - b).abs().max()) for a, b in zip(maps["reuse"], maps["recompute"]))

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        machine = f"{props.name} ({props.total_memory / 2**30:.1f} GiB), CUDA {torch.version.cuda}"
    else:
        machine = f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "variant": cfg.name,
        "image_size": cfg.visual.image_size,
        "device": machine,
        "torch": torch.__version__,
        "amp": "bf16" if amp else "off (fp32)",
        "weights": "random (allow_random_frozen)",
        "freeze_foundation": cfg.freeze_foundation,
        "clips": clips,
        "frames": num_frames,
        "num_cues": cfg.text.num_cues,
        "text_dim": cfg.text.dim,
        "num_queries": cfg.visual.num_queries,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "train": {
            "warmup_steps": warmup,
            "steps": steps,
            "steps_per_s": 1 / t_step,
            "frames_per_s": n_frames / t_step,
            "first_loss": loss_values[0],
            "last_loss": loss_values[-1],
            **peak,
        },
        "inference": {
            "repeats": repeats,
            "frames_per_s": n_frames / t_fwd,
            "frames_per_s_with_masks": n_frames / t_masks,
            "mask_size": list(MASK_SIZE),
        },
        "listen": {
            "conditions": list(CONDITIONS),
            "clips": clips,
            "repeats": repeats,
            "reuse_s": t_reuse,
            "recompute_s": t_recompute,
            "reuse_ratio": t_recompute / t_reuse,
            "encode_s_per_clip": t_encode,
            "decode_s_per_condition": t_decode,
            "max_abs_diff": diff,
        },
        "seconds": time.perf_counter() - wall,
    }


def format_table(r: dict[str, Any]) -> str:
    tr, inf, li = r["train"], r["inference"], r["listen"]
    mem = (
        f"{tr['peak_allocated_gib']:.2f} GiB allocated, {tr['peak_reserved_gib']:.2f} GiB reserved"
        if tr["peak_allocated_gib"] is not None
        else "- (not a GPU)"
    )
    rows = [
        (
            f"training, {r['clips']} clips x {r['frames']} frames, N_T {r['num_cues']}",
            f"{tr['steps_per_s']:.3f} steps/s ({tr['frames_per_s']:.1f} frames/s) over {tr['steps']} steps",
        ),
        ("peak GPU memory, training", mem),
        ("inference, forward", f"{inf['frames_per_s']:.1f} frames/s"),
        (
            f"inference, with masks at {inf['mask_size'][0]}x{inf['mask_size'][1]}",
            f"{inf['frames_per_s_with_masks']:.1f} frames/s",
        ),
        (
            f"listen test, {len(li['conditions'])} conditions x {li['clips']} clips",
            f"reuse {li['reuse_s']:.3f} s vs recompute {li['recompute_s']:.3f} s -> {li['reuse_ratio']:.2f}x",
        ),
        (
            "  per clip: visual encode / decode",
            f"{li['encode_s_per_clip']:.4f} s / {li['decode_s_per_condition']:.4f} s "
            f"(reuse and recompute maps differ by {li['max_abs_diff']:.1e})",
        ),
    ]
    head = (
        f"{r['variant']} @ {r['image_size']} px, {r['weights']}, autocast {r['amp']}, "
        f"{r['trainable_params_m']:.1f} M of {r['params_m']:.1f} M parameters trained — {r['device']}, "
        f"torch {r['torch']}, {r['seconds']:.0f} s"
    )
    width = max(len(a) for a, _ in rows)
    lines = [head, f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {a:<{width}} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (default 3)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed inference / listen-test runs (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    # The suite's smoke test only: the tiny variant on the CPU.
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "warmup", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print(NO_CUDA, file=sys.stderr)
        return 2
    result = run(
        tiny=args.tiny,
        device=device,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(format_table(result))
    if args.out is not None:
        atomic_write_json(args.out, result)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
