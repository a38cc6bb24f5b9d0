"""Benchmark: what TeSO costs on top of the plain Mask2Former it is built on (CPU, random weights).

For each variant, in the same process and interleaved (so machine load hits both alike):
- forward time per frame of the plain HF ``Mask2FormerForUniversalSegmentation`` (same weights);
- forward time per frame of TeSO (audio encoder + SeDAM + PMQS + adapters + the same foundation);
- their ratio (the issue's target: TeSO modules under 10 % on top);
- the decode-only time per frame with cached visual features (what each audio-control run costs);
- peak resident memory (VmHWM, reset before each phase through /proc/self/clear_refs).

Usage: python bench/model.py [--variants swin-base-ade tiny] [--frames 2] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import Mask2FormerForUniversalSegmentation  # noqa: E402

from teso.model import build_teso, get_variant, mask2former_config  # noqa: E402
from teso.utils.files import atomic_write_json  # noqa: E402


def _reset_peak() -> None:
    # Not Linux: the peak then covers the whole run so far.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_variant(name: str, frames: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = get_variant(name)
    config.allow_random_frozen = True  # random weights (the paper variant's frozen parts included)
    size = config.visual.image_size
    model = build_teso(config).eval()
    plain = Mask2FormerForUniversalSegmentation(mask2former_config(config.visual, config.num_classes)).eval()
    plain.load_state_dict(model.foundation.m2f.state_dict(), strict=False)
    pixels = torch.randn(1, frames, 3, size, size)
    audio = torch.randn(1, frames, 1, 96, 64)
    text = torch.randn(1, frames, config.text.num_cues, config.text.dim)
    count = torch.full((1, frames), 2)

    def run_plain() -> None:
        plain(pixel_values=pixels[0])

    def run_teso() -> None:
        model(pixels, audio, text, count)

    times: dict[str, list[float]] = {"plain": [], "teso": [], "decode": []}
    peaks: dict[str, float] = {}
    extra: dict[str, float] = {}  # peak above the resident size just before the call: activations
    with torch.no_grad():
        run_plain()  # warm-up (allocator, oneDNN kernels)
        run_teso()
        visual = model.encode_visual(pixels)
        for _ in range(repeats):
            for key, fn in (("plain", run_plain), ("teso", run_teso)):
                _reset_peak()
                before = _status_mib("VmRSS")
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) / frames)
                peaks[key] = max(peaks.get(key, 0.0), _status_mib("VmHWM"))
                extra[key] = max(extra.get(key, 0.0), _status_mib("VmHWM") - before)
            t0 = time.perf_counter()
            model.decode(visual, audio, text, count)
            times["decode"].append((time.perf_counter() - t0) / frames)
    # Medians; the minimum is also kept because a shared machine only ever adds time.
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    n_teso = sum(p.numel() for p in model.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    return {
        "variant": name,
        "image_size": size,
        "frames_per_call": frames,
        "repeats": repeats,
        "plain_s_per_frame": med["plain"],
        "teso_s_per_frame": med["teso"],
        "ratio_teso_over_plain": med["teso"] / med["plain"],
        "decode_only_s_per_frame": med["decode"],
        "min_plain_s_per_frame": best["plain"],
        "min_teso_s_per_frame": best["teso"],
        "ratio_of_minima": best["teso"] / best["plain"],
        "peak_rss_mib_plain": peaks["plain"],
        "peak_rss_mib_teso": peaks["teso"],
        "forward_extra_mib_plain": extra["plain"],
        "forward_extra_mib_teso": extra["teso"],
        "params_plain_m": n_plain / 1e6,
        "params_teso_m": n_teso / 1e6,
        "params_trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["swin-base-ade", "tiny"])
    parser.add_argument("--frames", type=int, default=2, help="frames per forward call (one clip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for name in args.variants:
        r = bench_variant(name, args.frames, args.repeats)
        results.append(r)
        print(
            f"{name:14s} {r['image_size']}px  plain {r['plain_s_per_frame'] * 1e3:8.1f} ms/frame  "
            f"TeSO {r['teso_s_per_frame'] * 1e3:8.1f} ms/frame  ratio {r['ratio_teso_over_plain']:.3f} "
            f"(of minima {r['ratio_of_minima']:.3f})  "
            f"decode-only {r['decode_only_s_per_frame'] * 1e3:7.1f} ms/frame  "
            f"peak RSS plain {r['peak_rss_mib_plain']:.0f} MiB / TeSO {r['peak_rss_mib_teso']:.0f} MiB "
            f"(forward +{r['forward_extra_mib_plain']:.0f} / +{r['forward_extra_mib_teso']:.0f} MiB)  "
            f"params {r['params_plain_m']:.1f} M -> {r['params_teso_m']:.1f} M "
            f"({r['params_trainable_m']:.1f} M trainable)",
            flush=True,
        )
    if args.json is not None:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
