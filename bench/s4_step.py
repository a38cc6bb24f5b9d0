"""Benchmark: an S4 training step with and without ``annotated_only`` (CPU, random weights).

S4 train annotates frame 0 of each 5-frame clip. The step (forward, backward, AdamW with the
trainer's parameter groups) runs the visual network on every frame (``annotated_only=False``, what
the trainer did before) or on the annotated frames only (``annotated_only=True``); the two are
interleaved in one process so machine load hits both alike, and their ratio is reported.

Usage: python bench/s4_step.py [--variant swin-base-ade] [--size 128] [--clips 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teso.engine.optim import parameter_groups  # noqa: E402
from teso.model import TeSOTargets, build_teso, get_variant  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="swin-base-ade")
    parser.add_argument("--size", type=int, default=128, help="input side S (multiple of 32)")
    parser.add_argument("--clips", type=int, default=1, help="clips a step (5 frames each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each kind")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = get_variant(args.variant, image_size=args.size)
    config.allow_random_frozen = True  # random weights: nothing is downloaded
    model = build_teso(config)
    model.train()
    optimizer = torch.optim.AdamW(
        parameter_groups(model, lr=1e-3, lr_visual_adapters=1e-4, weight_decay=0.05)
    )
    b, t, s = args.clips, 5, args.size
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(b, t, 3, s, s, generator=g)
    audio = torch.randn(b, t, 1, 96, 64, generator=g)
    text = torch.randn(b, t, config.text.num_cues, config.text.dim, generator=g)
    count = torch.full((b, t), 2)
    masks = torch.zeros(b, t, s, s, dtype=torch.long)
    masks[..., s // 4 : s // 2, s // 4 : s // 2] = 1
    annotated = torch.zeros(b, t, dtype=torch.bool)
    annotated[:, 0] = True  # S4 train: the first frame only
    targets = TeSOTargets(masks, annotated)
    images: list[int] = []
    backbone = model.foundation.m2f.model.pixel_level_module.encoder
    backbone.register_forward_pre_hook(lambda _m, a: images.append(a[0].shape[0]))

    def step(only: bool) -> float:
        t0 = time.perf_counter()
        out = model(frames, audio, text, count, targets, annotated_only=only)
        optimizer.zero_grad(set_to_none=True)
        out.losses["loss"].backward()
        optimizer.step()
        return time.perf_counter() - t0

    times: dict[bool, list[float]] = {False: [], True: []}
    step(False), step(True)  # warm-up: allocator and kernel selection are not what we measure
    for _ in range(args.repeats):
        for only in (False, True):
            times[only].append(step(only))
    before, after = statistics.median(times[False]), statistics.median(times[True])
    of_minima = min(times[True]) / min(times[False])
    print(
        f"{args.variant} {s}px, {b} clip(s) x {t} frames, torch threads {torch.get_num_threads()}: "
        f"all frames {before:.2f} s/step (backbone images {images[0]}), annotated only {after:.2f} s/step "
        f"(backbone images {images[1]}); ratio {after / before:.3f} (of minima {of_minima:.3f}); "
        f"steps {[round(x, 2) for x in times[False]]} / {[round(x, 2) for x in times[True]]}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
